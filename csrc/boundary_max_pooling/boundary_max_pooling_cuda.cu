// CUDA kernels of boundary max pooling (ATen headers only: gpuAtomicAdd from ATen/cuda/Atomic.cuh,
// C10_CUDA_KERNEL_LAUNCH_CHECK; 64-bit indices throughout; fp32/fp16/bf16/fp64).
// Forward: either one thread per output scanning its range, or one block per row building a
// sparse table in shared memory (O(T log T) per row, O(1) per output). Results are identical.
#include "boundary_max_pooling.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace afsd_bmp {
namespace {

constexpr int kScanThreads = 256;
constexpr int kTableThreads = 128;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // above this a kernel must opt in

// Largest dynamic shared memory a block may opt in to on `device` (227 KiB on H100).
size_t shared_bytes_optin(int device) {
  int bytes = 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error; fall back to the default limit
    return kDefaultSharedBytes;
  }
  return std::max(static_cast<size_t>(bytes), kDefaultSharedBytes);
}

template <typename seg_t>
__device__ __forceinline__ void range_of(const seg_t* segments, int64_t n, int64_t k, int64_t half,
                                         int64_t num_segments, int64_t length, int64_t& lo, int64_t& hi) {
  const seg_t* seg = segments + (n * num_segments + k) * 4 + half * 2;
  lo = segment_bound(seg[0], length);
  hi = segment_bound(seg[1], length);
  if (hi < lo) hi = lo;
}

template <typename scalar_t, typename seg_t>
__global__ void scan_forward_kernel(const scalar_t* __restrict__ input, const seg_t* __restrict__ segments,
                                    scalar_t* __restrict__ output, int64_t* __restrict__ argmax, int64_t total,
                                    int64_t channels, int64_t length, int64_t num_segments) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t half_channels = channels / 2;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t k = index % num_segments;
    const int64_t row = index / num_segments;
    int64_t lo, hi;
    range_of(segments, row / channels, k, (row % channels) / half_channels, num_segments, length, lo, hi);
    const scalar_t* row_input = input + row * length;
    int64_t best_index = lo;
    acc_t best = static_cast<acc_t>(row_input[lo]);
    for (int64_t i = lo + 1; i <= hi; ++i) {
      const acc_t value = static_cast<acc_t>(row_input[i]);
      if (greater(value, best)) {
        best = value;
        best_index = i;
      }
    }
    output[index] = row_input[best_index];
    if (argmax != nullptr) argmax[index] = best_index;
  }
}

// One block per row (grid-stride over rows). Shared memory: the row as acc_t, then `levels`
// index levels; level j, cell i holds the first argmax of [i, i + 2^j).
template <typename scalar_t, typename seg_t>
__global__ void sparse_table_forward_kernel(const scalar_t* __restrict__ input,
                                            const seg_t* __restrict__ segments, scalar_t* __restrict__ output,
                                            int64_t* __restrict__ argmax, int64_t rows, int64_t channels,
                                            int length, int levels, int64_t num_segments) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  acc_t* values = reinterpret_cast<acc_t*>(shared_bytes);
  int* index = reinterpret_cast<int*>(values + length);
  const int64_t half_channels = channels / 2;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const scalar_t* row_input = input + row * length;
    for (int i = threadIdx.x; i < length; i += blockDim.x) {
      values[i] = static_cast<acc_t>(row_input[i]);
      index[i] = i;
    }
    __syncthreads();
    for (int level = 1; level < levels; ++level) {
      const int half = 1 << (level - 1);
      const int cells = length - (1 << level) + 1;
      const int* prev = index + (level - 1) * length;
      int* cur = index + level * length;
      for (int i = threadIdx.x; i < cells; i += blockDim.x) {
        const int left = prev[i], right = prev[i + half];
        // Equal maxima keep the left (lower) index.
        cur[i] = greater(values[right], values[left]) ? right : left;
      }
      __syncthreads();
    }
    const int64_t n = row / channels;
    const int64_t half = (row % channels) / half_channels;
    for (int64_t k = threadIdx.x; k < num_segments; k += blockDim.x) {
      int64_t lo, hi;
      range_of(segments, n, k, half, num_segments, length, lo, hi);
      const int span = static_cast<int>(hi - lo + 1);
      const int level = 31 - __clz(span);
      const int left = index[level * length + lo];
      const int right = index[level * length + hi - (1 << level) + 1];
      // Overlapping windows: on a tie the left window's index is the first occurrence.
      const int best_index = greater(values[right], values[left]) ? right : left;
      output[row * num_segments + k] = row_input[best_index];
      if (argmax != nullptr) argmax[row * num_segments + k] = best_index;
    }
    __syncthreads();  // the next row overwrites the table
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_output, const int64_t* __restrict__ argmax,
                                scalar_t* __restrict__ grad_input, int64_t total, int64_t length,
                                int64_t num_segments) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t i = argmax[index];
    CUDA_KERNEL_ASSERT(i >= 0 && i < length);
    gpuAtomicAdd(grad_input + (index / num_segments) * length + i, grad_output[index]);
  }
}

inline unsigned int blocks_for(int64_t work, int threads) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, kMaxBlocks)));
}

template <typename acc_t>
size_t table_bytes(int64_t length) {
  return static_cast<size_t>(length) * sizeof(acc_t) +
         static_cast<size_t>(sparse_levels(length)) * static_cast<size_t>(length) * sizeof(int);
}

template <typename scalar_t, typename seg_t>
void launch_forward(const at::Tensor& x, const at::Tensor& segments, at::Tensor& output, at::Tensor& argmax,
                    int64_t algorithm) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = x.size(1), length = x.size(2), num_segments = segments.size(1);
  const int64_t rows = x.size(0) * channels;
  int64_t* arg = argmax.defined() ? argmax.data_ptr<int64_t>() : nullptr;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const size_t shared = table_bytes<acc_t>(length);
  // The table pays off when a row has many long ranges; with the shapes AFSD uses a scan is as fast
  // (see docs/ops.md), so `auto` builds a table only for many outputs per row over long rows.
  bool table = shared <= shared_bytes_optin(x.get_device()) && length < (int64_t(1) << 30);
  if (algorithm == kScan || algorithm == kColumnScan ||
      (algorithm == kAuto && !(num_segments >= 32 && length >= 512))) {
    table = false;
  }
  if (table) {
    if (shared > kDefaultSharedBytes) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(sparse_table_forward_kernel<scalar_t, seg_t>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
    }
    sparse_table_forward_kernel<scalar_t, seg_t><<<blocks_for(rows, 1), kTableThreads, shared, stream>>>(
        x.data_ptr<scalar_t>(), segments.data_ptr<seg_t>(), output.data_ptr<scalar_t>(), arg, rows, channels,
        static_cast<int>(length), sparse_levels(length), num_segments);
  } else {
    const int64_t total = output.numel();
    scan_forward_kernel<scalar_t, seg_t><<<blocks_for(total, kScanThreads), kScanThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), segments.data_ptr<seg_t>(), output.data_ptr<scalar_t>(), arg, total, channels,
        length, num_segments);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& x, const at::Tensor& segments,
                                                bool with_argmax, int64_t algorithm) {
  const c10::cuda::CUDAGuard device_guard(x.device());
  const int64_t batch = x.size(0), channels = x.size(1), num_segments = segments.size(1);
  at::Tensor output = at::empty({batch, channels, num_segments}, x.options());
  at::Tensor argmax;
  if (with_argmax) argmax = at::empty({batch, channels, num_segments}, x.options().dtype(at::kLong));
  if (output.numel() == 0) return {output, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "boundary_max_pool_cuda", [&] {
    if (segments.scalar_type() == at::kDouble) {
      launch_forward<scalar_t, double>(x, segments, output, argmax, algorithm);
    } else {
      launch_forward<scalar_t, float>(x, segments, output, argmax, algorithm);
    }
  });
  return {output, argmax};
}

at::Tensor backward_cuda(const at::Tensor& grad_output, const at::Tensor& argmax, int64_t length) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const int64_t batch = grad_output.size(0), channels = grad_output.size(1);
  const int64_t num_segments = grad_output.size(2);
  at::Tensor grad_input = at::zeros({batch, channels, length}, grad_output.options());
  const int64_t total = grad_output.numel();
  if (total == 0) return grad_input;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_output.scalar_type(), "boundary_max_pool_backward_cuda", [&] {
        backward_kernel<scalar_t><<<blocks_for(total, kScanThreads), kScanThreads, 0, stream>>>(
            grad_output.data_ptr<scalar_t>(), argmax.data_ptr<int64_t>(), grad_input.data_ptr<scalar_t>(), total,
            length, num_segments);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_input;
}

}  // namespace afsd_bmp
