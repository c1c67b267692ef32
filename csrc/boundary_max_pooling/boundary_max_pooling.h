// Boundary max pooling (as the official AFSD/prop_pooling/boundary_max_pooling_kernel.cu):
// declarations shared by the dispatcher and the kernels.
//
// forward(x [B, C, T], segments [B, S, 4]) -> (y [B, C, S], argmax [B, C, S] int64 or empty)
//   channels c < C/2 pool over segments[..., 0:2], the others over segments[..., 2:4];
//   bounds are truncated toward zero and clamped to [0, T-1] (NaN -> 0), ranges are inclusive,
//   a reversed range (hi < lo) is the single element x[lo], the first maximum wins ties and
//   NaN counts as larger than any number (same as torch.max).
// backward(grad_y [B, C, S], argmax [B, C, S], T) -> grad_x [B, C, T]
//   grad_x[n, c, argmax[n, c, k]] += grad_y[n, c, k]
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <tuple>

namespace afsd_bmp {

// Which forward algorithm to run; the result is identical, only the speed differs.
enum Algorithm : int64_t {
  kAuto = 0,
  kScan = 1,         // scan each range (O(range length) per output)
  kSparseTable = 2,  // range-maximum sparse table per row (O(T log T) build, O(1) per output)
  kColumnScan = 3,   // CPU: scan blocks of channels at once (SIMD over channels); CUDA: same as kScan
};

// Total order used everywhere: NaN above every number; equal values are "not greater" so the
// caller keeps the lower index.
template <typename acc_t>
inline C10_HOST_DEVICE bool greater(acc_t a, acc_t b) {
  // Bitwise, not short-circuit: keeps the loops over channels vectorisable.
  return (a > b) | ((a != a) & (b == b));
}

// Truncate toward zero, then clamp to [0, length - 1]; NaN -> 0. Clamping in floating point first
// keeps huge values from overflowing the integer cast.
template <typename seg_t>
inline C10_HOST_DEVICE int64_t segment_bound(seg_t value, int64_t length) {
  if (!(value > seg_t(0))) return 0;
  if (value >= static_cast<seg_t>(length - 1)) return length - 1;
  const int64_t truncated = static_cast<int64_t>(value);
  return truncated < length - 1 ? truncated : length - 1;
}

// Number of sparse-table levels for a row of `length`: floor(log2(length)) + 1.
inline C10_HOST_DEVICE int sparse_levels(int64_t length) {
  int levels = 1;
  while ((int64_t(1) << levels) <= length) ++levels;
  return levels;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x, const at::Tensor& segments, bool with_argmax, int64_t algorithm);
at::Tensor backward_cpu(const at::Tensor& grad_output, const at::Tensor& argmax, int64_t length);

#ifdef AFSD_BMP_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> forward_cuda(
    const at::Tensor& x, const at::Tensor& segments, bool with_argmax, int64_t algorithm);
at::Tensor backward_cuda(const at::Tensor& grad_output, const at::Tensor& argmax, int64_t length);
#endif

}  // namespace afsd_bmp
