// Operator registration of the fused CAM ops (torch.ops.fsae.*) and the
// Python module fsae._C.
//
// The schema is defined once; the CPU kernels are always registered, the CUDA
// kernels when the build found a CUDA toolkit (FSAE_WITH_CUDA).  Argument
// checks, contiguity and output allocation live here, shared by both
// backends; the Python front (fsae/ops/functional.py) has already raised
// ValueErrors with friendlier messages, so these TORCH_CHECKs guard direct
// calls of torch.ops.fsae.*.
#include <Python.h>
#include <torch/library.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include "fsae_kernels.h"

namespace fsae {
namespace {

bool has_bool_labels(const std::optional<at::Tensor>& present) {
  return present.has_value() && present->defined();
}

at::Tensor checked_present(const std::optional<at::Tensor>& present, const at::Tensor& ref, int64_t classes) {
  if (!has_bool_labels(present)) return at::Tensor();
  const at::Tensor& p = *present;
  TORCH_CHECK(p.scalar_type() == at::kBool, "fsae: present must be a bool tensor, got ", p.scalar_type());
  TORCH_CHECK(p.dim() == 2 && p.size(0) == ref.size(0) && p.size(1) == classes, "fsae: present must be (B, C) = (",
              ref.size(0), ", ", classes, "), got ", p.sizes());
  TORCH_CHECK(p.device() == ref.device(), "fsae: present must be on ", ref.device(), ", got ", p.device());
  return p.contiguous();
}

void check_maps(const at::Tensor& x, const char* name, int64_t min_channels) {
  TORCH_CHECK(x.dim() == 4, "fsae: ", name, " must be 4-D (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "fsae: ", name, " must be floating point, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) >= min_channels, "fsae: ", name, " needs at least ", min_channels, " channels, got ",
              x.size(1));
}

at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

ExpansionParams make_params(double conf_threshold, double ring_threshold, int64_t ring_kernel, bool exclude,
                            std::optional<double> boundary_weight) {
  TORCH_CHECK(ring_kernel >= 1 && ring_kernel % 2 == 1, "fsae: ring_kernel must be odd and >= 1, got ", ring_kernel);
  TORCH_CHECK(conf_threshold >= 0.0 && conf_threshold <= 1.0, "fsae: conf_threshold must be in [0, 1]");
  TORCH_CHECK(ring_threshold >= 0.0 && ring_threshold <= 1.0, "fsae: ring_threshold must be in [0, 1]");
  return ExpansionParams{conf_threshold, ring_threshold, ring_kernel, exclude, boundary_weight.has_value(),
                         boundary_weight.value_or(0.0)};
}

ExpansionOutputs allocate_masks(const at::Tensor& logits) {
  const auto sizes = std::vector<int64_t>{logits.size(0), logits.size(2), logits.size(3)};
  const auto opts = logits.options();
  return ExpansionOutputs{at::empty(sizes, opts.dtype(at::kLong)), at::empty(sizes, opts.dtype(acc_dtype(logits))),
                          at::empty(sizes, opts.dtype(at::kBool)), at::empty(sizes, opts.dtype(at::kBool)),
                          at::empty(sizes, opts.dtype(at::kBool)), at::empty(sizes, opts.dtype(at::kBool))};
}

using MaskTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using LossTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// One set of wrappers per backend, instantiated with that backend's kernels.
template <bool kCuda>
struct Ops {
#ifdef FSAE_WITH_CUDA
#define FSAE_KERNEL(name) (kCuda ? &::fsae::cuda::name : &::fsae::cpu::name)
#else
#define FSAE_KERNEL(name) (&::fsae::cpu::name)
#endif

  static at::Tensor cam_normalize(const at::Tensor& cams, const std::optional<at::Tensor>& present, bool minmax,
                                  double eps) {
    check_maps(cams, "cams", 1);
    TORCH_CHECK(eps >= 0.0, "fsae: eps must be >= 0, got ", eps);
    const at::Tensor x = cams.contiguous();
    const at::Tensor p = checked_present(present, x, x.size(1));
    at::Tensor out = at::empty_like(x);
    if (x.numel() > 0) FSAE_KERNEL(cam_normalize)(x, p, minmax, eps, out);
    return out;
  }

  static at::Tensor cams_to_labels(const at::Tensor& cams, const std::optional<at::Tensor>& present,
                                   std::optional<double> bg_threshold, std::optional<double> bg_power) {
    check_maps(cams, "norm_cams", 1);
    TORCH_CHECK(bg_threshold.has_value() != bg_power.has_value(), "fsae: give exactly one of bg_threshold, bg_power");
    const at::Tensor x = cams.contiguous();
    const at::Tensor p = checked_present(present, x, x.size(1));
    at::Tensor out = at::empty({x.size(0), x.size(2), x.size(3)}, x.options().dtype(at::kLong));
    if (out.numel() > 0) {
      FSAE_KERNEL(cams_to_labels)(x, p, bg_power.has_value(), bg_threshold.value_or(0.0), bg_power.value_or(0.0), out);
    }
    return out;
  }

  static MaskTuple expansion_masks(const at::Tensor& teacher, const at::Tensor& present, double conf_threshold,
                                   double ring_threshold, int64_t ring_kernel, bool exclude) {
    check_maps(teacher, "teacher_logits", 2);
    const ExpansionParams params = make_params(conf_threshold, ring_threshold, ring_kernel, exclude, std::nullopt);
    const at::Tensor t = teacher.contiguous();
    const at::Tensor p = checked_present(present, t, t.size(1) - 1);
    TORCH_CHECK(p.defined(), "fsae: expansion_masks needs labels");
    ExpansionOutputs masks = allocate_masks(t);
    ExpansionLossOutputs none;
    if (masks.mask.numel() > 0) FSAE_KERNEL(expansion_forward)(t, at::Tensor(), p, params, masks, none);
    return {masks.pseudo_label, masks.confidence, masks.conf_mask, masks.ring_mask, masks.mask};
  }

  static LossTuple expansion_loss_forward(const at::Tensor& student, const at::Tensor& teacher,
                                          const at::Tensor& present, double conf_threshold, double ring_threshold,
                                          int64_t ring_kernel, bool exclude, std::optional<double> boundary_weight) {
    check_maps(teacher, "teacher_logits", 2);
    check_maps(student, "student_logits", 2);
    TORCH_CHECK(student.sizes() == teacher.sizes(), "fsae: student and teacher logits differ in shape: ",
                student.sizes(), " vs ", teacher.sizes());
    TORCH_CHECK(student.scalar_type() == teacher.scalar_type(), "fsae: student and teacher logits differ in dtype");
    TORCH_CHECK(student.device() == teacher.device(), "fsae: student and teacher logits are on different devices");
    TORCH_CHECK(student.numel() > 0, "fsae: expansion_loss needs at least one pixel");
    const ExpansionParams params = make_params(conf_threshold, ring_threshold, ring_kernel, exclude, boundary_weight);
    const at::Tensor s = student.contiguous(), t = teacher.contiguous();
    const at::Tensor p = checked_present(present, t, t.size(1) - 1);
    TORCH_CHECK(p.defined(), "fsae: expansion_loss needs labels");
    ExpansionOutputs masks = allocate_masks(t);
    ExpansionLossOutputs loss{at::zeros({}, s.options().dtype(acc_dtype(s))),
                              at::empty({s.size(0), s.size(2), s.size(3)}, s.options().dtype(acc_dtype(s)))};
    FSAE_KERNEL(expansion_forward)(t, s, p, params, masks, loss);
    return {loss.loss, loss.lse, masks.pseudo_label, masks.confidence, masks.conf_mask, masks.ring_mask, masks.mask};
  }

  static at::Tensor expansion_loss_backward(const at::Tensor& grad_loss, const at::Tensor& student,
                                            const at::Tensor& lse, const at::Tensor& pseudo_label,
                                            const at::Tensor& conf_mask, const at::Tensor& ring_mask,
                                            const at::Tensor& present, bool exclude,
                                            std::optional<double> boundary_weight) {
    check_maps(student, "student_logits", 2);
    TORCH_CHECK(grad_loss.numel() == 1, "fsae: grad_loss must be a scalar");
    TORCH_CHECK(grad_loss.device() == student.device(), "fsae: grad_loss must be on ", student.device());
    const ExpansionParams params = make_params(0.0, 0.0, 1, exclude, boundary_weight);
    const at::Tensor s = student.contiguous();
    const at::Tensor p = checked_present(present, s, s.size(1) - 1);
    TORCH_CHECK(p.defined(), "fsae: expansion_loss_backward needs labels");
    at::Tensor grad = at::empty_like(s);
    FSAE_KERNEL(expansion_backward)(grad_loss.to(acc_dtype(s)), s, lse.contiguous(), pseudo_label.contiguous(),
                                    conf_mask.contiguous(), ring_mask.contiguous(), p, params, grad);
    return grad;
  }
#undef FSAE_KERNEL
};

template <bool kCuda>
void register_kernels(torch::Library& m) {
  m.impl("cam_normalize", &Ops<kCuda>::cam_normalize);
  m.impl("cams_to_labels", &Ops<kCuda>::cams_to_labels);
  m.impl("expansion_masks", &Ops<kCuda>::expansion_masks);
  m.impl("expansion_loss_forward", &Ops<kCuda>::expansion_loss_forward);
  m.impl("expansion_loss_backward", &Ops<kCuda>::expansion_loss_backward);
}

}  // namespace

TORCH_LIBRARY(fsae, m) {
  m.def("cam_normalize(Tensor cams, Tensor? present, bool minmax, float eps) -> Tensor");
  m.def("cams_to_labels(Tensor norm_cams, Tensor? present, float? bg_threshold, float? bg_power) -> Tensor");
  m.def(
      "expansion_masks(Tensor teacher_logits, Tensor present, float conf_threshold, float ring_threshold, "
      "int ring_kernel, bool exclude) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "expansion_loss_forward(Tensor student_logits, Tensor teacher_logits, Tensor present, float conf_threshold, "
      "float ring_threshold, int ring_kernel, bool exclude, float? boundary_weight) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "expansion_loss_backward(Tensor grad_loss, Tensor student_logits, Tensor lse, Tensor pseudo_label, "
      "Tensor conf_mask, Tensor ring_mask, Tensor present, bool exclude, float? boundary_weight) -> Tensor");
}

TORCH_LIBRARY_IMPL(fsae, CPU, m) {
  register_kernels<false>(m);
}

#ifdef FSAE_WITH_CUDA
TORCH_LIBRARY_IMPL(fsae, CUDA, m) {
  register_kernels<true>(m);
}
#endif

}  // namespace fsae

// ------------------------------------------------------------------ fsae._C

#ifndef FSAE_CUDA_ARCHS
#define FSAE_CUDA_ARCHS ""
#endif

namespace {

PyObject* cuda_compiled(PyObject*, PyObject*) {
#ifdef FSAE_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyObject* cuda_archs(PyObject*, PyObject*) {
  return PyUnicode_FromString(FSAE_CUDA_ARCHS);
}

PyObject* openmp(PyObject*, PyObject*) {
#ifdef _OPENMP
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cuda_compiled", cuda_compiled, METH_NOARGS, "True when the CUDA kernels were compiled in."},
    {"cuda_archs", cuda_archs, METH_NOARGS, "TORCH_CUDA_ARCH_LIST the CUDA kernels were built for ('' without CUDA)."},
    {"openmp", openmp, METH_NOARGS, "True when the CPU kernels run multi-threaded (OpenMP)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fsae fused CAM ops; importing registers torch.ops.fsae.*", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module_def);
}
