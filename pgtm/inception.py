"""Inception-like convolutional encoder and decoder with batch norm (``--network inception``).

The paper's networks for the 3D-environment frames (Gemici et al., 2017, appendix B.2,
Fig. 18) use inception-like blocks with batch normalisation.  The figure's exact branch widths,
kernel sizes and depth could not be checked here, so the block is the standard one of GoogLeNet
(Szegedy et al., 2015) with the 5x5 branch factorised into two 3x3 convolutions as in
Inception-v2 (Ioffe & Szegedy, 2015), which also introduced batch norm into it:

- four parallel branches, each ``out_channels / 4`` wide: a 1x1 convolution; a 1x1 reduction
  then a 3x3 convolution; a 1x1 reduction then two 3x3 convolutions (a 5x5 receptive field);
  a 3x3 max-pool then a 1x1 convolution;
- their concatenation goes through batch norm and a ReLU;
- a block with ``stride=2`` downsamples in every branch (the last convolution of each
  branch, and the pool, have stride 2); the decoder upsamples (nearest, x2) before a block.

Batch norm uses batch statistics in train mode and the running statistics (buffers of the
module, so saved in its ``state_dict`` and in checkpoints) in eval mode; the GTM is put in eval
mode for every evaluation.  All modules accept any number of leading batch dimensions, which
batch norm treats as one batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pgtm.networks import IMAGE_SHAPE, ImageDecoder, check_frame_shape, conv_downsamplings
from pgtm.shapes import apply_flat

#: width of the inception blocks, as a multiple of ``channels``
BLOCK_WIDTH = 2


class InceptionBlock(nn.Module):
    """``[N, in_channels, H, W] -> [N, out_channels, H / stride, W / stride]`` (H, W even for
    ``stride=2``).

    :param out_channels: a multiple of 4 (one quarter per branch).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"out_channels must be a multiple of 4; got {out_channels}")
        width = out_channels // 4

        def reduce() -> list[nn.Module]:
            return [nn.Conv2d(in_channels, width, 1), nn.ReLU()]

        # convolutions feeding the batch norm need no bias: its shift replaces it
        self.branches = nn.ModuleList([
            nn.Conv2d(in_channels, width, 1, stride=stride, bias=False),
            nn.Sequential(*reduce(), nn.Conv2d(width, width, 3, stride, 1, bias=False)),
            nn.Sequential(
                *reduce(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
            ),
            nn.Sequential(
                nn.MaxPool2d(3, stride, 1), nn.Conv2d(in_channels, width, 1, bias=False)
            ),
        ])
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(torch.cat([branch(x) for branch in self.branches], 1)))


def _conv_norm(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class InceptionEncoder(nn.Module):
    """``[*batch, C, H, W] -> [*batch, feature_size]``.

    A 3x3 stem (``channels``), :func:`~pgtm.networks.conv_downsamplings` stride-2 inception
    blocks (``BLOCK_WIDTH * channels`` wide: 32 -> 16 -> 8 for 32x32 frames), a 1x1
    convolution back to ``channels`` (a bottleneck, so the final linear layer is no larger than
    the conv encoder's), and a linear layer with ReLU.
    """

    def __init__(self, feature_size: int = 256, channels: int = 32, frame_shape=IMAGE_SHAPE):
        super().__init__()
        self.frame_shape = check_frame_shape(frame_shape)
        self.feature_size = feature_size
        stages = conv_downsamplings(self.frame_shape)
        wide = BLOCK_WIDTH * channels
        layers = _conv_norm(self.frame_shape[0], channels, 3)
        for stage in range(stages):
            layers.append(InceptionBlock(channels if stage == 0 else wide, wide, stride=2))
        layers += _conv_norm(wide, channels, 1)
        map_size = math.prod(side // 2**stages for side in self.frame_shape[1:])
        layers += [nn.Flatten(), nn.Linear(channels * map_size, feature_size), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dims=3)


class InceptionDecoder(ImageDecoder):
    """``[*batch, input_size] -> [*batch, *output_shape]`` (raw outputs).

    A linear layer with ReLU to a ``channels x H/2^n x W/2^n`` map, ``n`` stages of (nearest
    x2 upsampling, inception block ``BLOCK_WIDTH * channels`` wide), and a 3x3 convolution to
    the ``output_shape[0]`` raw channels (no batch norm on the output).

    :param output_shape: the likelihood's ``raw_shape``.
    """

    def __init__(self, input_size: int, channels: int = 32, output_shape=IMAGE_SHAPE):
        super().__init__(input_size, channels, output_shape)
        wide = BLOCK_WIDTH * channels
        layers: list[nn.Module] = []
        for stage in range(self.stages):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       InceptionBlock(channels if stage == 0 else wide, wide)]
        layers.append(nn.Conv2d(wide, self.frame_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    @property
    def upsample(self) -> nn.Module:
        return self.net
