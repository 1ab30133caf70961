r"""The rotating-room task: a procedural stand-in for the paper's DeepMind Lab experiment (§5.7).

An agent stands at the centre of a small RGB room (:mod:`pgtm.room`) and turns
counter-clockwise in place, one full revolution every ``period`` frames; a model observes the
first ``prerecall_length`` frames (at least one revolution) and generates the remaining
``recall_length``, which repeat views already seen, so a model with memory can predict them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pgtm.checks import integer, number, one_of
from pgtm.data import BINARIZE_MODES
from pgtm.room import Room, pillar_hits, random_rooms, render_room, wall_hits
from pgtm.tasks.base import SPLITS, SequenceBatch, Task

#: bins of the palette hue in [0, 1/4) turn (the split rule): train rooms use the even bins,
#: test rooms the odd ones
PALETTE_BINS = 8


class RotatingRoomTask(Task):
    r"""Rotation in place in a random room, ``T = l + k`` RGB frames ``(3, S, S)``.

    Each sequence gets its own room (:func:`~pgtm.room.random_rooms`: aspect, wall colours,
    poster and pillar positions and colours), a uniform start heading :math:`\theta_0` and an
    angular speed :math:`\omega = (2\pi / P)(1 + \epsilon)` with :math:`\epsilon` uniform in
    ``[-speed_jitter, speed_jitter]``.  Frame ``t`` is the view at heading
    :math:`\theta_0 + 2\pi \, \mathrm{fmod}(t (1 + \epsilon), P) / P` (the same angle as
    :math:`\theta_0 + \omega t`, reduced so that with ``speed_jitter = 0`` frames ``t`` and
    ``t + P`` are bit-identical).  The agent turns left, so the scene slides to the right and the
    walls pass the centre of view in the order east, north, west, south.

    Protocol: observe the first ``l = prerecall_length`` frames (``l >= P``: a whole
    revolution), generate the last ``k = recall_length``; ``recall`` marks those.  A recall
    step ``t`` shows (exactly for ``speed_jitter = 0``) the view of step ``t mod P``, given in
    ``addresses``.  ``labels[b, t]`` is what lies straight ahead: a wall ``0..3`` (east, north,
    west, south) or a pillar ``4 + j``.

    Split rule (*disjoint rooms*): the four wall hues of a room are ``h + j / 4`` with the
    palette hue ``h`` in ``[0, 1/4)`` turn cut into :data:`PALETTE_BINS` bins of ``1/32``
    turn; train rooms draw ``h`` from the even bins, test rooms from the odd ones, so
    no test room has the wall colours of a training room, while test hues stay within 11° of
    trained ones.  All other room parameters follow the same law in both splits.  The
    :class:`torch.Generator` given to :meth:`sample` is the only randomness.

    How it differs from the paper's DeepMind Lab frames: those are 64x64 renders of textured
    3D mazes (lit, with perspective floors, varied wall textures and distant structure) seen by
    an agent rotating for two revolutions; here the room is a flat-shaded ray-cast box (one ray
    per column, no textures, no lighting beyond distance fog and darker north/south walls, no
    vertical look), 32x32 by default, whose only content is four wall colours, one poster per
    wall and two pillars, and the agent stands exactly at the centre.  The frames are quantised
    to 8-bit levels (multiples of 1/255).  ``binarize`` does not apply (``self.binarize`` is
    ``"none"``, so the default likelihood is for grey levels); ``data_dir``/``download`` are
    ignored: nothing is downloaded.

    :param prerecall_length: observed frames ``l`` (default 15).
    :param recall_length: generated frames ``k >= 1`` (default 15).
    :param period: frames per revolution ``P``, in ``[4, l]`` (default 15).
    :param image_size: frame side ``S`` in ``[8, 128]`` (default 32; 64 as the paper).
    :param speed_jitter: relative angular-speed jitter in ``[0, 0.5]`` (default 0).
    """

    name = "rotating-room"
    context_size = 0
    options = {
        "prerecall_length": 15, "recall_length": 15, "period": 15, "image_size": 32,
        "speed_jitter": 0.0,
    }

    def __init__(
        self,
        *,
        prerecall_length: int = 15,
        recall_length: int = 15,
        period: int = 15,
        image_size: int = 32,
        speed_jitter: float = 0.0,
        data_dir=None,
        download: bool = False,
        binarize: str = "dynamic",
    ) -> None:
        one_of("binarize", binarize, BINARIZE_MODES)
        self.binarize = "none"
        self.prerecall_length = integer("prerecall_length", prerecall_length, 4)
        self.recall_length = integer("recall_length", recall_length, 1)
        self.period = integer("period", period, 4, self.prerecall_length,
                              high_name="prerecall_length")
        self.image_size = integer("image_size", image_size, 8, 128)
        self.speed_jitter = number("speed_jitter", speed_jitter, 0.0, 0.5)
        self.length = self.prerecall_length + self.recall_length
        self.frame_shape = (3, self.image_size, self.image_size)

    def _sample(self, batch_size, split, generator):
        return self.sample_with_views(batch_size, split, generator)[0]

    def sample_with_views(
        self, batch_size: int, split: str = "train", generator: torch.Generator | None = None
    ) -> tuple[Any, Room, torch.Tensor]:
        """Like :meth:`sample` (same randomness, same batch) but also return the rooms and
        the headings ``float64 [B, T]`` (radians) of every frame."""
        Task._check_sample_args(batch_size, split, generator)
        b, T, P = batch_size, self.length, self.period
        parity = SPLITS.index(split)
        bin_index = 2 * torch.randint(PALETTE_BINS // 2, (b,), generator=generator) + parity
        within = torch.rand(b, generator=generator, dtype=torch.float64)
        rooms = random_rooms(b, (bin_index + within) / (4 * PALETTE_BINS), generator)
        start = 2 * math.pi * torch.rand(b, 1, generator=generator, dtype=torch.float64)
        jitter = 2 * torch.rand(b, 1, generator=generator, dtype=torch.float64) - 1
        turns = torch.arange(T, dtype=torch.float64) * (1 + self.speed_jitter * jitter)
        headings = start + 2 * math.pi * torch.fmod(turns, P) / P
        x = render_room(rooms, headings, self.image_size)

        recall = torch.zeros(b, T, dtype=torch.bool)
        recall[:, self.prerecall_length :] = True
        steps = torch.arange(T).expand(b, T)
        addresses = torch.where(recall, steps % P, -1)
        mask = torch.ones(b, T, dtype=torch.bool)
        batch = SequenceBatch(x, None, mask, recall, self.ahead(rooms, headings), addresses)
        return batch, rooms, headings

    @staticmethod
    def ahead(rooms: Room, headings: torch.Tensor) -> torch.Tensor:
        """What lies straight ahead at ``headings [B, T]``: long ``[B, T]``, a wall ``0..3`` or
        a pillar ``4 + j``."""
        walls = wall_hits(rooms.half_size, headings)
        pillar, distance, _ = pillar_hits(rooms, headings)
        return torch.where(distance < walls.distance, 4 + pillar, walls.wall)
