"""Dual TV-L1 optical flow (Zach, Pock, Bischof 2007; Sánchez et al. 2013) in PyTorch.

Follows the structure and defaults of OpenCV's CPU ``DualTVL1OpticalFlow`` (read for the
facts, written anew): a pyramid built with bilinear ``resize`` by ``scale_step`` (coarsest level
at least 16 px), zero flow at the coarsest level, upsampled by bilinear resize times
``1/scale_step``; per level ``warps`` warpings of frame 1 and its centred gradients with bicubic
remap (positions on a 1/32 px grid, zero outside the image); per warping up to
``outer_iterations`` × (5×5 median filter of the flow, ``inner_iterations`` primal–dual steps),
stopped once a step changes the flow by at most ``epsilon``² per pixel (squared change summed
over the image). Every frame pair of a batch is its own problem: the stopping test is per pair,
and a pair that stopped is frozen (masked) and then dropped from the batch, so its result does
not depend on what it is batched with.

Tensors are ``[B, H, W]`` float32 grey images in 0..255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from afsd_cli.errors import ConfigError

# cv::remap snaps positions to 1/INTER_TAB_SIZE of a pixel.
_REMAP_SUBPIXELS = 32.0
_MIN_PYRAMID_SIDE = 16


@dataclass(frozen=True)
class TVL1Params:
    """Parameters, named and defaulted as in OpenCV's DualTVL1OpticalFlow_create."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    # Not in OpenCV: "bicubic" is what its CPU TV-L1 uses, "bilinear" is cheaper.
    interpolation: str = "bicubic"
    # Not in OpenCV: test for convergence (a host sync) only every so many steps; pairs that
    # converged in between are frozen by their masks, so only speed changes. 0 = automatic
    # (every step on the CPU, every 8 steps on a GPU where each sync stalls the queue).
    check_every: int = 0


# Named parameter sets; measured accuracy/speed of each in benchmarks/results_flow.md.
PRESETS: dict[str, dict[str, Any]] = {
    "opencv": {},
    "balanced": dict(warps=3),
    "fast": dict(warps=2, outer_iterations=3, inner_iterations=20),
}

_ALIASES = {"lambda": "lambda_", "lam": "lambda_", "innnerIterations": "inner_iterations",
            "innerIterations": "inner_iterations", "outerIterations": "outer_iterations",
            "scaleStep": "scale_step", "medianFiltering": "median_filtering"}


def make_params(preset: str = "opencv", **options: Any) -> TVL1Params:
    """``TVL1Params`` from a preset name plus overrides (OpenCV's camelCase names accepted)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown tvl1 preset {preset!r} (choose from {', '.join(PRESETS)})")
    known = {f.name for f in fields(TVL1Params)}
    overrides = dict(PRESETS[preset])
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        if name not in known:
            raise ConfigError(f"unknown option {key!r} for flow method 'tvl1' "
                              f"(known: preset, {', '.join(sorted(known))})")
        overrides[name] = value
    defaults = TVL1Params()
    for name, value in overrides.items():
        kind = type(getattr(defaults, name))
        try:
            if kind is int and float(value) != int(value):
                raise ValueError
            overrides[name] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"tvl1 option {name!r} must be {kind.__name__}, got {value!r}") from None
    params = replace(defaults, **overrides)
    _validate(params)
    return params


def _validate(p: TVL1Params) -> None:
    problems = []
    if not (p.tau > 0 and p.theta > 0 and p.lambda_ > 0 and p.epsilon >= 0):
        problems.append("tau, theta and lambda must be > 0 and epsilon >= 0")
    if min(p.nscales, p.warps, p.inner_iterations, p.outer_iterations) < 1 or p.check_every < 0:
        problems.append("nscales, warps, inner/outer iterations must be >= 1, check_every >= 0")
    if not 0 < p.scale_step < 1:
        problems.append("scale_step must be in (0, 1)")
    if p.gamma != 0:
        problems.append("gamma != 0 (illumination term) is not supported")
    if p.median_filtering not in (0, 1, 3, 5):
        problems.append("median_filtering must be 0/1 (off), 3 or 5")
    if p.interpolation not in ("bicubic", "bilinear"):
        problems.append("interpolation must be 'bicubic' or 'bilinear'")
    if problems:
        raise ConfigError("invalid tvl1 options: " + "; ".join(problems))


# ---------------------------------------------------------------- resizing (cv::resize, linear)

def _round_half_even(value: float) -> int:
    return int(np.rint(value))


def _linear_resize_matrix(src: int, dst: int, scale: float, device, dtype) -> torch.Tensor:
    """[dst, src] weights of OpenCV's INTER_LINEAR along one axis (``scale`` = src/dst step)."""
    matrix = np.zeros((dst, src), dtype=np.float64)
    for d in range(dst):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = math.floor(f)
        f = float(f) - s
        if s < 0:
            s, f = 0, 0.0
        if s >= src - 1:
            s, f = src - 1, 0.0
        matrix[d, s] += 1.0 - f
        if f:
            matrix[d, s + 1] += f
    return torch.as_tensor(matrix, dtype=dtype, device=device)


def _resize(images: torch.Tensor, size: tuple[int, int], inv_scale: tuple[float, float]) -> torch.Tensor:
    """Bilinear resize of ``[B, H, W]`` to ``size`` with OpenCV's pixel-centre mapping."""
    h, w = images.shape[-2:]
    rows = _linear_resize_matrix(h, size[0], 1.0 / inv_scale[0], images.device, images.dtype)
    cols = _linear_resize_matrix(w, size[1], 1.0 / inv_scale[1], images.device, images.dtype)
    return rows @ images @ cols.T


# ---------------------------------------------------------------- finite differences

def _centred_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the difference of the two neighbours, one-sided (still halved) at the borders."""
    padded_x = F.pad(image.unsqueeze(1), (1, 1, 0, 0), mode="replicate").squeeze(1)
    padded_y = F.pad(image.unsqueeze(1), (0, 0, 1, 1), mode="replicate").squeeze(1)
    dx = 0.5 * (padded_x[..., 2:] - padded_x[..., :-2])
    dy = 0.5 * (padded_y[..., 2:, :] - padded_y[..., :-2, :])
    return dx, dy


def _forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero on the last column (x) / last row (y)."""
    # Written as pad-of-slices so torch.compile fuses them into the step's kernel.
    dx = F.pad(u[..., 1:] - u[..., :-1], (0, 1))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def _divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence (zero outside), the negative adjoint of ``_forward_gradient``."""
    return px - F.pad(px[..., :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))


_MEDIAN_CHUNK = 512  # pairs per median call on a GPU: the unfolded windows take k*k copies


def _median(u: torch.Tensor, ksize: int, network=None) -> torch.Tensor:
    """cv::medianBlur on float images: ``ksize``² window, replicated borders."""
    if u.device.type == "cpu":
        import cv2

        # OpenCV's own filter is much faster than a torch median over unfolded windows.
        array = u.numpy()
        return torch.from_numpy(np.stack([cv2.medianBlur(image, ksize) for image in array]))
    median = network or _median_torch
    return torch.cat([median(chunk, ksize) for chunk in u.split(_MEDIAN_CHUNK)])


def _median_torch(u: torch.Tensor, ksize: int) -> torch.Tensor:
    b, h, w = u.shape
    r = ksize // 2
    padded = F.pad(u.unsqueeze(1), (r, r, r, r), mode="replicate")
    windows = F.unfold(padded, ksize)  # [B, k*k, H*W]
    return windows.sort(dim=1).values[:, (ksize * ksize) // 2].view(b, h, w)


def _median_network(u: torch.Tensor, ksize: int) -> torch.Tensor:
    """The same median by forgetful selection over the k*k shifted images: only min/max of
    whole images, which torch.compile fuses into one kernel (no sort, no unfolded copy).

    Keep ``n//2 + 2`` candidates; repeatedly move the smallest and the largest out (neither
    can be the median) and take in the next value; the last one standing is the median.
    """
    h, w = u.shape[-2:]
    r = ksize // 2
    padded = F.pad(u.unsqueeze(1), (r, r, r, r), mode="replicate").squeeze(1)
    values = [padded[..., dy:dy + h, dx:dx + w] for dy in range(ksize) for dx in range(ksize)]
    pool, rest = values[: len(values) // 2 + 2], values[len(values) // 2 + 2:]
    while True:
        for i in range(1, len(pool)):  # smallest to the front
            pool[0], pool[i] = torch.minimum(pool[0], pool[i]), torch.maximum(pool[0], pool[i])
        for i in range(1, len(pool) - 1):  # largest (of the others) to the back
            pool[i], pool[-1] = torch.minimum(pool[i], pool[-1]), torch.maximum(pool[i], pool[-1])
        pool = pool[1:-1]
        if not rest:
            return pool[0]
        pool.append(rest.pop(0))


# ---------------------------------------------------------------- warping (cv::remap)

def _warp(stack: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``stack`` [B, C, H, W] at (x + u1, y + u2); zero outside the image."""
    b, _, h, w = stack.shape
    ys = torch.arange(h, device=stack.device, dtype=stack.dtype).view(1, h, 1)
    xs = torch.arange(w, device=stack.device, dtype=stack.dtype).view(1, 1, w)
    map_x = torch.round((xs + u1) * _REMAP_SUBPIXELS) / _REMAP_SUBPIXELS
    map_y = torch.round((ys + u2) * _REMAP_SUBPIXELS) / _REMAP_SUBPIXELS
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    grid = torch.stack((map_x * (2.0 / max(w - 1, 1)) - 1.0, map_y * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    return F.grid_sample(stack, grid, mode=mode, padding_mode="zeros", align_corners=True)


# ---------------------------------------------------------------- the solver

def _primal_dual_step(u1, u2, p11, p12, p21, p22, i1wx, i1wy, inv_grad, rho_c, l_t: float,
                      theta: float, taut: float):
    """One step: thresholding (v), primal update (u), dual update (p); also returns the
    squared change of u summed per pair.

    OpenCV's three-case thresholding equals clamping ``-rho/|grad I|^2`` to ``±l_t`` (up to
    its ``|grad I|^2 <= FLT_EPSILON`` case, where the step is below 1e-4 px either way).
    """
    rho = rho_c + i1wx * u1 + i1wy * u2
    factor = torch.clamp(-rho * inv_grad, -l_t, l_t)
    new_u1 = u1 + factor * i1wx + theta * _divergence(p11, p12)
    new_u2 = u2 + factor * i1wy + theta * _divergence(p21, p22)
    error = ((new_u1 - u1).square() + (new_u2 - u2).square()).sum(dim=(-2, -1))
    u1x, u1y = _forward_gradient(new_u1)
    u2x, u2y = _forward_gradient(new_u2)
    scale1 = 1.0 / (1.0 + taut * torch.sqrt(u1x * u1x + u1y * u1y))
    scale2 = 1.0 / (1.0 + taut * torch.sqrt(u2x * u2x + u2y * u2y))
    p11 = (p11 + taut * u1x) * scale1
    p12 = (p12 + taut * u1y) * scale1
    p21 = (p21 + taut * u2x) * scale2
    p22 = (p22 + taut * u2y) * scale2
    return new_u1, new_u2, p11, p12, p21, p22, error


def _unmasked_step(active, u1, u2, p11, p12, p21, p22, i1wx, i1wy, inv_grad, rho_c, l_t: float,
                   theta: float, taut: float, scaled_epsilon: float):
    """``_masked_step`` when every pair is known to be active (checked after each step)."""
    *state, error = _primal_dual_step(u1, u2, p11, p12, p21, p22, i1wx, i1wy, inv_grad, rho_c,
                                      l_t, theta, taut)
    return (*state, error > scaled_epsilon)


def _masked_step(active, u1, u2, p11, p12, p21, p22, i1wx, i1wy, inv_grad, rho_c, l_t: float,
                 theta: float, taut: float, scaled_epsilon: float):
    """``_primal_dual_step`` for the pairs still ``active``; the others keep their values.
    Returns the new state and the new mask (a pair stops once its step changed u little)."""
    n1, n2, q11, q12, q21, q22, error = _primal_dual_step(
        u1, u2, p11, p12, p21, p22, i1wx, i1wy, inv_grad, rho_c, l_t, theta, taut)
    keep = active.view(-1, 1, 1)
    return (torch.where(keep, n1, u1), torch.where(keep, n2, u2),
            torch.where(keep, q11, p11), torch.where(keep, q12, p12),
            torch.where(keep, q21, p21), torch.where(keep, q22, p22),
            active & (error > scaled_epsilon))


class _Solver:
    def __init__(self, params: TVL1Params, compile_step: bool = False, device: str = "cpu"):
        self.p = params
        self.check_every = params.check_every or (1 if torch.device(device).type == "cpu" else 8)
        self.masked = self.check_every > 1
        self.step = _masked_step if self.masked else _unmasked_step
        self.median_network = None
        if compile_step:
            self.step = torch.compile(self.step, dynamic=True)
            self.median_network = torch.compile(_median_network, dynamic=True)
        self.steps_run = 0  # pair-steps executed (a step on 8 pairs counts 8), for benchmarks

    def one_scale(self, i0, i1, u1, u2):
        p = self.p
        b, h, w = i0.shape
        # A tensor, so a compiled step is not specialised (recompiled) for each level's value.
        scaled_epsilon = torch.tensor(p.epsilon * p.epsilon * h * w, device=i0.device)
        l_t = p.lambda_ * p.theta
        taut = p.tau / p.theta
        i1x, i1y = _centred_gradient(i1)
        source = torch.stack((i1, i1x, i1y), dim=1)
        duals = torch.zeros((4, b, h, w), dtype=i0.dtype, device=i0.device)
        for _ in range(p.warps):
            warped = _warp(source, u1, u2, p.interpolation)
            i1wx, i1wy = warped[:, 1], warped[:, 2]
            inv_grad = 1.0 / (i1wx * i1wx + i1wy * i1wy).clamp_min(1e-30)
            rho_c = warped[:, 0] - i1wx * u1 - i1wy * u2 - i0
            # The pairs still iterating in this warping, and their state (compacted: pairs that
            # converged are written back and dropped, so they cost nothing afterwards).
            index = torch.arange(b, device=i0.device)
            state = [u1, u2, duals[0], duals[1], duals[2], duals[3]]
            consts = [i1wx, i1wy, inv_grad, rho_c]
            active = torch.ones(b, dtype=torch.bool, device=i0.device)
            u1, u2 = u1.clone(), u2.clone()
            for _outer in range(p.outer_iterations):
                if p.median_filtering > 1:
                    state[0] = _median(state[0], p.median_filtering, self.median_network)
                    state[1] = _median(state[1], p.median_filtering, self.median_network)
                for inner in range(p.inner_iterations):
                    *state, active = self.step(active, *state, *consts, l_t, p.theta, taut,
                                               scaled_epsilon)
                    self.steps_run += len(index)
                    last = inner == p.inner_iterations - 1
                    if last or (inner + 1) % self.check_every == 0:
                        running = int(active.sum())
                        # The masked (GPU) step lets a few finished pairs ride along: each
                        # compaction copies the whole state.
                        if running == len(index) or (self.masked and running > 0.9 * len(index)
                                                     and not last):
                            continue
                        self._write_back(index, state, u1, u2, duals)
                        keep = active.nonzero().squeeze(1)
                        index = index[keep]
                        if len(index) == 0:
                            break
                        state = [t[keep] for t in state]
                        consts = [t[keep] for t in consts]
                        active = active[keep]
                if len(index) == 0:
                    break
            if len(index):
                self._write_back(index, state, u1, u2, duals)
        return u1, u2

    @staticmethod
    def _write_back(index, state, u1, u2, duals):
        u1[index] = state[0]
        u2[index] = state[1]
        duals[:, index] = torch.stack(state[2:])

    def __call__(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        p = self.p
        pyramid0, pyramid1 = [i0], [i1]
        for _ in range(1, p.nscales):
            h, w = pyramid0[-1].shape[-2:]
            size = (_round_half_even(h * p.scale_step), _round_half_even(w * p.scale_step))
            if min(size) < _MIN_PYRAMID_SIDE:
                break
            scale = (p.scale_step, p.scale_step)
            pyramid0.append(_resize(pyramid0[-1], size, scale))
            pyramid1.append(_resize(pyramid1[-1], size, scale))
        u1 = torch.zeros_like(pyramid0[-1])
        u2 = torch.zeros_like(pyramid0[-1])
        for level in range(len(pyramid0) - 1, -1, -1):
            u1, u2 = self.one_scale(pyramid0[level], pyramid1[level], u1, u2)
            if level == 0:
                break
            (h, w), (fh, fw) = u1.shape[-2:], pyramid0[level - 1].shape[-2:]
            inv = (fh / h, fw / w)
            u1 = _resize(u1, (fh, fw), inv) * (1.0 / p.scale_step)
            u2 = _resize(u2, (fh, fw), inv) * (1.0 / p.scale_step)
        return torch.stack((u1, u2), dim=-1)


def tvl1_flow(i0: torch.Tensor, i1: torch.Tensor, params: TVL1Params | None = None,
              compile_step: bool = False) -> torch.Tensor:
    """Flow ``[B, H, W, 2]`` from frame batches ``i0``/``i1`` ``[B, H, W]`` (float, 0..255)."""
    with torch.no_grad():
        return _Solver(params or TVL1Params(), compile_step, str(i0.device))(i0.float(), i1.float())


def tvl1_flow_frames(grey: np.ndarray, device: str = "cpu", batch_size: int = 64,
                     preset: str = "opencv", compile: bool = False, progress: Callable[[int], Any] | None = None,
                     **options: Any) -> np.ndarray:
    """Flow of the consecutive pairs of grey uint8 frames ``[T, H, W]`` → ``[T-1, H, W, 2]``."""
    params = make_params(preset, **options)
    frames = torch.from_numpy(np.ascontiguousarray(grey)).to(device=device, dtype=torch.float32)
    solver = _Solver(params, compile_step=bool(compile), device=device)
    out = np.empty((len(grey) - 1, *grey.shape[1:], 2), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(grey) - 1, batch_size):
            stop = min(start + batch_size, len(grey) - 1)
            flow = solver(frames[start:stop], frames[start + 1: stop + 1])
            out[start:stop] = flow.cpu().numpy()
            if progress is not None:
                progress(stop - start)
    return out
