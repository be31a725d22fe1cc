// Device kernels of the fused CAM ops.  ops.cpp checks arguments, makes the
// inputs contiguous and allocates the outputs; the functions below only
// compute, on the CPU (csrc/cpu) or on CUDA (csrc/cuda).
//
// Layouts: CAMs / logits are contiguous NCHW; `present` is a contiguous
// (B, C) bool tensor (undefined for "no labels" where allowed); per-pixel
// outputs are contiguous (B, H, W).
#pragma once

#include <ATen/core/Tensor.h>

#include <type_traits>

namespace fsae {

// Accumulate type: float for half / bfloat16 / float storage, double for double.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct ExpansionParams {
  double conf_threshold;
  double ring_threshold;
  int64_t ring_kernel;
  bool exclude;            // absent = "exclude" (-inf) instead of "zero"
  bool separate_boundary;  // boundary_weight given: w = conf + boundary_weight * ring
  double boundary_weight;
};

// Outputs of the teacher side, all (B, H, W).  `fg_mask` is scratch.
struct ExpansionOutputs {
  at::Tensor pseudo_label;  // int64
  at::Tensor confidence;    // acc dtype
  at::Tensor conf_mask;     // bool
  at::Tensor ring_mask;     // bool
  at::Tensor mask;          // bool
  at::Tensor fg_mask;       // bool
};

// Student side of the fused loss.  `student` undefined = masks only.
struct ExpansionLossOutputs {
  at::Tensor loss;  // 0-d, acc dtype: sum(w * CE) / (B * H * W)
  at::Tensor lse;   // (B, H, W) acc dtype, logsumexp of the masked student logits
};

#define FSAE_DECLARE_KERNELS(ns)                                                                           \
  namespace ns {                                                                                           \
  void cam_normalize(const at::Tensor& cams, const at::Tensor& present, bool minmax, double eps,           \
                     at::Tensor& out);                                                                     \
  void cams_to_labels(const at::Tensor& cams, const at::Tensor& present, bool use_power, double bg_threshold, \
                      double bg_power, at::Tensor& out);                                                   \
  void expansion_forward(const at::Tensor& teacher, const at::Tensor& student, const at::Tensor& present,  \
                         const ExpansionParams& params, ExpansionOutputs& masks, ExpansionLossOutputs& loss); \
  void expansion_backward(const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& lse,    \
                          const at::Tensor& pseudo_label, const at::Tensor& conf_mask,                     \
                          const at::Tensor& ring_mask, const at::Tensor& present,                          \
                          const ExpansionParams& params, at::Tensor& grad);                                \
  }

FSAE_DECLARE_KERNELS(cpu)
#ifdef FSAE_WITH_CUDA
FSAE_DECLARE_KERNELS(cuda)
#endif

#undef FSAE_DECLARE_KERNELS

}  // namespace fsae
