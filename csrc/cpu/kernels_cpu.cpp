// CPU kernels of the fused CAM ops.
//
// Work is split into tiles of up to kTile consecutive pixels of one image and
// spread over threads with at::parallel_for.  Each tile runs the shared
// per-pixel math of fsae_math.h channel-outer / pixel-inner, so the inner
// loops are contiguous and vectorise.  The tile functions are compiled twice
// on x86-64 (baseline and x86-64-v3 = AVX2 + FMA) and picked at load time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../fsae_kernels.h"
#include "../fsae_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FSAE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FSAE_CPU_CLONES
#endif

namespace fsae {
namespace cpu {
namespace {

namespace m = fsae::math;

constexpr int kTile = 64;

// Tiles of one image: pixels [p0, p0 + n) of image b.
struct Tiling {
  int64_t batch;
  int64_t pixels;  // H * W
  int64_t per_image;

  Tiling(int64_t batch_, int64_t pixels_)
      : batch(batch_), pixels(pixels_), per_image((pixels_ + kTile - 1) / kTile) {}
  int64_t count() const { return batch * per_image; }
  int64_t image(int64_t t) const { return t / per_image; }
  int64_t first(int64_t t) const { return (t % per_image) * kTile; }
  int tile_size(int64_t t) const { return static_cast<int>(std::min<int64_t>(kTile, pixels - first(t))); }
};

// Tiles per parallel_for chunk: enough work to amortise scheduling.
int64_t grain(int64_t channels) {
  return std::max<int64_t>(1, 256 / std::max<int64_t>(channels, 1));
}

// ----------------------------------------------------------------- cam_normalize

template <typename scalar_t>
FSAE_CPU_CLONES void normalize_map(const scalar_t* __restrict__ x, int64_t size, bool minmax,
                                   acc_type<scalar_t> eps, scalar_t* __restrict__ out) {
  using T = acc_type<scalar_t>;
  // Per-lane running min / max, then a final reduction: vectorises without reassociation flags.
  T lo[kTile], hi[kTile];
  for (int i = 0; i < kTile; ++i) {
    lo[i] = std::numeric_limits<T>::infinity();
    hi[i] = T(0);
  }
  int64_t j = 0;
  for (; j + kTile <= size; j += kTile) {
    for (int i = 0; i < kTile; ++i) {
      const T v = m::relu(static_cast<T>(x[j + i]));
      lo[i] = v < lo[i] ? v : lo[i];
      hi[i] = m::max_(hi[i], v);
    }
  }
  for (int i = 0; j + i < size; ++i) {
    const T v = m::relu(static_cast<T>(x[j + i]));
    lo[i] = v < lo[i] ? v : lo[i];
    hi[i] = m::max_(hi[i], v);
  }
  T map_lo = lo[0], map_hi = hi[0];
  for (int i = 1; i < kTile; ++i) {
    map_lo = lo[i] < map_lo ? lo[i] : map_lo;
    map_hi = m::max_(map_hi, hi[i]);
  }
  if (minmax) {
    for (int64_t k = 0; k < size; ++k) {
      out[k] = static_cast<scalar_t>(m::normalize_minmax(static_cast<T>(x[k]), map_lo, map_hi, eps));
    }
  } else {
    for (int64_t k = 0; k < size; ++k) {
      out[k] = static_cast<scalar_t>(m::normalize_max(static_cast<T>(x[k]), map_hi, eps));
    }
  }
}

// ----------------------------------------------------------------- cams_to_labels

template <typename scalar_t>
FSAE_CPU_CLONES void seed_tile(const scalar_t* __restrict__ x, int64_t stride, int classes,
                               const bool* __restrict__ present, bool use_power, acc_type<scalar_t> bg_threshold,
                               acc_type<scalar_t> bg_power, int n, int64_t* __restrict__ out) {
  using T = acc_type<scalar_t>;
  T best[kTile];
  int32_t arg[kTile];
  m::seed_labels(x, stride, classes, present, use_power, bg_threshold, bg_power, n, best, arg);
  for (int i = 0; i < n; ++i) out[i] = arg[i];
}

// ----------------------------------------------------------------- expansion masks / loss

// Teacher pass: softmax statistics -> pseudo label, confidence, conf mask, fg mask.
template <typename scalar_t>
FSAE_CPU_CLONES void teacher_tile(const scalar_t* __restrict__ x, int64_t stride, int channels,
                                  const bool* __restrict__ present, bool exclude, acc_type<scalar_t> conf_threshold,
                                  int n, int64_t* __restrict__ label, acc_type<scalar_t>* __restrict__ confidence,
                                  bool* __restrict__ conf_mask, bool* __restrict__ fg_mask) {
  using T = acc_type<scalar_t>;
  T mx[kTile], sumexp[kTile], fgmax[kTile];
  int32_t arg[kTile];
  m::softmax_stats(x, stride, channels, present, exclude, n, mx, sumexp, arg, fgmax);
  for (int i = 0; i < n; ++i) {
    const T conf = m::confidence(sumexp[i]);
    label[i] = arg[i];
    confidence[i] = conf;
    conf_mask[i] = conf >= conf_threshold;
    fg_mask[i] = m::fg_confidence(fgmax[i], mx[i], sumexp[i]) >= conf_threshold;
  }
}

// Student pass over one tile whose weights are known: returns sum(w * CE), writes lse.
template <typename scalar_t>
FSAE_CPU_CLONES acc_type<scalar_t> student_tile(const scalar_t* __restrict__ x, int64_t stride, int channels,
                                                const bool* __restrict__ present, bool exclude, int n,
                                                const int64_t* __restrict__ label,
                                                const acc_type<scalar_t>* __restrict__ weight,
                                                acc_type<scalar_t>* __restrict__ lse) {
  using T = acc_type<scalar_t>;
  T target[kTile];
  m::logsumexp_target<kTile>(x, stride, channels, present, exclude, n, label, lse, target);
  T sum = T(0);
  for (int i = 0; i < n; ++i) sum += weight[i] * m::cross_entropy(lse[i], target[i]);
  return sum;
}

template <typename scalar_t>
FSAE_CPU_CLONES void grad_tile(const scalar_t* __restrict__ x, int64_t stride, int channels,
                               const bool* __restrict__ present, int n, const int64_t* __restrict__ label,
                               const acc_type<scalar_t>* __restrict__ lse, const acc_type<scalar_t>* __restrict__ scale,
                               scalar_t* __restrict__ grad) {
  m::cross_entropy_grad_lanes(x, stride, channels, present, n, label, lse, scale, grad);
}

template <typename scalar_t>
void zero_channels(scalar_t* grad, int64_t stride, int channels, int n) {
  for (int c = 0; c < channels; ++c) std::fill_n(grad + c * stride, n, scalar_t(0));
}

}  // namespace

void cam_normalize(const at::Tensor& cams, const at::Tensor& present, bool minmax, double eps, at::Tensor& out) {
  const int64_t maps = cams.size(0) * cams.size(1);
  const int64_t size = cams.size(2) * cams.size(3);
  const bool* pres = present.defined() ? present.data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cams.scalar_type(), "fsae::cam_normalize", [&] {
    const scalar_t* x = cams.const_data_ptr<scalar_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    const auto e = static_cast<acc_type<scalar_t>>(eps);
    at::parallel_for(0, maps, std::max<int64_t>(1, 32768 / std::max<int64_t>(size, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        if (pres != nullptr && !pres[k]) {
          std::fill_n(y + k * size, size, scalar_t(0));
        } else {
          normalize_map(x + k * size, size, minmax, e, y + k * size);
        }
      }
    });
  });
}

void cams_to_labels(const at::Tensor& cams, const at::Tensor& present, bool use_power, double bg_threshold,
                    double bg_power, at::Tensor& out) {
  const int64_t classes = cams.size(1);
  const Tiling tiles(cams.size(0), cams.size(2) * cams.size(3));
  const bool* pres = present.defined() ? present.data_ptr<bool>() : nullptr;
  int64_t* labels = out.mutable_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cams.scalar_type(), "fsae::cams_to_labels", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* x = cams.const_data_ptr<scalar_t>();
    at::parallel_for(0, tiles.count(), grain(classes), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.image(t), p0 = tiles.first(t);
        seed_tile(x + b * classes * tiles.pixels + p0, tiles.pixels, static_cast<int>(classes),
                  pres == nullptr ? nullptr : pres + b * classes, use_power, static_cast<T>(bg_threshold),
                  static_cast<T>(bg_power), tiles.tile_size(t), labels + b * tiles.pixels + p0);
      }
    });
  });
}

void expansion_forward(const at::Tensor& teacher, const at::Tensor& student, const at::Tensor& present,
                       const ExpansionParams& params, ExpansionOutputs& masks, ExpansionLossOutputs& loss) {
  const int64_t channels = teacher.size(1), height = teacher.size(2), width = teacher.size(3);
  const Tiling tiles(teacher.size(0), height * width);
  const int64_t classes = channels - 1;
  const int64_t radius = params.ring_kernel / 2;
  const bool* pres = present.data_ptr<bool>();
  int64_t* label = masks.pseudo_label.mutable_data_ptr<int64_t>();
  bool* conf_mask = masks.conf_mask.mutable_data_ptr<bool>();
  bool* ring_mask = masks.ring_mask.mutable_data_ptr<bool>();
  bool* mask = masks.mask.mutable_data_ptr<bool>();
  bool* fg_mask = masks.fg_mask.mutable_data_ptr<bool>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, teacher.scalar_type(), "fsae::expansion_forward", [&] {
    using T = acc_type<scalar_t>;
    T* confidence = masks.confidence.mutable_data_ptr<T>();
    const scalar_t* xt = teacher.const_data_ptr<scalar_t>();
    const T conf_threshold = static_cast<T>(params.conf_threshold);
    const T ring_threshold = static_cast<T>(params.ring_threshold);
    const T boundary_weight = static_cast<T>(params.boundary_weight);

    // Pass 1: teacher statistics (the ring needs the neighbours' fg mask, hence two passes).
    at::parallel_for(0, tiles.count(), grain(channels), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.image(t), p = b * tiles.pixels + tiles.first(t);
        teacher_tile(xt + b * channels * tiles.pixels + tiles.first(t), tiles.pixels, static_cast<int>(channels),
                     pres + b * classes, params.exclude, conf_threshold, tiles.tile_size(t), label + p,
                     confidence + p, conf_mask + p, fg_mask + p);
      }
    });

    // Pass 2: ring and union masks; with a student, the weighted CE per tile.
    const bool with_student = student.defined();
    const scalar_t* xs = with_student ? student.const_data_ptr<scalar_t>() : nullptr;
    T* lse = with_student ? loss.lse.mutable_data_ptr<T>() : nullptr;
    std::vector<double> partial(with_student ? tiles.count() : 0, 0.0);
    at::parallel_for(0, tiles.count(), grain(channels), [&](int64_t begin, int64_t end) {
      T weight[kTile];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.image(t), p0 = tiles.first(t), p = b * tiles.pixels + p0;
        const int n = tiles.tile_size(t);
        const bool* fg = fg_mask + b * tiles.pixels;
        bool any = false;
        for (int i = 0; i < n; ++i) {
          const int64_t q = p0 + i;
          const bool ring = m::ring_pixel(fg, height, width, q / width, q % width, radius) &&
                            confidence[p + i] >= ring_threshold;
          ring_mask[p + i] = ring;
          mask[p + i] = conf_mask[p + i] || ring;
          weight[i] = m::pixel_weight(conf_mask[p + i], ring, params.separate_boundary, boundary_weight);
          any = any || weight[i] != T(0);
        }
        if (!with_student) continue;
        if (any) {
          partial[t] = student_tile(xs + b * channels * tiles.pixels + p0, tiles.pixels, static_cast<int>(channels),
                                    pres + b * classes, params.exclude, n, label + p, weight, lse + p);
        } else {
          std::fill_n(lse + p, n, T(0));
        }
      }
    });
    if (with_student) {
      // Fixed-order sum of the tile partials: the same bits for any thread count.
      double total = 0.0;
      for (double v : partial) total += v;
      loss.loss.fill_(total / static_cast<double>(tiles.batch * tiles.pixels));
    }
  });
}

void expansion_backward(const at::Tensor& grad_loss, const at::Tensor& student, const at::Tensor& lse,
                        const at::Tensor& pseudo_label, const at::Tensor& conf_mask, const at::Tensor& ring_mask,
                        const at::Tensor& present, const ExpansionParams& params, at::Tensor& grad) {
  const int64_t channels = student.size(1);
  const int64_t classes = channels - 1;
  const Tiling tiles(student.size(0), student.size(2) * student.size(3));
  const bool* pres = present.data_ptr<bool>();
  const int64_t* label = pseudo_label.const_data_ptr<int64_t>();
  const bool* cmask = conf_mask.const_data_ptr<bool>();
  const bool* rmask = ring_mask.const_data_ptr<bool>();
  const double upstream = grad_loss.item<double>() / static_cast<double>(tiles.batch * tiles.pixels);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, student.scalar_type(), "fsae::expansion_backward", [&] {
    using T = acc_type<scalar_t>;
    const scalar_t* xs = student.const_data_ptr<scalar_t>();
    const T* lse_p = lse.const_data_ptr<T>();
    scalar_t* g = grad.mutable_data_ptr<scalar_t>();
    const T boundary_weight = static_cast<T>(params.boundary_weight);
    const T up = static_cast<T>(upstream);
    at::parallel_for(0, tiles.count(), grain(channels), [&](int64_t begin, int64_t end) {
      T scale[kTile];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.image(t), p0 = tiles.first(t), p = b * tiles.pixels + p0;
        const int n = tiles.tile_size(t);
        const int64_t offset = b * channels * tiles.pixels + p0;
        bool any = false;
        for (int i = 0; i < n; ++i) {
          scale[i] = up * m::pixel_weight(cmask[p + i], rmask[p + i], params.separate_boundary, boundary_weight);
          any = any || scale[i] != T(0);
        }
        if (any) {
          grad_tile(xs + offset, tiles.pixels, static_cast<int>(channels), pres + b * classes, n, label + p,
                    lse_p + p, scale, g + offset);
        } else {
          zero_channels(g + offset, tiles.pixels, static_cast<int>(channels), n);
        }
      }
    });
  });
}

}  // namespace cpu
}  // namespace fsae
