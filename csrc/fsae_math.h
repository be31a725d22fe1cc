// Per-pixel math of the fused CAM ops, shared by the CPU and CUDA kernels.
//
// Everything here is FSAE_HD (host + device, force-inlined) and free of ATen
// calls, so the CPU build compiles and tests exactly the code the CUDA
// kernels run.  The per-pixel routines are written over a small "lane" array
// of `n` consecutive pixels of one image (pixel i of channel c at
// `x[c * stride + i]`): a CUDA thread calls them with n = 1, the CPU kernels
// with a tile of pixels, where the inner `for i < n` loops vectorise
// (channel-outer, pixel-inner, contiguous loads for NCHW data).
//
// Math follows docs/method.md §2 and §6; see fsae/ops/reference.py for the same in
// PyTorch.  `T` is the accumulate type (float, or double for float64 input);
// `scalar_t` the storage type (float, double, c10::Half, c10::BFloat16).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define FSAE_HD __host__ __device__ __forceinline__
#else
#define FSAE_HD inline __attribute__((always_inline))
#endif

namespace fsae {
namespace math {

template <typename T>
FSAE_HD T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

template <typename T>
FSAE_HD T max_(T a, T b) {
  return a > b ? a : b;
}

// ---------------------------------------------------------------------------
// exp / log.  float: branch-free Cephes polynomials (relative error ~1e-7)
// that the host compiler vectorises and the device runs as plain FMAs, so
// CPU and GPU evaluate the same approximation.  double: the libm functions.
// ---------------------------------------------------------------------------

FSAE_HD float bits_to_float(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  return __builtin_bit_cast(float, bits);
#endif
}

FSAE_HD int32_t float_to_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  return __builtin_bit_cast(int32_t, x);
#endif
}

// exp(x) for float; exp(x) = 0 below -87.33 (denormal results are flushed),
// exp(+large) saturates at ~1.6e38.  exp(-inf) = 0.
FSAE_HD float exp(float x) {
  const float underflow = x < -87.33654f ? 0.0f : 1.0f;
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln 2) via the 1.5 * 2^23 trick; r = x - n ln 2 in two parts.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n, n in [-126, 127] after the clamps.
  const float scale = bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  return p * scale * underflow;
}

FSAE_HD double exp(double x) {
  return ::exp(x);
}

// Natural log for positive, normal float input (the callers guarantee it).
FSAE_HD float log(float x) {
  const int32_t bits = float_to_bits(x);
  float e = static_cast<float>((bits >> 23) - 127);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  // Centre the mantissa on 1: m in [sqrt(1/2), sqrt(2)).
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const float f = m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y = y - 2.12194440e-4f * e;
  y = y - 0.5f * z;
  return f + y + 0.693359375f * e;
}

FSAE_HD double log(double x) {
  return ::log(x);
}

// base ** power for base >= 0 (clamped) and power >= 0, with 0 ** 0 = 1.
template <typename T>
FSAE_HD T pow_nonneg(T base, T power) {
  const T tiny = std::numeric_limits<T>::min();
  const T value = math::exp(power * math::log(base > tiny ? base : tiny));
  const T at_zero = power == T(0) ? T(1) : T(0);
  return base > T(0) ? value : at_zero;
}

// ---------------------------------------------------------------------------
// Label masking (docs/method.md §2).  Background = channel 0 is never masked; an
// absent class gets logit 0 ("zero", the original's z_k * y_k) or -inf
// ("exclude").  `present` is the (C) bool row of one image.
// ---------------------------------------------------------------------------

template <typename T>
FSAE_HD T absent_logit(bool exclude) {
  return exclude ? neg_inf<T>() : T(0);
}

FSAE_HD bool channel_present(const bool* present, int c) {
  return c == 0 || present[c - 1];
}

// ---------------------------------------------------------------------------
// Softmax statistics of label-masked logits over C+1 channels, per lane:
//   m      = max_c l_c,          arg = argmax_c l_c (ties: lowest index)
//   sumexp = sum_c exp(l_c - m), fgmax = max_{c>=1} l_c
// From these: confidence = max_c p_c = 1 / sumexp,
//             fg confidence = exp(fgmax - m) / sumexp,
//             logsumexp = m + log(sumexp).
// ---------------------------------------------------------------------------

template <typename scalar_t, typename T>
FSAE_HD void softmax_stats(const scalar_t* __restrict__ x, int64_t stride, int channels,
                           const bool* __restrict__ present, bool exclude, int n,
                           T* __restrict__ m, T* __restrict__ sumexp, int32_t* __restrict__ arg,
                           T* __restrict__ fgmax) {
  for (int i = 0; i < n; ++i) {
    m[i] = static_cast<T>(x[i]);
    arg[i] = 0;
    fgmax[i] = neg_inf<T>();
    sumexp[i] = T(0);
  }
  const T absent = absent_logit<T>(exclude);
  for (int c = 1; c < channels; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    const bool on = present[c - 1];
    for (int i = 0; i < n; ++i) {
      const T l = on ? static_cast<T>(xc[i]) : absent;
      arg[i] = l > m[i] ? c : arg[i];
      m[i] = max_(m[i], l);
      fgmax[i] = max_(fgmax[i], l);
    }
  }
  for (int c = 0; c < channels; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    const bool on = channel_present(present, c);
    for (int i = 0; i < n; ++i) {
      const T l = on ? static_cast<T>(xc[i]) : absent;
      sumexp[i] += math::exp(l - m[i]);
    }
  }
}

template <typename T>
FSAE_HD T confidence(T sumexp) {
  return T(1) / sumexp;
}

template <typename T>
FSAE_HD T fg_confidence(T fgmax, T m, T sumexp) {
  return math::exp(fgmax - m) / sumexp;
}

// Per lane: lse = logsumexp_c l_c and target_logit = l[target] of the
// label-masked logits (the student side of the FSAE cross-entropy).
template <int kLanes, typename scalar_t, typename T>
FSAE_HD void logsumexp_target(const scalar_t* __restrict__ x, int64_t stride, int channels,
                              const bool* __restrict__ present, bool exclude, int n,
                              const int64_t* __restrict__ target, T* __restrict__ lse,
                              T* __restrict__ target_logit) {
  const T absent = absent_logit<T>(exclude);
  T m[kLanes];
  T sumexp[kLanes];
  for (int i = 0; i < n; ++i) {
    m[i] = neg_inf<T>();
    sumexp[i] = T(0);
    target_logit[i] = T(0);
  }
  for (int c = 0; c < channels; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    const bool on = channel_present(present, c);
    for (int i = 0; i < n; ++i) {
      const T l = on ? static_cast<T>(xc[i]) : absent;
      m[i] = max_(m[i], l);
      target_logit[i] = target[i] == c ? l : target_logit[i];
    }
  }
  for (int c = 0; c < channels; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    const bool on = channel_present(present, c);
    for (int i = 0; i < n; ++i) {
      const T l = on ? static_cast<T>(xc[i]) : absent;
      sumexp[i] += math::exp(l - m[i]);
    }
  }
  for (int i = 0; i < n; ++i) {
    lse[i] = m[i] + math::log(sumexp[i]);
  }
}

// Per-pixel cross-entropy of the masked student logits against the teacher's label.
template <typename T>
FSAE_HD T cross_entropy(T lse, T target_logit) {
  return lse - target_logit;
}

// Loss weight of a pixel: mask (union form) or conf + lambda_b * ring.
template <typename T>
FSAE_HD T pixel_weight(bool conf, bool ring, bool separate_boundary, T boundary_weight) {
  const T union_w = (conf || ring) ? T(1) : T(0);
  const T split_w = (conf ? T(1) : T(0)) + (ring ? boundary_weight : T(0));
  return separate_boundary ? split_w : union_w;
}

// d(scale * CE)/dl_c = scale * (softmax_c - [c == target]) for a present channel c.
template <typename T>
FSAE_HD T cross_entropy_grad(T l, T lse, bool is_target, T scale) {
  return scale * (math::exp(l - lse) - (is_target ? T(1) : T(0)));
}

// Per lane: the gradient of scale * CE w.r.t. the raw logits.  Absent channels get 0
// in both absent modes (their masked logit is a constant).
template <typename scalar_t, typename T>
FSAE_HD void cross_entropy_grad_lanes(const scalar_t* __restrict__ x, int64_t stride, int channels,
                                      const bool* __restrict__ present, int n, const int64_t* __restrict__ target,
                                      const T* __restrict__ lse, const T* __restrict__ scale,
                                      scalar_t* __restrict__ grad) {
  for (int c = 0; c < channels; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    scalar_t* __restrict__ gc = grad + c * stride;
    if (!channel_present(present, c)) {
      for (int i = 0; i < n; ++i) gc[i] = scalar_t(0);
      continue;
    }
    for (int i = 0; i < n; ++i) {
      gc[i] = static_cast<scalar_t>(cross_entropy_grad(static_cast<T>(xc[i]), lse[i], target[i] == c, scale[i]));
    }
  }
}

// ---------------------------------------------------------------------------
// Spatial expansion: is pixel (h, w) in maxpool_k(fg) but not in fg?  Window
// of radius r = k / 2, stride 1, zero padding (outside pixels count as 0).
// `fg` is the (H, W) foreground-confident mask of one image.
// ---------------------------------------------------------------------------

FSAE_HD bool ring_pixel(const bool* __restrict__ fg, int64_t height, int64_t width, int64_t h, int64_t w,
                        int64_t radius) {
  if (fg[h * width + w]) return false;
  const int64_t h0 = h - radius < 0 ? 0 : h - radius;
  const int64_t h1 = h + radius >= height ? height - 1 : h + radius;
  const int64_t w0 = w - radius < 0 ? 0 : w - radius;
  const int64_t w1 = w + radius >= width ? width - 1 : w + radius;
  for (int64_t y = h0; y <= h1; ++y) {
    for (int64_t x = w0; x <= w1; ++x) {
      if (fg[y * width + x]) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// CAM normalisation (per (b, c) map; lo / hi = min / max of relu(x) over it).
// ---------------------------------------------------------------------------

template <typename T>
FSAE_HD T relu(T x) {
  return x > T(0) ? x : T(0);  // also maps -0 and NaN to +0
}

template <typename T>
FSAE_HD T normalize_max(T x, T hi, T eps) {
  return relu(x) / (hi + eps);
}

template <typename T>
FSAE_HD T normalize_minmax(T x, T lo, T hi, T eps) {
  return relu(relu(x) - lo - eps) / (hi - lo + eps);
}

// ---------------------------------------------------------------------------
// Seeds (docs/method.md §6): per lane, the argmax over [background, classes] of
// normalised CAMs (C channels, absent classes count as 0).  Background is the
// constant `bg_threshold`, or max(1 - max_c cam, 0) ** bg_power.
// ---------------------------------------------------------------------------

template <typename scalar_t, typename T>
FSAE_HD void seed_labels(const scalar_t* __restrict__ x, int64_t stride, int classes,
                         const bool* __restrict__ present, bool use_power, T bg_threshold, T bg_power, int n,
                         T* __restrict__ best, int32_t* __restrict__ arg) {
  for (int i = 0; i < n; ++i) {
    best[i] = neg_inf<T>();
    arg[i] = 0;
  }
  for (int c = 0; c < classes; ++c) {
    const scalar_t* __restrict__ xc = x + c * stride;
    const bool on = present == nullptr || present[c];
    for (int i = 0; i < n; ++i) {
      const T v = on ? static_cast<T>(xc[i]) : T(0);
      arg[i] = v > best[i] ? c + 1 : arg[i];
      best[i] = max_(best[i], v);
    }
  }
  for (int i = 0; i < n; ++i) {
    const T background = use_power ? pow_nonneg(T(1) - best[i], bg_power) : bg_threshold;
    arg[i] = background >= best[i] ? 0 : arg[i];
  }
}

}  // namespace math
}  // namespace fsae
