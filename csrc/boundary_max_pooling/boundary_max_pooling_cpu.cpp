// CPU kernels of boundary max pooling, parallel over (sample, channel half, block of channels) with
// at::parallel_for. All channels of a half share their ranges, so per (sample, half) the forward
// either scans every range for a block of channels at once (transposed to [T, channels] so the
// inner loop runs over channels and vectorises) or, when the ranges are long and many, builds a
// sparse table per row (O(T log T) per row, O(1) per range). Results are identical.
#include "boundary_max_pooling.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <vector>

namespace afsd_bmp {
namespace {

// Building one sparse-table cell costs about as much as this many column-scan steps (measured on
// x86 with benchmarks/bench_ops.py: ~5 ns per cell vs ~0.6 ns per channel and step).
constexpr int64_t kSparseCellCost = 8;
// Largest table (cells per row) a thread may allocate; longer rows always scan.
constexpr int64_t kMaxSparseCells = int64_t(1) << 22;
// Channels scanned together in the column scan (their [T, block] copy stays in L2).
constexpr int64_t kChannelBlock = 64;
// Longest row the column scan copies (16 MiB of float per thread); longer rows scan row by row.
constexpr int64_t kMaxColumnLength = int64_t(1) << 16;

inline int floor_log2(uint64_t value) {
#if defined(__GNUC__) || defined(__clang__)
  return 63 - __builtin_clzll(value);
#else
  int result = 0;
  while (value >>= 1) ++result;
  return result;
#endif
}

enum GroupMode : uint8_t { kModeRowScan, kModeColumnScan, kModeTable };

struct Bounds {
  std::vector<int64_t> lo, hi;  // [B, 2, S]
  std::vector<uint8_t> mode;    // [B, 2] GroupMode
};

template <typename seg_t>
Bounds compute_bounds(const seg_t* segments, int64_t batch, int64_t num_segments, int64_t length,
                      int64_t algorithm) {
  Bounds bounds;
  bounds.lo.resize(batch * 2 * num_segments);
  bounds.hi.resize(batch * 2 * num_segments);
  bounds.mode.assign(batch * 2, kModeRowScan);
  const int levels = sparse_levels(length);
  const bool table_fits = length <= (int64_t(1) << 30) && levels * length <= kMaxSparseCells;
  const bool columns_fit = length <= kMaxColumnLength;
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t half = 0; half < 2; ++half) {
      int64_t covered = 0;
      for (int64_t k = 0; k < num_segments; ++k) {
        const seg_t* seg = segments + (n * num_segments + k) * 4 + half * 2;
        const int64_t lo = segment_bound(seg[0], length);
        int64_t hi = segment_bound(seg[1], length);
        if (hi < lo) hi = lo;
        const int64_t slot = (n * 2 + half) * num_segments + k;
        bounds.lo[slot] = lo;
        bounds.hi[slot] = hi;
        covered += hi - lo + 1;
      }
      GroupMode mode = kModeRowScan;
      if (algorithm == kSparseTable && table_fits) {
        mode = kModeTable;
      } else if (algorithm == kAuto && table_fits && covered > kSparseCellCost * levels * length) {
        mode = kModeTable;
      } else if ((algorithm == kAuto || algorithm == kColumnScan) && columns_fit) {
        mode = kModeColumnScan;
      }
      bounds.mode[n * 2 + half] = mode;
    }
  }
  return bounds;
}

template <typename scalar_t, typename acc_t>
void scan_row(const scalar_t* row, const int64_t* lo, const int64_t* hi, int64_t num_segments,
              scalar_t* out, int64_t* argmax) {
  for (int64_t k = 0; k < num_segments; ++k) {
    int64_t best_index = lo[k];
    acc_t best = static_cast<acc_t>(row[best_index]);
    for (int64_t i = lo[k] + 1; i <= hi[k]; ++i) {
      const acc_t value = static_cast<acc_t>(row[i]);
      if (greater(value, best)) {
        best = value;
        best_index = i;
      }
    }
    out[k] = row[best_index];
    if (argmax != nullptr) argmax[k] = best_index;
  }
}

// Scans every range for `count` consecutive rows at once. columns[t * count + j] = row j at t, so
// the innermost loops run over channels with unit stride.
template <typename scalar_t, typename acc_t>
void column_scan_rows(const scalar_t* first_row, int64_t count, int64_t length, const int64_t* lo,
                      const int64_t* hi, int64_t num_segments, scalar_t* first_out, int64_t* first_arg,
                      acc_t* columns, acc_t* best, int32_t* best_index) {
  for (int64_t j = 0; j < count; ++j) {
    const scalar_t* row = first_row + j * length;
    for (int64_t t = 0; t < length; ++t) columns[t * count + j] = static_cast<acc_t>(row[t]);
  }
  for (int64_t k = 0; k < num_segments; ++k) {
    const acc_t* start = columns + lo[k] * count;
    const int32_t first = static_cast<int32_t>(lo[k]);
    for (int64_t j = 0; j < count; ++j) {
      best[j] = start[j];
      best_index[j] = first;
    }
    for (int64_t i = lo[k] + 1; i <= hi[k]; ++i) {
      const acc_t* column = columns + i * count;
      const int32_t position = static_cast<int32_t>(i);
      for (int64_t j = 0; j < count; ++j) {
        const acc_t value = column[j];
        const bool take = greater(value, best[j]);
        best[j] = take ? value : best[j];
        best_index[j] = take ? position : best_index[j];
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      first_out[j * num_segments + k] = first_row[j * length + best_index[j]];
      if (first_arg != nullptr) first_arg[j * num_segments + k] = best_index[j];
    }
  }
}

// values/index hold `levels` levels of `length` cells; level j, cell i covers [i, i + 2^j).
template <typename scalar_t, typename acc_t>
void sparse_table_row(const scalar_t* row, int64_t length, int levels, const int64_t* lo, const int64_t* hi,
                      int64_t num_segments, scalar_t* out, int64_t* argmax, acc_t* values, int32_t* index) {
  for (int64_t i = 0; i < length; ++i) {
    values[i] = static_cast<acc_t>(row[i]);
    index[i] = static_cast<int32_t>(i);
  }
  for (int level = 1; level < levels; ++level) {
    const int64_t half = int64_t(1) << (level - 1);
    const int64_t cells = length - (int64_t(1) << level) + 1;
    const acc_t* prev_values = values + (level - 1) * length;
    const int32_t* prev_index = index + (level - 1) * length;
    acc_t* cur_values = values + level * length;
    int32_t* cur_index = index + level * length;
    for (int64_t i = 0; i < cells; ++i) {
      // On equal values keep the left half: the lower index wins.
      const bool right = greater(prev_values[i + half], prev_values[i]);
      cur_values[i] = right ? prev_values[i + half] : prev_values[i];
      cur_index[i] = right ? prev_index[i + half] : prev_index[i];
    }
  }
  for (int64_t k = 0; k < num_segments; ++k) {
    const int level = floor_log2(static_cast<uint64_t>(hi[k] - lo[k] + 1));
    const int64_t left = level * length + lo[k];
    const int64_t right = level * length + hi[k] - (int64_t(1) << level) + 1;
    // The two windows overlap; if their maxima tie, the left one holds the first occurrence.
    const int64_t best_index = greater(values[right], values[left]) ? index[right] : index[left];
    out[k] = row[best_index];
    if (argmax != nullptr) argmax[k] = best_index;
  }
}

template <typename scalar_t, typename seg_t>
void forward_kernel(const at::Tensor& x, const at::Tensor& segments, at::Tensor& output, at::Tensor& argmax,
                    int64_t algorithm) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = x.size(0), channels = x.size(1), length = x.size(2);
  const int64_t num_segments = segments.size(1);
  const Bounds bounds = compute_bounds(segments.data_ptr<seg_t>(), batch, num_segments, length, algorithm);
  const int levels = sparse_levels(length);
  const scalar_t* input = x.data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  int64_t* arg = argmax.defined() ? argmax.data_ptr<int64_t>() : nullptr;
  const int64_t half_channels = channels / 2;
  const int64_t blocks_per_half = (half_channels + kChannelBlock - 1) / kChannelBlock;
  const int64_t units = batch * 2 * blocks_per_half;  // (sample, half, block of channels)
  const int64_t work_per_unit = std::max<int64_t>(1, kChannelBlock * length * std::min<int64_t>(levels, num_segments));
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / work_per_unit);
  at::parallel_for(0, units, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch_values, best;
    std::vector<int32_t> scratch_index, best_index;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t group = unit / blocks_per_half;  // n * 2 + half
      const int64_t first_channel = (unit % blocks_per_half) * kChannelBlock;
      const int64_t count = std::min(kChannelBlock, half_channels - first_channel);
      const int64_t first_row = (group / 2) * channels + (group % 2) * half_channels + first_channel;
      const int64_t* lo = bounds.lo.data() + group * num_segments;
      const int64_t* hi = bounds.hi.data() + group * num_segments;
      const uint8_t mode = bounds.mode[group];
      if (mode == kModeColumnScan) {
        scratch_values.resize(count * length);
        best.resize(count);
        best_index.resize(count);
        column_scan_rows<scalar_t, acc_t>(input + first_row * length, count, length, lo, hi, num_segments,
                                          out + first_row * num_segments,
                                          arg != nullptr ? arg + first_row * num_segments : nullptr,
                                          scratch_values.data(), best.data(), best_index.data());
        continue;
      }
      if (mode == kModeTable && scratch_values.size() < static_cast<size_t>(levels * length)) {
        scratch_values.resize(levels * length);
        scratch_index.resize(levels * length);
      }
      for (int64_t row = first_row; row < first_row + count; ++row) {
        const scalar_t* row_input = input + row * length;
        scalar_t* row_out = out + row * num_segments;
        int64_t* row_arg = arg != nullptr ? arg + row * num_segments : nullptr;
        if (mode == kModeTable) {
          sparse_table_row<scalar_t, acc_t>(row_input, length, levels, lo, hi, num_segments, row_out, row_arg,
                                            scratch_values.data(), scratch_index.data());
        } else {
          scan_row<scalar_t, acc_t>(row_input, lo, hi, num_segments, row_out, row_arg);
        }
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x, const at::Tensor& segments,
                                               bool with_argmax, int64_t algorithm) {
  const int64_t batch = x.size(0), channels = x.size(1), num_segments = segments.size(1);
  at::Tensor output = at::empty({batch, channels, num_segments}, x.options());
  at::Tensor argmax;
  if (with_argmax) argmax = at::empty({batch, channels, num_segments}, x.options().dtype(at::kLong));
  if (output.numel() == 0) return {output, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "boundary_max_pool_cpu", [&] {
    if (segments.scalar_type() == at::kDouble) {
      forward_kernel<scalar_t, double>(x, segments, output, argmax, algorithm);
    } else {
      forward_kernel<scalar_t, float>(x, segments, output, argmax, algorithm);
    }
  });
  return {output, argmax};
}

at::Tensor backward_cpu(const at::Tensor& grad_output, const at::Tensor& argmax, int64_t length) {
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t num_segments = grad_output.size(2);
  at::Tensor grad_input = at::zeros({batch, channels, length}, grad_output.options());
  if (grad_output.numel() == 0) return grad_input;
  std::atomic<bool> out_of_range{false};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "boundary_max_pool_backward_cpu", [&] {
        const scalar_t* grad = grad_output.data_ptr<scalar_t>();
        const int64_t* index = argmax.data_ptr<int64_t>();
        scalar_t* grad_in = grad_input.data_ptr<scalar_t>();
        const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, num_segments));
        // Each row's argmax points inside that row, so rows never write to the same element.
        at::parallel_for(0, batch * channels, grain, [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row) {
            scalar_t* grad_row = grad_in + row * length;
            for (int64_t k = row * num_segments; k < (row + 1) * num_segments; ++k) {
              const int64_t i = index[k];
              if (i < 0 || i >= length) {
                out_of_range = true;
                continue;
              }
              grad_row[i] += grad[k];
            }
          }
        });
      });
  TORCH_CHECK(!out_of_range, "boundary_max_pool backward: argmax outside [0, ", length, ")");
  return grad_input;
}

}  // namespace afsd_bmp
