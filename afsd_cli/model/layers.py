"""Small building blocks of the AFSD network (official ``AFSD/common/layers.py``, ``i3d_backbone.py``).

Every convolution and pooling pads like TensorFlow's "SAME": the padding is computed from the
input size at run time and split front/back with the extra element at the back. The wrappers
keep the attribute names of the official modules (``conv3d``, ``conv1d``, ``bn``) because the
released checkpoints are keyed by them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(front, back) zero padding that makes a strided window cover ``size`` like TF "SAME"."""
    remainder = size % stride
    total = max(kernel - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def _pad_args(sizes, kernel, stride, padded_dims) -> list[int]:
    """``F.pad`` argument (last dim first) padding only the dims flagged in ``padded_dims``."""
    pads: list[int] = []
    for size, k, s, padded in zip(reversed(sizes), reversed(kernel), reversed(stride), reversed(padded_dims)):
        pads.extend(same_padding(size, k, s) if padded else (0, 0))
    return pads


class Unit3D(nn.Module):
    """Conv3d with SAME padding, optional BatchNorm3d (eps 1e-3, momentum 0.01) and ReLU.

    The backbone uses it as conv (no bias) → BN → ReLU with padding in T, H and W. The pyramid
    head uses it as a biased conv without BN or activation and with ``pad_spatial=False``:
    only time is padded, so a kernel as large as the feature map collapses it to 1×1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=(1, 1, 1),
        stride=(1, 1, 1),
        *,
        batch_norm: bool = True,
        bias: bool = False,
        relu: bool = True,
        pad_spatial: bool = True,
    ):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padded_dims = (True, pad_spatial, pad_spatial)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_size, self.stride, padding=0, bias=bias)
        if batch_norm:
            self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)
        else:
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pad_args(x.shape[2:], self.kernel_size, self.stride, self.padded_dims)
        if any(pads):
            x = F.pad(x, pads)
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """3-D max pooling after SAME zero padding (inputs are post-ReLU, so zeros never win wrongly)."""

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pad_args(x.shape[2:], self.kernel_size, self.stride, (True, True, True))
        if any(pads):
            x = F.pad(x, pads)
        return F.max_pool3d(x, self.kernel_size, self.stride)


class Unit1D(nn.Module):
    """Biased Conv1d with SAME temporal padding and no activation (the only form AFSD uses)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv1d = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        front, back = same_padding(x.shape[-1], self.kernel_size, self.stride)
        if front or back:
            x = F.pad(x, (front, back))
        return self.conv1d(x)


class ScaleExp(nn.Module):
    """``exp(x · scale)`` with one learnt scalar per pyramid level (keeps distances positive)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x * self.scale)


def norm_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    """``conv → GroupNorm(32, channels) → ReLU``: the head's standard block (indices 0, 1, 2)."""
    return nn.Sequential(conv, nn.GroupNorm(32, channels), nn.ReLU(inplace=True))
