r"""A procedural RGB room seen from its centre, ray-cast one image column at a time.

The room is a box ``[-a, a] x [-b, b]`` (walls :data:`WALL_HEIGHT` high) with four walls of
distinct colours, one coloured poster on each wall and :data:`NUM_PILLARS` coloured pillars
(floor-to-ceiling cylinders) standing in it.  The camera sits at the centre at
:data:`EYE_HEIGHT` and looks horizontally along a heading (radians, counter-clockwise from the
:math:`+x` axis) with a :data:`FIELD_OF_VIEW` wide pinhole; the image is square, so the vertical
field of view is the same.

Per image column a ray leaves the centre; its first hit (a wall or a pillar) at perpendicular
distance :math:`d` fills the rows whose world height :math:`h = EYE + y \, d \tan(fov/2)` lies
in ``[0, WALL_HEIGHT]`` (so the visible height of a surface is :math:`\propto 1/d`); rows
above show the ceiling, rows below the floor.  Surfaces darken with distance (exponential fog)
and north/south walls are drawn 15% darker than east/west ones, so corners stay visible.
Everything is vectorised over ``[B, T]`` views (no Python loop over pixels or sequences); the
geometry is computed in float64 so that equal headings give bit-identical frames.

Wall indices: 0 = east (:math:`x = +a`), 1 = north (:math:`y = +b`), 2 = west, 3 = south: the
order in which a ray sweeping counter-clockwise meets them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

WALL_HEIGHT = 1.0
EYE_HEIGHT = 0.5
FIELD_OF_VIEW = math.pi / 2
NUM_PILLARS = 2
#: attenuation per unit of distance: colour * (FOG_FLOOR + (1 - FOG_FLOOR) * exp(-FOG * d))
FOG = 0.35
FOG_FLOOR = 0.35
#: north/south walls are this much darker than east/west ones
SIDE_SHADE = 0.85


class Room(NamedTuple):
    """A batch of rooms (RGB colours in ``[0, 1]``; lengths in room units).

    :ivar half_size: ``[B, 2]`` half-widths ``(a, b)`` along :math:`x` and :math:`y`.
    :ivar wall_colours: ``[B, 4, 3]``, walls in index order east, north, west, south.
    :ivar floor_colour: ``[B, 3]``.
    :ivar ceiling_colour: ``[B, 3]``.
    :ivar poster_span: ``[B, 4, 2]`` (start, end) of each wall's poster along the wall, as
        fractions of its length measured counter-clockwise.
    :ivar poster_heights: ``[B, 4, 2]`` (bottom, top) of each poster above the floor.
    :ivar poster_colours: ``[B, 4, 3]``.
    :ivar pillar_centres: ``[B, K, 2]``.
    :ivar pillar_radii: ``[B, K]`` (0 removes a pillar).
    :ivar pillar_colours: ``[B, K, 3]``.
    :ivar palette_hue: ``[B]``, hue (in turns) of the colour wheel offset of the walls: wall
        hues are ``palette_hue + j / 4`` in a random order.
    """

    half_size: torch.Tensor
    wall_colours: torch.Tensor
    floor_colour: torch.Tensor
    ceiling_colour: torch.Tensor
    poster_span: torch.Tensor
    poster_heights: torch.Tensor
    poster_colours: torch.Tensor
    pillar_centres: torch.Tensor
    pillar_radii: torch.Tensor
    pillar_colours: torch.Tensor
    palette_hue: torch.Tensor


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV (hue in turns, any real; saturation and value in ``[0, 1]``) ``[*shape]`` each ->
    RGB ``[*shape, 3]``."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype, device=hue.device)
    k = (n + 6.0 * hue.unsqueeze(-1)) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(-1) * (1.0 - saturation.unsqueeze(-1) * ramp)


def _uniform(shape, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def random_rooms(batch_size: int, palette_hue: torch.Tensor, generator=None) -> Room:
    """Draw ``batch_size`` rooms; ``generator`` is the only source of randomness.

    :param palette_hue: ``[B]`` float64 wall-palette offsets (in turns; the caller chooses
        them, e.g. to keep train and test palettes apart).
    :returns: a :class:`Room` of float64 tensors.
    """
    b = batch_size
    half_size = _uniform((b, 2), 0.7, 1.3, generator)
    # four evenly spaced hues in a random order: the walls never share a colour
    order = torch.rand(b, 4, generator=generator).argsort(1).double()
    wall_colours = hsv_to_rgb(
        palette_hue[:, None] + order / 4,
        _uniform((b, 4), 0.55, 0.9, generator),
        _uniform((b, 4), 0.65, 0.95, generator),
    )
    floor_colour = hsv_to_rgb(
        _uniform(b, 0.0, 1.0, generator), _uniform(b, 0.1, 0.3, generator),
        _uniform(b, 0.25, 0.45, generator),
    )
    ceiling_colour = hsv_to_rgb(
        _uniform(b, 0.0, 1.0, generator), _uniform(b, 0.0, 0.15, generator),
        _uniform(b, 0.7, 0.9, generator),
    )
    width = _uniform((b, 4), 0.15, 0.35, generator)
    start = 0.05 + _uniform((b, 4), 0.0, 1.0, generator) * (0.9 - width)
    bottom = _uniform((b, 4), 0.3, 0.5, generator)
    top = bottom + _uniform((b, 4), 0.2, 0.4, generator)
    poster_colours = hsv_to_rgb(
        _uniform((b, 4), 0.0, 1.0, generator), _uniform((b, 4), 0.6, 1.0, generator),
        _uniform((b, 4), 0.8, 1.0, generator),
    )
    radii = _uniform((b, NUM_PILLARS), 0.06, 0.12, generator)
    angle = _uniform((b, NUM_PILLARS), 0.0, 2 * math.pi, generator)
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    # a pillar stands at least 0.4 from the camera and clear of the walls
    room_reach = _wall_distance(half_size[:, None, :], direction)
    reach = 0.4 + _uniform((b, NUM_PILLARS), 0.0, 1.0, generator) * (room_reach - radii - 0.45)
    pillar_colours = hsv_to_rgb(
        _uniform((b, NUM_PILLARS), 0.0, 1.0, generator),
        _uniform((b, NUM_PILLARS), 0.3, 0.7, generator),
        _uniform((b, NUM_PILLARS), 0.5, 0.9, generator),
    )
    return Room(
        half_size, wall_colours, floor_colour, ceiling_colour,
        torch.stack([start, start + width], -1), torch.stack([bottom, top], -1), poster_colours,
        direction * reach.unsqueeze(-1), radii, pillar_colours, palette_hue,
    )


def _wall_distance(half_size: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Distance from the centre to the wall along unit ``direction [..., 2]``."""
    # a zero component divides to inf, which min() then ignores
    return torch.minimum(half_size[..., 0] / direction[..., 0].abs(),
                         half_size[..., 1] / direction[..., 1].abs())


class WallHits(NamedTuple):
    """Where rays from the centre meet the walls (all ``[*rays]``).

    :ivar wall: long, wall index (0 east, 1 north, 2 west, 3 south).
    :ivar distance: float64, distance along the ray.
    :ivar along: float64 in ``[0, 1]``, position along the wall, counter-clockwise.
    """

    wall: torch.Tensor
    distance: torch.Tensor
    along: torch.Tensor


def wall_hits(half_size: torch.Tensor, angles: torch.Tensor) -> WallHits:
    """Cast rays at ``angles [B, *rays]`` (radians) in rooms of ``half_size [B, 2]``."""
    extra = (1,) * (angles.dim() - 1)
    a, b = half_size[:, 0].view(-1, *extra), half_size[:, 1].view(-1, *extra)
    cos, sin = angles.cos(), angles.sin()
    to_x, to_y = a / cos.abs(), b / sin.abs()
    east_west = to_x <= to_y
    wall = torch.where(east_west, torch.where(cos > 0, 0, 2), torch.where(sin > 0, 1, 3))
    distance = torch.minimum(to_x, to_y)
    x, y = distance * cos, distance * sin
    along_by_wall = torch.stack(
        [(y + b) / (2 * b), (a - x) / (2 * a), (b - y) / (2 * b), (x + a) / (2 * a)], -1
    )
    along = along_by_wall.gather(-1, wall.unsqueeze(-1)).squeeze(-1).clamp(0.0, 1.0)
    return WallHits(wall, distance, along)


def pillar_hits(room: Room, angles: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Nearest pillar along rays at ``angles [B, *rays]``.

    :returns: ``(index long, distance float64 (inf where no pillar is hit), facing float64 in
        [0, 1] (cosine between the ray and the pillar's surface normal))``, each ``[B, *rays]``.
    """
    extra = (1,) * (angles.dim() - 1)
    centres = room.pillar_centres.view(room.pillar_centres.shape[0], *extra, -1, 2)
    radii = room.pillar_radii.view(room.pillar_radii.shape[0], *extra, -1)
    direction = torch.stack([angles.cos(), angles.sin()], -1).unsqueeze(-2)  # [B, *rays, 1, 2]
    ahead = (direction * centres).sum(-1)  # [B, *rays, K]
    off_ray_sq = (centres * centres).sum(-1) - ahead * ahead
    chord_sq = radii * radii - off_ray_sq
    hit = (chord_sq > 0) & (ahead > 0)
    distance = torch.where(hit, ahead - chord_sq.clamp(min=0).sqrt(), math.inf)
    nearest, index = distance.min(-1)
    # the normal's component against the ray is sqrt(chord^2) / r
    chord = chord_sq.gather(-1, index.unsqueeze(-1)).squeeze(-1).clamp(min=0).sqrt()
    radius = radii.expand_as(chord_sq).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    facing = torch.where(radius > 0, chord / radius.clamp(min=1e-12), 0.0)
    return index, nearest, facing


def _fog(distance: torch.Tensor) -> torch.Tensor:
    return FOG_FLOOR + (1.0 - FOG_FLOOR) * torch.exp(-FOG * distance)


def _per_ray(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values [B, N, C]`` of the wall or pillar each ray hits, ``index [B, *rays]`` ->
    ``[B, *rays, C]``."""
    channels = values.shape[-1]
    flat = index.reshape(index.shape[0], -1, 1).expand(-1, -1, channels)
    return values.gather(1, flat).reshape(*index.shape, channels)


def render_room(room: Room, headings: torch.Tensor, image_size: int = 32) -> torch.Tensor:
    """Render the views of each room at ``headings [B, T]`` (radians).

    :returns: float32 frames ``[B, T, 3, image_size, image_size]`` in ``[0, 1]``, quantised to
        the 256 levels of 8-bit images (multiples of 1/255).
    """
    focal = math.tan(FIELD_OF_VIEW / 2)
    centres = (torch.arange(image_size, dtype=torch.float64) + 0.5) / image_size * 2 - 1
    column_offset = -torch.atan(centres * focal)  # left columns look counter-clockwise
    angles = headings.double().unsqueeze(-1) + column_offset  # [B, T, W]

    walls = wall_hits(room.half_size, angles)
    pillar, pillar_distance, facing = pillar_hits(room, angles)
    on_pillar = pillar_distance < walls.distance
    distance = torch.where(on_pillar, pillar_distance, walls.distance)
    depth = distance * column_offset.cos()  # perpendicular distance: no fish-eye bending

    wall_shade = torch.where(walls.wall % 2 == 1, SIDE_SHADE, 1.0)
    pillar_shade = 0.6 + 0.4 * facing
    shade = _fog(distance) * torch.where(on_pillar, pillar_shade, wall_shade)  # [B, T, W]
    wall_colour = _per_ray(room.wall_colours, walls.wall)
    surface = torch.where(
        on_pillar.unsqueeze(-1), _per_ray(room.pillar_colours, pillar), wall_colour
    )

    rows = centres.flip(0)  # +1 at the top row ... -1 at the bottom
    height = EYE_HEIGHT + rows[:, None] * focal * depth.unsqueeze(-2)  # [B, T, H, W]
    span = _per_ray(room.poster_span, walls.wall).unsqueeze(-3)  # [B, T, 1, W, 2]
    heights = _per_ray(room.poster_heights, walls.wall).unsqueeze(-3)
    along = walls.along.unsqueeze(-2)
    poster = (
        ~on_pillar.unsqueeze(-2)
        & (along >= span[..., 0]) & (along <= span[..., 1])
        & (height >= heights[..., 0]) & (height <= heights[..., 1])
    )
    poster_colour = _per_ray(room.poster_colours, walls.wall)  # [B, T, W, 3]
    image = torch.where(poster.unsqueeze(-1), poster_colour.unsqueeze(-3),
                        surface.unsqueeze(-3)) * shade[..., None, :, None]

    # floor and ceiling: the distance at which a row meets them gives their fog
    plane_distance = (EYE_HEIGHT / (rows.abs() * focal)).view(-1, 1)  # [H, 1]
    plane_shade = _fog(plane_distance / column_offset.cos())[..., None]  # [H, W, 1]
    b = room.floor_colour.shape[0]
    floor = room.floor_colour.view(b, 1, 1, 1, 3) * plane_shade
    ceiling = room.ceiling_colour.view(b, 1, 1, 1, 3) * plane_shade
    image = torch.where((height < 0).unsqueeze(-1), floor, image)
    image = torch.where((height > WALL_HEIGHT).unsqueeze(-1), ceiling, image)
    frames = image.permute(0, 1, 4, 2, 3)  # [B, T, 3, H, W]
    return (frames.clamp(0.0, 1.0) * 255).round().div(255).float().contiguous()

