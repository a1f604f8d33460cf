// Fourier features on the CPU (OpenMP): out[k] = sin φ_k, out[K+k] = cos φ_k with
// φ_k(i,j) = α_k(i) + β_k(j), α = 2π b_k0 · i/H, β = 2π b_k1 · j/W.
// The phase is separable, so sin/cos are evaluated only on the H row and W column
// angles and combined by the angle-addition formulas: O(K(H+W)) transcendentals
// instead of O(KHW), and a vectorizable inner loop. The result differs from
// evaluating sin(α+β) directly by a few ulps of |φ|, as does the reference's own
// rounding of the phase sum.
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "../ops.h"

namespace metadip {
namespace {

constexpr double kTwoPi = 6.283185307179586;

void check_b(const at::Tensor& b, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(b.dim() == 2 && b.size(1) == 2,
                    "fourier_features expects b of shape (k, 2), got ", b.sizes());
  TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat || b.scalar_type() == at::kDouble,
                   "fourier_features supports float32/float64, got ", b.scalar_type());
  TORCH_CHECK_VALUE(height >= 1 && width >= 1, "fourier_features needs height, width >= 1, got ",
                    height, "x", width);
}

// sin/cos of the row angles (K, H) and column angles (K, W), computed in double.
template <typename T>
void tables(const T* b, int64_t K, int64_t H, int64_t W, std::vector<T>& sa, std::vector<T>& ca,
            std::vector<T>& sb, std::vector<T>& cb) {
  sa.resize(K * H);
  ca.resize(K * H);
  sb.resize(K * W);
  cb.resize(K * W);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < H; ++i) {
      const double a = kTwoPi * static_cast<double>(b[2 * k]) * (static_cast<double>(i) / H);
      sa[k * H + i] = static_cast<T>(std::sin(a));
      ca[k * H + i] = static_cast<T>(std::cos(a));
    }
    for (int64_t j = 0; j < W; ++j) {
      const double a = kTwoPi * static_cast<double>(b[2 * k + 1]) * (static_cast<double>(j) / W);
      sb[k * W + j] = static_cast<T>(std::sin(a));
      cb[k * W + j] = static_cast<T>(std::cos(a));
    }
  }
}

}  // namespace

at::Tensor ff_fwd_cpu(const at::Tensor& b_, int64_t H, int64_t W) {
  check_b(b_, H, W);
  const at::Tensor b = b_.contiguous();
  const int64_t K = b.size(0);
  at::Tensor out = new_output({2 * K, H, W}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "ff_fwd_cpu", [&] {
    std::vector<scalar_t> sa, ca, sb, cb;
    tables(b.data_ptr<scalar_t>(), K, H, W, sa, ca, sb, cb);
    scalar_t* od = out.data_ptr<scalar_t>();
    at::parallel_for(0, K * H, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r / H, i = r % H;
        const scalar_t s_a = sa[k * H + i], c_a = ca[k * H + i];
        const scalar_t* s_b = sb.data() + k * W;
        const scalar_t* c_b = cb.data() + k * W;
        scalar_t* s = od + (k * H + i) * W;
        scalar_t* c = od + ((K + k) * H + i) * W;
        for (int64_t j = 0; j < W; ++j) {
          s[j] = s_a * c_b[j] + c_a * s_b[j];
          c[j] = c_a * c_b[j] - s_a * s_b[j];
        }
      }
    });
  });
  return out;
}

at::Tensor ff_bwd_cpu(const at::Tensor& g_, const at::Tensor& b_, int64_t H, int64_t W) {
  check_b(b_, H, W);
  const at::Tensor b = b_.contiguous();
  const int64_t K = b.size(0);
  TORCH_CHECK_VALUE(g_.dim() == 3 && g_.size(0) == 2 * K && g_.size(1) == H && g_.size(2) == W,
                    "fourier_features backward expects g of shape (", 2 * K, ", ", H, ", ", W,
                    "), got ", g_.sizes());
  const at::Tensor g = g_.to(b.scalar_type()).contiguous();
  // Row partial sums in float64 keep the reduction accurate and deterministic.
  at::Tensor part = new_output({K, H, 2}, b.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "ff_bwd_cpu", [&] {
    std::vector<scalar_t> sa, ca, sb, cb;
    tables(b.data_ptr<scalar_t>(), K, H, W, sa, ca, sb, cb);
    const scalar_t* gd = g.data_ptr<scalar_t>();
    double* pd = part.data_ptr<double>();
    at::parallel_for(0, K * H, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t k = r / H, i = r % H;
        const scalar_t s_a = sa[k * H + i], c_a = ca[k * H + i];
        const scalar_t* s_b = sb.data() + k * W;
        const scalar_t* c_b = cb.data() + k * W;
        const scalar_t* gs = gd + (k * H + i) * W;
        const scalar_t* gc = gd + ((K + k) * H + i) * W;
        double row = 0.0, col = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          // d/dφ of (gs sin φ + gc cos φ) = gs cos φ - gc sin φ.
          const scalar_t sp = s_a * c_b[j] + c_a * s_b[j];
          const scalar_t cp = c_a * c_b[j] - s_a * s_b[j];
          const double t = static_cast<double>(gs[j] * cp - gc[j] * sp);
          row += t;
          col += t * (static_cast<double>(j) / W);
        }
        pd[(k * H + i) * 2] = kTwoPi * row * (static_cast<double>(i) / H);
        pd[(k * H + i) * 2 + 1] = kTwoPi * col;
      }
    });
  });
  return part.sum(1).to(b.scalar_type());
}

}  // namespace metadip
