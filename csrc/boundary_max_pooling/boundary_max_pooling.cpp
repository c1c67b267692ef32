// Dispatcher of the boundary max pooling op: input checks, dtype normalisation and the
// TORCH_LIBRARY registration (ops torch.ops.afsd_bmp.forward / backward / legacy_backward).
// Only ATen + torch/library.h are included: compiling is ~3x faster than with torch/extension.h.
#include "boundary_max_pooling.h"

#include <torch/library.h>

namespace afsd_bmp {
namespace {

void check_forward_inputs(const at::Tensor& x, const at::Tensor& segments) {
  TORCH_CHECK(x.dim() == 3, "boundary_max_pool: input must be [B, C, T], got ", x.sizes());
  TORCH_CHECK(segments.dim() == 3 && segments.size(2) == 4,
              "boundary_max_pool: segments must be [B, S, 4], got ", segments.sizes());
  TORCH_CHECK(segments.size(0) == x.size(0), "boundary_max_pool: batch sizes differ (input ",
              x.size(0), ", segments ", segments.size(0), ")");
  TORCH_CHECK(x.size(1) % 2 == 0, "boundary_max_pool: the channel count must be even, got ", x.size(1));
  TORCH_CHECK(x.size(2) > 0 || x.size(0) * x.size(1) == 0 || segments.size(1) == 0,
              "boundary_max_pool: the temporal length must be positive");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "boundary_max_pool: input must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(!segments.is_complex() && segments.scalar_type() != at::kBool,
              "boundary_max_pool: segments must be real numbers, got ", segments.scalar_type());
  TORCH_CHECK(x.device() == segments.device(), "boundary_max_pool: input on ", x.device(),
              " but segments on ", segments.device());
}

// Kernels read segments as float or double: half/bfloat16 widen exactly to float, integers to double.
at::Tensor normalise_segments(const at::Tensor& segments) {
  switch (segments.scalar_type()) {
    case at::kFloat:
    case at::kDouble:
      return segments.contiguous();
    case at::kHalf:
    case at::kBFloat16:
      return segments.to(at::kFloat).contiguous();
    default:
      return segments.to(at::kDouble).contiguous();
  }
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& segments,
                                           bool with_argmax, int64_t algorithm) {
  check_forward_inputs(x, segments);
  TORCH_CHECK(algorithm >= kAuto && algorithm <= kColumnScan, "boundary_max_pool: unknown algorithm ",
              algorithm);
  const at::Tensor input = x.contiguous();
  const at::Tensor bounds = normalise_segments(segments);
  if (x.is_cuda()) {
#ifdef AFSD_BMP_WITH_CUDA
    return forward_cuda(input, bounds, with_argmax, algorithm);
#else
    TORCH_CHECK(false, "boundary_max_pool: this build has no CUDA kernels");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "boundary_max_pool: unsupported device ", x.device());
  return forward_cpu(input, bounds, with_argmax, algorithm);
}

at::Tensor backward(const at::Tensor& grad_output, const at::Tensor& argmax, int64_t length) {
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.sizes() == argmax.sizes(),
              "boundary_max_pool backward: grad_output ", grad_output.sizes(), " and argmax ",
              argmax.sizes(), " must be the same [B, C, S] shape");
  TORCH_CHECK(argmax.scalar_type() == at::kLong, "boundary_max_pool backward: argmax must be int64");
  TORCH_CHECK(grad_output.device() == argmax.device(), "boundary_max_pool backward: device mismatch");
  TORCH_CHECK(length >= 0, "boundary_max_pool backward: negative length");
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor index = argmax.contiguous();
  if (grad.is_cuda()) {
#ifdef AFSD_BMP_WITH_CUDA
    return backward_cuda(grad, index, length);
#else
    TORCH_CHECK(false, "boundary_max_pool: this build has no CUDA kernels");
#endif
  }
  return backward_cpu(grad, index, length);
}

// The official CUDA backward took the temporal size from grad_output (S) instead of the input (T):
// it treats the first B*C*S elements of the flat input and gradient buffers as a [B, C, S] tensor.
// That is exactly the correct forward/backward applied to that reinterpreted view.
at::Tensor legacy_backward(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& segments) {
  check_forward_inputs(x, segments);
  const int64_t batch = x.size(0), channels = x.size(1), length = x.size(2);
  const int64_t num_segments = segments.size(1);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == batch && grad_output.size(1) == channels &&
                  grad_output.size(2) == num_segments,
              "boundary_max_pool legacy backward: grad_output must be [B, C, S], got ", grad_output.sizes());
  TORCH_CHECK(num_segments <= length, "boundary_max_pool legacy backward: needs S <= T (S=", num_segments,
              ", T=", length, "); the official kernel would read out of bounds");
  at::Tensor grad_input = at::zeros({batch * channels * length}, grad_output.options());
  if (grad_input.numel() == 0 || num_segments == 0) return grad_input.view({batch, channels, length});
  const at::Tensor misread = x.contiguous().view({-1}).narrow(0, 0, batch * channels * num_segments)
                                 .view({batch, channels, num_segments});
  const auto pooled = forward(misread, segments, /*with_argmax=*/true, kAuto);
  const at::Tensor grad_misread = backward(grad_output, std::get<1>(pooled), num_segments);
  grad_input.narrow(0, 0, batch * channels * num_segments).copy_(grad_misread.view({-1}));
  return grad_input.view({batch, channels, length});
}

}  // namespace

TORCH_LIBRARY(afsd_bmp, m) {
  m.def("forward(Tensor x, Tensor segments, bool with_argmax=True, int algorithm=0) -> (Tensor, Tensor)");
  m.def("backward(Tensor grad_output, Tensor argmax, int length) -> Tensor");
  m.def("legacy_backward(Tensor grad_output, Tensor x, Tensor segments) -> Tensor");
}

TORCH_LIBRARY_IMPL(afsd_bmp, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
  m.impl("legacy_backward", &legacy_backward);
}

#ifdef AFSD_BMP_WITH_CUDA
TORCH_LIBRARY_IMPL(afsd_bmp, CUDA, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
  m.impl("legacy_backward", &legacy_backward);
}
#endif

}  // namespace afsd_bmp
