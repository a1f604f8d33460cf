// Fourier features on the CPU (OpenMP): out[k] = sin φ_k, out[K+k] = cos φ_k with
// φ_k(i,j) = 2π (b_k0 · i/H + b_k1 · j/W); pixel coordinates come from the loop
// indices, evaluated in the same order as the torch reference.
#include <omp.h>

#include <cmath>

#include "../ops.h"

namespace metadip {
namespace {

constexpr double kTwoPi = 6.283185307179586;

void check_b(const at::Tensor& b, int64_t height, int64_t width) {
  TORCH_CHECK_VALUE(b.dim() == 2 && b.size(1) == 2, "fourier_features expects b of shape (k, 2), got ",
              b.sizes());
  TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat || b.scalar_type() == at::kDouble,
              "fourier_features supports float32/float64, got ", b.scalar_type());
  TORCH_CHECK_VALUE(height >= 1 && width >= 1, "fourier_features needs height, width >= 1, got ",
              height, "x", width);
}

}  // namespace

at::Tensor ff_fwd_cpu(const at::Tensor& b_, int64_t H, int64_t W) {
  check_b(b_, H, W);
  const at::Tensor b = b_.contiguous();
  const int64_t K = b.size(0);
  at::Tensor out = new_output({2 * K, H, W}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "ff_fwd_cpu", [&] {
    const scalar_t* bd = b.data_ptr<scalar_t>();
    scalar_t* od = out.data_ptr<scalar_t>();
    const scalar_t tp = static_cast<scalar_t>(kTwoPi);
_Pragma("omp parallel for collapse(2) schedule(static)")
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t i = 0; i < H; ++i) {
        const scalar_t ph = static_cast<scalar_t>(i) / static_cast<scalar_t>(H);
        const scalar_t rowterm = bd[2 * k] * ph;
        scalar_t* s = od + (k * H + i) * W;
        scalar_t* c = od + ((K + k) * H + i) * W;
        for (int64_t j = 0; j < W; ++j) {
          const scalar_t pw = static_cast<scalar_t>(j) / static_cast<scalar_t>(W);
          const scalar_t phi = tp * (rowterm + bd[2 * k + 1] * pw);
          s[j] = std::sin(phi);
          c[j] = std::cos(phi);
        }
      }
    }
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
    const scalar_t* bd = b.data_ptr<scalar_t>();
    const scalar_t* gd = g.data_ptr<scalar_t>();
    double* pd = part.data_ptr<double>();
    const scalar_t tp = static_cast<scalar_t>(kTwoPi);
_Pragma("omp parallel for collapse(2) schedule(static)")
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t i = 0; i < H; ++i) {
        const scalar_t ph = static_cast<scalar_t>(i) / static_cast<scalar_t>(H);
        const scalar_t rowterm = bd[2 * k] * ph;
        const scalar_t* gs = gd + (k * H + i) * W;
        const scalar_t* gc = gd + ((K + k) * H + i) * W;
        double a0 = 0.0, a1 = 0.0;
        for (int64_t j = 0; j < W; ++j) {
          const scalar_t pw = static_cast<scalar_t>(j) / static_cast<scalar_t>(W);
          const scalar_t phi = tp * (rowterm + bd[2 * k + 1] * pw);
          // d/dφ of (gs sin φ + gc cos φ).
          const scalar_t t = gs[j] * std::cos(phi) - gc[j] * std::sin(phi);
          a0 += static_cast<double>(t * ph);
          a1 += static_cast<double>(t * pw);
        }
        pd[(k * H + i) * 2] = a0 * kTwoPi;
        pd[(k * H + i) * 2 + 1] = a1 * kTwoPi;
      }
    }
  });
  return part.sum(1).to(b.scalar_type());
}

}  // namespace metadip
