"""Pure-PyTorch boundary max pooling (the official CUDA op's semantics, ``AFSD/prop_pooling/``): the
fallback backend and the oracle of the self-test.

Works on any device and dtype, needs no compiler. It materialises a ``[B, 2, C/2, S, T]`` masked copy
of the input (``-inf`` outside each range; in chunks of segments to bound memory), so it is slower than
the compiled kernels, but it is simple enough to check by eye.
"""

from __future__ import annotations

import torch

# Elements of the masked temporary built at once (256 MiB in float32).
_MASKED_ELEMENTS = 1 << 26

__all__ = [
    "segment_bounds",
    "forward_reference",
    "backward_reference",
    "legacy_backward_reference",
]


def check_inputs(x: torch.Tensor, segments: torch.Tensor) -> None:
    """Raise ``ValueError`` for shapes or dtypes the op does not accept."""
    if x.dim() != 3:
        raise ValueError(f"boundary_max_pool: input must be [B, C, T], got {tuple(x.shape)}")
    if segments.dim() != 3 or segments.shape[2] != 4:
        raise ValueError(f"boundary_max_pool: segments must be [B, S, 4], got {tuple(segments.shape)}")
    if segments.shape[0] != x.shape[0]:
        raise ValueError(
            f"boundary_max_pool: batch sizes differ (input {x.shape[0]}, segments {segments.shape[0]})"
        )
    if x.shape[1] % 2:
        raise ValueError(f"boundary_max_pool: the channel count must be even, got {x.shape[1]}")
    if x.shape[2] == 0 and x.shape[0] * x.shape[1] > 0 and segments.shape[1] > 0:
        raise ValueError("boundary_max_pool: the temporal length must be positive")
    if not x.is_floating_point():
        raise ValueError(f"boundary_max_pool: input must be floating point, got {x.dtype}")
    if segments.is_complex() or segments.dtype == torch.bool:
        raise ValueError(f"boundary_max_pool: segments must be real numbers, got {segments.dtype}")
    if segments.device != x.device:
        raise ValueError(f"boundary_max_pool: input on {x.device} but segments on {segments.device}")


def segment_bounds(segments: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive ``(lo, hi)`` int64 bounds, each ``[B, 2, S]`` (start half, end half).

    Truncation toward zero then clamping to ``[0, length-1]`` (NaN -> 0); a reversed range
    collapses to ``lo``. Clamping before truncating gives the same integers and cannot overflow.
    """
    values = segments.detach().to(torch.float64).nan_to_num(nan=0.0)
    bounds = values.clamp(0, max(length - 1, 0)).trunc().long()
    lo = torch.stack((bounds[..., 0], bounds[..., 2]), dim=1)
    hi = torch.maximum(torch.stack((bounds[..., 1], bounds[..., 3]), dim=1), lo)
    return lo, hi


def forward_reference(x: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, argmax)``, both ``[B, C, S]``; argmax is the first maximum's index along T (int64)."""
    check_inputs(x, segments)
    batch, channels, length = x.shape
    num_segments = segments.shape[1]
    if batch * channels * num_segments == 0:
        empty = x.new_empty((batch, channels, num_segments))
        return empty, empty.long()
    lo, hi = segment_bounds(segments, length)  # [B, 2, S]
    positions = torch.arange(length, device=x.device)
    grouped = x.detach().reshape(batch, 2, channels // 2, 1, length)
    # The masked copy has B*C*S*T elements: build it for a few segments at a time to bound memory.
    chunk = max(1, _MASKED_ELEMENTS // max(1, batch * channels * length))
    values, argmax = [], []
    for first in range(0, num_segments, chunk):
        lo_part, hi_part = lo[..., first : first + chunk], hi[..., first : first + chunk]
        inside = (positions >= lo_part.unsqueeze(-1)) & (positions <= hi_part.unsqueeze(-1))  # [B, 2, s, T]
        masked = grouped.masked_fill(~inside.unsqueeze(2), float("-inf"))  # [B, 2, C/2, s, T]
        part_values, part_argmax = masked.max(dim=-1)  # first maximum wins; NaN propagates like the kernels
        # A range holding only -inf ties with the fill: its first maximum is lo, not the row's first index.
        only_minus_inf = part_values == float("-inf")
        part_argmax = torch.where(only_minus_inf, lo_part.unsqueeze(2).expand_as(part_argmax), part_argmax)
        values.append(part_values)
        argmax.append(part_argmax)
    shape = (batch, channels, num_segments)
    return torch.cat(values, dim=-1).reshape(shape), torch.cat(argmax, dim=-1).reshape(shape)


def backward_reference(grad_output: torch.Tensor, argmax: torch.Tensor, length: int) -> torch.Tensor:
    """``grad_x[n, c, argmax[n, c, k]] += grad_y[n, c, k]`` (the correct backward)."""
    batch, channels, _ = grad_output.shape
    grad_input = grad_output.new_zeros((batch, channels, length))
    return grad_input.scatter_add_(2, argmax, grad_output.contiguous())


def legacy_backward_reference(grad_output: torch.Tensor, x: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The official CUDA kernel's backward, which used S (= segments.size(1)) as the temporal size.

    The first ``B*C*S`` elements of the flat input are read as a ``[B, C, S]`` tensor; bounds are
    clamped to ``[0, S-1]``; the first argmax over that misread view receives the gradient at the same
    flat offset of ``grad_x``. Correct only when ``S == T``.
    """
    check_inputs(x, segments)
    batch, channels, length = x.shape
    num_segments = segments.shape[1]
    if num_segments > length:
        raise ValueError(
            f"boundary_max_pool legacy backward: needs S <= T (S={num_segments}, T={length}); "
            "the official kernel would read out of bounds"
        )
    grad_flat = grad_output.new_zeros(batch * channels * length)
    if batch * channels * num_segments == 0:
        return grad_flat.view(batch, channels, length)
    count = batch * channels * num_segments
    misread = x.detach().reshape(-1)[:count].view(batch, channels, num_segments)
    _, argmax = forward_reference(misread, segments)
    grad_flat[:count] = backward_reference(grad_output, argmax, num_segments).reshape(-1)
    return grad_flat.view(batch, channels, length)
