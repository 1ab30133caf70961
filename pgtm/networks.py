"""Encoders, decoders and controllers of the GTMs.

All modules accept any number of leading batch dimensions (``[*batch, ...]``), so the same
network serves a batch ``[B, 1]``, a particle-vectorised batch ``[K, B, 1]`` and a whole
sequence ``[B, T]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from pgtm.shapes import apply_flat, broadcast_leading, cat_features
from pgtm.unrolled_linear import unrolled_linear

IMAGE_SHAPE = (1, 28, 28)


def check_frame_shape(frame_shape) -> tuple[int, ...]:
    frame_shape = tuple(int(s) for s in frame_shape)
    if len(frame_shape) == 0 or any(s < 1 for s in frame_shape):
        raise ValueError(
            f"frame_shape must be a non-empty tuple of positive sizes, got {frame_shape}"
        )
    return frame_shape


def conv_downsamplings(frame_shape) -> int:
    """How many stride-2 stages bring an image ``(C, H, W)`` down to at most 8 pixels a side (at
    least 2: 28 -> 7, 32 -> 8, 64 -> 8 in 3).

    :raises ValueError: for frames that are not images whose sides halve that many times.
    """
    frame_shape = check_frame_shape(frame_shape)
    if len(frame_shape) != 3 or min(frame_shape[1:]) < 4:
        raise ValueError(f"convolutional networks need image frames (C, H, W) with H, W >= 4; "
                         f"got {frame_shape}")
    stages = max(2, math.ceil(math.log2(max(frame_shape[1:]) / 8)))
    if any(side % 2**stages for side in frame_shape[1:]):
        raise ValueError(f"convolutional networks need H and W divisible by {2**stages} for "
                         f"frames {frame_shape}")
    return stages


class ConvEncoder(nn.Module):
    """Convolutional encoder ``[*batch, C, H, W] -> [*batch, feature_size]``.

    Stride-2 convolutions (4x4 kernels) halve the frame :func:`conv_downsamplings` times
    (``1x28x28``: 28 -> 14 -> 7; ``3x32x32``: 32 -> 16 -> 8; ``3x64x64``: three stages to 8),
    then a linear layer.
    """

    def __init__(self, feature_size: int = 256, channels: int = 32, frame_shape=IMAGE_SHAPE):
        super().__init__()
        self.frame_shape = check_frame_shape(frame_shape)
        self.feature_size = feature_size
        stages = conv_downsamplings(self.frame_shape)
        layers = [nn.Conv2d(self.frame_shape[0], channels, 4, stride=2, padding=1), nn.ReLU()]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        height, width = (side // 2**stages for side in self.frame_shape[1:])
        layers += [nn.Flatten(), nn.Linear(channels * height * width, feature_size), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dims=3)


class ImageDecoder(nn.Module):
    """What the image decoders share: a linear layer with ReLU from ``[*batch, input_size]`` to
    a ``channels x H/2^n x W/2^n`` map (``n`` = :func:`conv_downsamplings` of the
    ``output_shape``, the likelihood's ``raw_shape``), then :attr:`upsample` (a subclass's
    layers) to ``[*batch, *output_shape]`` raw outputs."""

    def __init__(self, input_size: int, channels: int, output_shape) -> None:
        super().__init__()
        self.frame_shape = check_frame_shape(output_shape)
        self.channels = channels
        self.stages = conv_downsamplings(self.frame_shape)
        self.map_size = tuple(side // 2**self.stages for side in self.frame_shape[1:])
        self.linear = nn.Sequential(
            nn.Linear(input_size, channels * math.prod(self.map_size)), nn.ReLU()
        )

    @property
    def upsample(self) -> nn.Module:
        """The layers from the map to the raw outputs."""
        raise NotImplementedError

    def _net(self, h: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.linear(h).view(-1, self.channels, *self.map_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return apply_flat(self._net, h, event_dims=1)


class ConvDecoder(ImageDecoder):
    """Convolutional decoder ``[*batch, input_size] -> [*batch, *output_shape]`` (raw outputs).

    A linear layer to a ``channels x H/2^n x W/2^n`` map, then ``n`` stride-2 transposed
    convolutions (``n`` = :func:`conv_downsamplings`).  ``output_shape`` is the likelihood's
    ``raw_shape`` (e.g. ``(6, 32, 32)`` for a discretised logistic on RGB frames); the raw
    output is turned into a distribution by a :class:`~pgtm.models.likelihoods.Likelihood`.
    """

    def __init__(self, input_size: int, channels: int = 32, output_shape=IMAGE_SHAPE):
        super().__init__(input_size, channels, output_shape)
        layers = []
        for _ in range(self.stages - 1):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(channels, self.frame_shape[0], 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    @property
    def upsample(self) -> nn.Module:
        return self.deconv  # the attribute's name is in checkpoints written before the base


class MLPEncoder(nn.Module):
    """MLP encoder for frames of any shape: ``[*batch, *frame_shape] -> [*batch, feature_size]``."""

    def __init__(self, frame_shape, feature_size: int = 256, hidden_size: int = 256):
        super().__init__()
        self.frame_shape = check_frame_shape(frame_shape)
        self.feature_size = feature_size
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.frame_shape), hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, feature_size),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dims=len(self.frame_shape))


class MLPDecoder(nn.Module):
    """MLP decoder ``[*batch, input_size] -> [*batch, *frame_shape]`` (raw outputs)."""

    def __init__(self, input_size: int, frame_shape, hidden_size: int = 256):
        super().__init__()
        self.frame_shape = check_frame_shape(frame_shape)
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, math.prod(self.frame_shape)),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).reshape(h.shape[:-1] + self.frame_shape)


class LSTMState(NamedTuple):
    """State of :class:`LSTMController`: hidden and cell vectors ``[*batch, hidden_size]``."""

    hidden: torch.Tensor
    cell: torch.Tensor


class LSTMController(nn.Module):
    r"""The deterministic recurrent path of a GTM.

    .. math:: h_t = \mathrm{LSTM}(h_{t-1}, [z_{t-1}, \Psi_{t-1}, c_t])

    where :math:`\Psi_{t-1}` is the previous memory read and :math:`c_t` an optional context
    (e.g. actions).

    :param input_size: ``latent_size + read_size + context_size``.
    :param hidden_size: size of :math:`h_t` (the paper uses 256).
    :param orthogonal_init: initialise the recurrent matrix orthogonally (per gate).
    """

    def __init__(self, input_size: int, hidden_size: int = 256, orthogonal_init: bool = False):
        super().__init__()
        self.input_size = input_size
        self.output_size = hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)
        if orthogonal_init:
            with torch.no_grad():
                for gate in self.cell.weight_hh.chunk(4, dim=0):
                    nn.init.orthogonal_(gate)

    def initial_state(self, batch_shape, device=None, dtype=None) -> LSTMState:
        zeros = torch.zeros(*batch_shape, self.output_size, device=device, dtype=dtype)
        return LSTMState(zeros, zeros)

    def forward(self, state: LSTMState, z_prev, read_prev, context=None):
        """One step.

        :param state: :class:`LSTMState` with leading shape ``[*batch]``.
        :param z_prev: ``[*batch, latent_size]``.
        :param read_prev: ``[*batch, read_size]`` (may have size 0).
        :param context: ``[*batch, context_size]`` or ``None``.
        :returns: ``(h_t [*batch, hidden_size], new_state)``.
        """
        parts = [z_prev, read_prev] if context is None else [z_prev, read_prev, context]
        inputs = cat_features(*parts)
        hidden, cell, inputs = broadcast_leading(state.hidden, state.cell, inputs)
        # torch.nn.LSTMCell's arithmetic, with the weight gradients batched over the steps
        gates = (unrolled_linear(inputs, self.cell.weight_ih, self.cell.bias_ih)
                 + unrolled_linear(hidden, self.cell.weight_hh, self.cell.bias_hh))
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
        c = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
        h = torch.sigmoid(out_gate) * torch.tanh(c)
        return h, LSTMState(h, c)


class LatentController(nn.Module):
    """A parameter-free controller whose output is the previous latent: ``h_t = z_{t-1}``.

    With no memory this turns the generic GTM into a first-order state-space model (used to
    check the estimators against a Kalman filter).
    """

    def __init__(self, latent_size: int):
        super().__init__()
        self.output_size = latent_size

    def initial_state(self, batch_shape, device=None, dtype=None):
        return ()

    def forward(self, state, z_prev, read_prev, context=None):
        return z_prev, state
