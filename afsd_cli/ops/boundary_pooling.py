"""Boundary max pooling (AFSD spec §3.5).

``boundary_max_pool(x [B, Ch, T], segments [B, S, 4]) -> [B, Ch, S]``: channels of the first half
take the max over the start range ``segments[..., 0:2]``, the second half over the end range
``segments[..., 2:4]``; bounds are truncated toward zero, clamped to ``[0, T-1]`` and inclusive; a
reversed range reduces to its first element; the lowest index wins ties.

Placeholder: the pure-PyTorch reference only. The C++/CUDA backends and their dispatcher replace
this module's body.
"""

from __future__ import annotations


def boundary_max_pool(input, segments, legacy_grad: bool = False):
    import torch

    if legacy_grad:
        raise NotImplementedError("legacy_grad needs the full op implementation")
    batch, channels, length = input.shape
    num_segments = segments.shape[1]
    half = channels // 2
    bounds = segments.detach().to(torch.float64).trunc().long().clamp_(0, length - 1)
    lo = torch.stack([bounds[..., 0], bounds[..., 2]], dim=1)  # [B, 2, S]
    hi = torch.stack([bounds[..., 1], bounds[..., 3]], dim=1)
    hi = torch.maximum(hi, lo)
    positions = torch.arange(length, device=input.device)
    mask = (positions.view(1, 1, 1, -1) >= lo.unsqueeze(-1)) & (positions.view(1, 1, 1, -1) <= hi.unsqueeze(-1))
    grouped = input.view(batch, 2, half, 1, length)
    filled = grouped.masked_fill(~mask.unsqueeze(2), float("-inf"))
    return filled.amax(dim=-1).reshape(batch, channels, num_segments)
