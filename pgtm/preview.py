"""PNG previews of task batches: one row per sequence, recall frames marked in red.

Every frame becomes a tile with a 2-pixel border: grey for ordinary steps, red for recall steps
(``batch.recall``), and the tile is blank where ``batch.mask`` is False.  Vector frames
(``[1, 1, W]``, e.g. the copy task and sequential-MNIST rows) are upscaled with nearest-neighbour
interpolation and drawn as *columns* (bit ``i`` at row ``i``, time running left to right, so the
copy task looks like the NTM figures and a sequential-MNIST digit appears transposed), with a
1-pixel border and no gap between steps.  Tasks with actions (navigation) get a small blue square
in the top-left corner of every tile reached by a move (none after ``stay``); revisits are recall
steps, so red.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from .checks import integer
from .tasks import SequenceBatch, Task

__all__ = ["batch_to_grid", "frame_grid", "rgb_frames", "write_preview"]

_BORDER = 2
_GREY = torch.tensor([0.55, 0.55, 0.55])
_RED = torch.tensor([0.95, 0.1, 0.1])
_BLUE = torch.tensor([0.2, 0.4, 1.0])


def rgb_frames(frames: torch.Tensor) -> torch.Tensor:
    """``frames [N, C, H, W]`` as RGB ``[N, 3, H, W]``: colour frames as they are (the same
    tensor), any other frame as the grey image of its first channel (a new tensor, which the
    caller may paint on)."""
    if frames.shape[1] == 3:
        return frames
    return frames[:, :1].repeat(1, 3, 1, 1)


def frame_grid(tiles: torch.Tensor, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """RGB tiles ``[B, T, 3, h, w]`` laid out as one image ``[3, H, W]``: one row per sequence,
    one column per time step, ``padding`` pixels of ``pad_value`` around every tile.

    Without padding the sequences still get a 4-pixel line of ``pad_value`` between them, so that
    rows of vector frames (which touch within a sequence) stay apart.
    """
    bsz, T = tiles.shape[:2]
    rows = make_grid(tiles.flatten(0, 1), nrow=T, padding=padding, pad_value=pad_value)
    if padding == 0 and bsz > 1:
        h = tiles.shape[-2]
        parts = [rows[:, i * h : (i + 1) * h] for i in range(bsz)]
        gap = torch.full((3, 4, rows.shape[-1]), pad_value)
        rows = torch.cat([p for part in parts for p in (part, gap)][:-1], 1)
    return rows


def _tiles(batch: SequenceBatch) -> torch.Tensor:
    """Frames as RGB tiles ``[B, T, 3, h, w]`` with coloured borders."""
    x = batch.x.detach().float().cpu()
    if x.dim() != 5:
        raise ValueError(f"batch.x must have shape [B, T, C, H, W]; got {tuple(x.shape)}")
    bsz, T, C, H, W = x.shape
    rgb = rgb_frames(x.reshape(bsz * T, C, H, W))
    border, grey = _BORDER, _GREY
    if H == 1:  # vector frames: draw each as an upscaled *column* (time runs left to right)
        scale = max(3, 112 // max(W, 1))
        rgb = F.interpolate(rgb.transpose(-1, -2), scale_factor=scale, mode="nearest")
        border, grey = 1, _GREY * 0.4
    h, w = rgb.shape[-2:]
    tiles = torch.empty(bsz * T, 3, h + 2 * border, w + 2 * border)
    recall = batch.recall.detach().cpu().reshape(-1)
    colour = torch.where(recall[:, None], _RED, grey)  # [B*T, 3]
    tiles[:] = colour[:, :, None, None]
    tiles[:, :, border : border + h, border : border + w] = rgb
    mask = batch.mask.detach().cpu().reshape(-1)
    tiles[~mask] = 1.0
    if batch.c is not None:
        moved = batch.c.detach().cpu().reshape(bsz * T, -1).argmax(-1) > 0
        tiles[moved, :, :5, :5] = _BLUE[:, None, None]
    return tiles.clamp_(0.0, 1.0).view(bsz, T, 3, *tiles.shape[-2:])


def batch_to_grid(batch: SequenceBatch, padding: int | None = None) -> torch.Tensor:
    """RGB image ``[3, H, W]`` of a batch: one row per sequence, one column per time step.

    :param padding: white gap between tiles (default 2 for image frames, 0 for vector frames).
    """
    if padding is None:
        padding = 0 if batch.x.shape[-2] == 1 else 2
    return frame_grid(_tiles(batch), padding, pad_value=1.0)


def write_preview(
    task: Task,
    out_path: str | os.PathLike,
    n_sequences: int = 4,
    generator: torch.Generator | None = None,
    split: str = "train",
) -> Path:
    """Sample ``n_sequences`` sequences from ``task`` and write them as a PNG grid.

    :param task: a :class:`pgtm.tasks.Task`.
    :param out_path: PNG file to write (parent folders are created).
    :param n_sequences: number of rows (sequences), ``>= 1``.
    :param generator: random source (default: a generator seeded with 0).
    :param split: ``"train"`` or ``"test"``.
    :returns: the path written.
    """
    integer("n_sequences", n_sequences, 1)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_path must end in .png; got {str(out)!r}")
    batch = task.sample(n_sequences, split, generator)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(batch_to_grid(batch), out)
    return out
