// CUDA kernels of the fused CAM ops.
//
// One thread per pixel for the per-pixel ops: it runs the shared math of
// fsae_math.h with a single lane, reading its C+1 channels at stride H*W, so a
// warp's loads of one channel are contiguous (coalesced).  Reductions are
// deterministic: block partials are written to a buffer and summed in a fixed
// order by a second kernel, never with floating-point atomics.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../fsae_kernels.h"
#include "../fsae_math.h"

namespace fsae {
namespace cuda {
namespace {

namespace m = fsae::math;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kChunk = kThreads * 8;  // elements of one map handled by one block in cam_normalize

// Grid for a grid-stride loop over n items: a few waves of blocks, at least one.
// (Only c10 CUDA headers are used: the build needs no cuBLAS / cuSPARSE headers.)
int grid_for(int64_t n) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 16)));
}

// ------------------------------------------------------------ block reductions

template <typename T>
struct MinMax {
  T lo, hi;
};

template <typename T>
__device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ MinMax<T> warp_minmax(MinMax<T> v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T lo = __shfl_down_sync(0xffffffffu, v.lo, offset);
    const T hi = __shfl_down_sync(0xffffffffu, v.hi, offset);
    v.lo = lo < v.lo ? lo : v.lo;
    v.hi = m::max_(v.hi, hi);
  }
  return v;
}

// Sum over the block; the result is valid in thread 0.  Fixed order: deterministic.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[kWarps];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < kWarps ? partial[threadIdx.x] : T(0);
  if (threadIdx.x < 32) v = warp_sum(v);
  return v;
}

// Min and max over the block, returned to every thread.
template <typename T>
__device__ MinMax<T> block_minmax(MinMax<T> v) {
  __shared__ MinMax<T> partial[kWarps];
  __shared__ MinMax<T> result;
  v = warp_minmax(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kWarps ? partial[threadIdx.x] : MinMax<T>{partial[0].lo, partial[0].hi};
    v = warp_minmax(v);
    if (threadIdx.x == 0) result = v;
  }
  __syncthreads();
  return result;
}

// ------------------------------------------------------------ cam_normalize

// Block (map k, chunk j): min / max of relu(x) over the chunk -> stats[k][j].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    map_stats_kernel(const scalar_t* __restrict__ x, int64_t size, int64_t chunks, const bool* __restrict__ present,
                     MinMax<acc_type<scalar_t>>* __restrict__ stats) {
  using T = acc_type<scalar_t>;
  const int64_t map = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  if (present != nullptr && !present[map]) return;  // block-uniform
  const int64_t begin = chunk * kChunk, end = min(size, begin + kChunk);
  MinMax<T> v{std::numeric_limits<T>::infinity(), T(0)};
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const T r = m::relu(static_cast<T>(x[map * size + i]));
    v.lo = r < v.lo ? r : v.lo;
    v.hi = m::max_(v.hi, r);
  }
  v = block_minmax(v);
  if (threadIdx.x == 0) stats[blockIdx.x] = v;
}

// Block (map k, chunk j): reduce the map's chunk stats, then normalise the chunk.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    normalize_kernel(const scalar_t* __restrict__ x, int64_t size, int64_t chunks, const bool* __restrict__ present,
                     const MinMax<acc_type<scalar_t>>* __restrict__ stats, bool minmax, acc_type<scalar_t> eps,
                     scalar_t* __restrict__ out) {
  using T = acc_type<scalar_t>;
  const int64_t map = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int64_t begin = chunk * kChunk, end = min(size, begin + kChunk);
  if (present != nullptr && !present[map]) {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) out[map * size + i] = scalar_t(0);
    return;
  }
  MinMax<T> v{std::numeric_limits<T>::infinity(), T(0)};
  for (int64_t j = threadIdx.x; j < chunks; j += kThreads) {
    const MinMax<T> s = stats[map * chunks + j];
    v.lo = s.lo < v.lo ? s.lo : v.lo;
    v.hi = m::max_(v.hi, s.hi);
  }
  v = block_minmax(v);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const T value = static_cast<T>(x[map * size + i]);
    out[map * size + i] =
        static_cast<scalar_t>(minmax ? m::normalize_minmax(value, v.lo, v.hi, eps) : m::normalize_max(value, v.hi, eps));
  }
}

// ------------------------------------------------------------ cams_to_labels

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    seed_kernel(const scalar_t* __restrict__ x, int64_t batch, int64_t pixels, int classes,
                const bool* __restrict__ present, bool use_power, acc_type<scalar_t> bg_threshold,
                acc_type<scalar_t> bg_power, int64_t* __restrict__ out) {
  using T = acc_type<scalar_t>;
  for (int64_t idx = blockIdx.x * int64_t(kThreads) + threadIdx.x; idx < batch * pixels;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t b = idx / pixels, p = idx % pixels;
    T best;
    int32_t arg;
    m::seed_labels(x + b * classes * pixels + p, pixels, classes, present == nullptr ? nullptr : present + b * classes,
                   use_power, bg_threshold, bg_power, 1, &best, &arg);
    out[idx] = arg;
  }
}

// ------------------------------------------------------------ expansion masks / loss

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    teacher_kernel(const scalar_t* __restrict__ x, int64_t batch, int64_t pixels, int channels,
                   const bool* __restrict__ present, bool exclude, acc_type<scalar_t> conf_threshold,
                   int64_t* __restrict__ label, acc_type<scalar_t>* __restrict__ confidence,
                   bool* __restrict__ conf_mask, bool* __restrict__ fg_mask) {
  using T = acc_type<scalar_t>;
  for (int64_t idx = blockIdx.x * int64_t(kThreads) + threadIdx.x; idx < batch * pixels;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t b = idx / pixels, p = idx % pixels;
    T mx, sumexp, fgmax;
    int32_t arg;
    m::softmax_stats(x + b * channels * pixels + p, pixels, channels, present + b * (channels - 1), exclude, 1, &mx,
                     &sumexp, &arg, &fgmax);
    const T conf = m::confidence(sumexp);
    label[idx] = arg;
    confidence[idx] = conf;
    conf_mask[idx] = conf >= conf_threshold;
    fg_mask[idx] = m::fg_confidence(fgmax, mx, sumexp) >= conf_threshold;
  }
}

// Ring and union masks; with a student (x != nullptr), the weighted CE summed per block.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    ring_loss_kernel(const scalar_t* __restrict__ x, int64_t batch, int64_t height, int64_t width, int channels,
                     const bool* __restrict__ present, bool exclude, int64_t radius,
                     acc_type<scalar_t> ring_threshold, bool separate_boundary, acc_type<scalar_t> boundary_weight,
                     const int64_t* __restrict__ label, const acc_type<scalar_t>* __restrict__ confidence,
                     const bool* __restrict__ conf_mask, const bool* __restrict__ fg_mask,
                     bool* __restrict__ ring_mask, bool* __restrict__ mask, acc_type<scalar_t>* __restrict__ lse,
                     acc_type<scalar_t>* __restrict__ partial) {
  using T = acc_type<scalar_t>;
  const int64_t pixels = height * width;
  T sum = T(0);
  for (int64_t idx = blockIdx.x * int64_t(kThreads) + threadIdx.x; idx < batch * pixels;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t b = idx / pixels, p = idx % pixels;
    const bool ring = m::ring_pixel(fg_mask + b * pixels, height, width, p / width, p % width, radius) &&
                      confidence[idx] >= ring_threshold;
    const bool conf = conf_mask[idx];
    ring_mask[idx] = ring;
    mask[idx] = conf || ring;
    if (x == nullptr) continue;
    const T weight = m::pixel_weight(conf, ring, separate_boundary, boundary_weight);
    T pixel_lse = T(0);
    if (weight != T(0)) {
      T target;
      m::logsumexp_target<1>(x + b * channels * pixels + p, pixels, channels, present + b * (channels - 1), exclude, 1,
                             label + idx, &pixel_lse, &target);
      sum += weight * m::cross_entropy(pixel_lse, target);
    }
    lse[idx] = pixel_lse;
  }
  if (x == nullptr) return;
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// loss = sum(partial) / count, in a fixed order (one block).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finalize_loss_kernel(const T* __restrict__ partial, int n, double count, T* __restrict__ loss) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) sum += static_cast<double>(partial[i]);
  sum = block_sum(sum);
  if (threadIdx.x == 0) *loss = static_cast<T>(sum / count);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(const scalar_t* __restrict__ x, int64_t batch, int64_t pixels, int channels,
                const bool* __restrict__ present, bool exclude, bool separate_boundary,
                acc_type<scalar_t> boundary_weight, const acc_type<scalar_t>* __restrict__ grad_loss, double count,
                const int64_t* __restrict__ label, const acc_type<scalar_t>* __restrict__ lse,
                const bool* __restrict__ conf_mask, const bool* __restrict__ ring_mask, scalar_t* __restrict__ grad) {
  using T = acc_type<scalar_t>;
  const T upstream = static_cast<T>(static_cast<double>(*grad_loss) / count);
  for (int64_t idx = blockIdx.x * int64_t(kThreads) + threadIdx.x; idx < batch * pixels;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t b = idx / pixels, p = idx % pixels;
    const int64_t offset = b * channels * pixels + p;
    const T scale = upstream * m::pixel_weight(conf_mask[idx], ring_mask[idx], separate_boundary, boundary_weight);
    if (scale == T(0)) {
      for (int c = 0; c < channels; ++c) grad[offset + c * pixels] = scalar_t(0);
    } else {
      m::cross_entropy_grad_lanes(x + offset, pixels, channels, present + b * (channels - 1), 1, label + idx,
                                  lse + idx, &scale, grad + offset);
    }
  }
}

}  // namespace

void cam_normalize(const at::Tensor& cams, const at::Tensor& present, bool minmax, double eps, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(cams.device());
  const int64_t maps = cams.size(0) * cams.size(1);
  const int64_t size = cams.size(2) * cams.size(3);
  const int64_t chunks = (size + kChunk - 1) / kChunk;
  const bool* pres = present.defined() ? present.const_data_ptr<bool>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cams.scalar_type(), "fsae::cam_normalize_cuda", [&] {
    using T = acc_type<scalar_t>;
    at::Tensor stats = at::empty({maps * chunks * int64_t(sizeof(MinMax<T>))}, cams.options().dtype(at::kByte));
    auto* stats_p = reinterpret_cast<MinMax<T>*>(stats.mutable_data_ptr<uint8_t>());
    TORCH_CHECK(maps * chunks <= std::numeric_limits<int32_t>::max(), "fsae: cams too large for one launch");
    const auto blocks = static_cast<unsigned int>(maps * chunks);
    map_stats_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(cams.const_data_ptr<scalar_t>(), size, chunks, pres,
                                                                stats_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    normalize_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(cams.const_data_ptr<scalar_t>(), size, chunks, pres,
                                                                stats_p, minmax, static_cast<T>(eps),
                                                                out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void cams_to_labels(const at::Tensor& cams, const at::Tensor& present, bool use_power, double bg_threshold,
                    double bg_power, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(cams.device());
  const int64_t batch = cams.size(0), pixels = cams.size(2) * cams.size(3);
  const bool* pres = present.defined() ? present.const_data_ptr<bool>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cams.scalar_type(), "fsae::cams_to_labels_cuda", [&] {
    using T = acc_type<scalar_t>;
    seed_kernel<scalar_t><<<grid_for(batch * pixels), kThreads, 0, stream>>>(
        cams.const_data_ptr<scalar_t>(), batch, pixels, static_cast<int>(cams.size(1)), pres, use_power,
        static_cast<T>(bg_threshold), static_cast<T>(bg_power), out.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void expansion_forward(const at::Tensor& teacher, const at::Tensor& student, const at::Tensor& present,
                       const ExpansionParams& params, ExpansionOutputs& masks, ExpansionLossOutputs& loss) {
  const c10::cuda::CUDAGuard guard(teacher.device());
  const int64_t batch = teacher.size(0), height = teacher.size(2), width = teacher.size(3);
  const int64_t pixels = height * width;
  const int channels = static_cast<int>(teacher.size(1));
  const int grid = grid_for(batch * pixels);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, teacher.scalar_type(), "fsae::expansion_forward_cuda", [&] {
    using T = acc_type<scalar_t>;
    teacher_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        teacher.const_data_ptr<scalar_t>(), batch, pixels, channels, present.const_data_ptr<bool>(), params.exclude,
        static_cast<T>(params.conf_threshold), masks.pseudo_label.mutable_data_ptr<int64_t>(),
        masks.confidence.mutable_data_ptr<T>(), masks.conf_mask.mutable_data_ptr<bool>(),
        masks.fg_mask.mutable_data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const bool with_student = student.defined();
    at::Tensor partial = with_student ? at::empty({grid}, teacher.options().dtype(masks.confidence.scalar_type()))
                                      : at::Tensor();
    ring_loss_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        with_student ? student.const_data_ptr<scalar_t>() : nullptr, batch, height, width, channels,
        present.const_data_ptr<bool>(), params.exclude, params.ring_kernel / 2, static_cast<T>(params.ring_threshold),
        params.separate_boundary, static_cast<T>(params.boundary_weight),
        masks.pseudo_label.const_data_ptr<int64_t>(), masks.confidence.const_data_ptr<T>(),
        masks.conf_mask.const_data_ptr<bool>(), masks.fg_mask.const_data_ptr<bool>(),
        masks.ring_mask.mutable_data_ptr<bool>(), masks.mask.mutable_data_ptr<bool>(),
        with_student ? loss.lse.mutable_data_ptr<T>() : nullptr,
        with_student ? partial.mutable_data_ptr<T>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (with_student) {
      finalize_loss_kernel<T><<<1, kThreads, 0, stream>>>(partial.const_data_ptr<T>(), grid,
                                                          static_cast<double>(batch * pixels),
                                                          loss.loss.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

void expansion_backward(const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& lse,
                        const at::Tensor& pseudo_label, const at::Tensor& conf_mask, const at::Tensor& ring_mask,
                        const at::Tensor& present, const ExpansionParams& params, at::Tensor& grad) {
  const c10::cuda::CUDAGuard guard(student.device());
  const int64_t batch = student.size(0), pixels = student.size(2) * student.size(3);
  const int channels = static_cast<int>(student.size(1));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "fsae::expansion_backward_cuda", [&] {
    using T = acc_type<scalar_t>;
    grad_kernel<scalar_t><<<grid_for(batch * pixels), kThreads, 0, stream>>>(
        student.const_data_ptr<scalar_t>(), batch, pixels, channels, present.const_data_ptr<bool>(), params.exclude,
        params.separate_boundary, static_cast<T>(params.boundary_weight), grad_loss.const_data_ptr<T>(),
        static_cast<double>(batch * pixels), pseudo_label.const_data_ptr<int64_t>(), lse.const_data_ptr<T>(),
        conf_mask.const_data_ptr<bool>(), ring_mask.const_data_ptr<bool>(), grad.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace fsae
