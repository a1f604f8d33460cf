// Complex (or real) Gaussian measurements on the CPU.
// Dense A: float32 with at most kStreamMaxRows vectors streams A once (stream_cpu.cpp;
// ATen's GEMM reads it at a fraction of the bandwidth there), everything else goes to
// ATen's GEMM; the magnitude epilogue / phase prologue are fused in one OpenMP pass. Seeded A: entries come from gauss_pair(seed, row, col) inside the
// loops and are never stored, trading O(mn) memory for arithmetic.
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "../common.h"
#include "../ops.h"
#include "cmeasure_dense.h"
#include "stream_cpu.h"

namespace metadip {
namespace {

// Elements per task of the elementwise loops (at::parallel_for runs smaller ones inline).
constexpr int64_t kGrain = 2048;

}  // namespace

at::Tensor cm_lin_cpu(const at::Tensor& x_, const c10::optional<at::Tensor>& ar,
                      const c10::optional<at::Tensor>& ai, int64_t seed, int64_t m, bool cplx,
                      double scale) {
  const at::Tensor x = cm::checked_x(x_);
  const int64_t B = x.size(0), n = x.size(1);
  if (ar.has_value()) {
    cm::check_dense(*ar, ai, n, x.scalar_type());
    return cm::stream_applies(x, *ar, ai) ? cm::stream_lin(x, *ar, ai) : cm::dense_lin(x, *ar, ai);
  }
  TORCH_CHECK_VALUE(seed >= 0, "seed must be >= 0, got ", seed);
  TORCH_CHECK_VALUE(m >= 1, "m must be >= 1, got ", m);
  const int64_t P = cplx ? 2 : 1;
  at::Tensor z = new_output({P, B, m}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cm_lin_seeded_cpu", [&] {
    const scalar_t* xd = x.data_ptr<scalar_t>();
    scalar_t* zd = z.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, m, 1, [&](int64_t i_begin, int64_t i_end) {
      std::vector<scalar_t> acc(P * B);
      for (int64_t i = i_begin; i < i_end; ++i) {
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        for (int64_t j = 0; j < n; ++j) {
          float gr, gi;
          gauss_pair(static_cast<uint64_t>(seed), static_cast<uint32_t>(i),
                     static_cast<uint32_t>(j), &gr, &gi);
          const scalar_t a_r = static_cast<scalar_t>(gr) * sc;
          const scalar_t a_i = static_cast<scalar_t>(gi) * sc;
          for (int64_t b = 0; b < B; ++b) {
            const scalar_t xv = xd[b * n + j];
            acc[b] += a_r * xv;
            if (P == 2) acc[B + b] += a_i * xv;
          }
        }
        for (int64_t q = 0; q < P * B; ++q) zd[(q / B) * B * m + (q % B) * m + i] = acc[q];
      }
    });
  });
  return z;
}

std::tuple<at::Tensor, at::Tensor> cm_normal_cpu(const at::Tensor& x_, const at::Tensor& ar,
                                                 const c10::optional<at::Tensor>& ai,
                                                 const at::Tensor& y_) {
  const at::Tensor x = cm::checked_x(x_);
  cm::check_dense(ar, ai, x.size(1), x.scalar_type());
  TORCH_CHECK_VALUE(y_.dim() == 2 && y_.size(0) == x.size(0) && y_.size(1) == ar.size(0),
                    "the residual needs y of shape (B, m) = (", x.size(0), ", ", ar.size(0),
                    "), got ", y_.sizes());
  TORCH_CHECK_TYPE(y_.scalar_type() == x.scalar_type(), "y has dtype ", y_.scalar_type(),
                   " but x has ", x.scalar_type());
  const at::Tensor y = y_.contiguous();
  if (cm::stream_applies(x, ar, ai)) return cm::stream_normal(x, ar, ai, y);
  at::Tensor z = at::mm(x, ar.t());
  if (!ai.has_value()) return {z, at::mm(z - y, ar)};
  at::Tensor zi = at::mm(x, ai->t());
  at::Tensor amp = at::sqrt(z * z + zi * zi);
  at::Tensor c = at::where(amp > 0, (amp - y) / amp, at::zeros_like(amp));
  return {amp, at::mm(c * z, ar).addmm_(c * zi, *ai)};
}

at::Tensor cm_adj_cpu(const at::Tensor& w_, const c10::optional<at::Tensor>& ar,
                      const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                      double scale) {
  const at::Tensor w = cm::checked_w(w_);
  const int64_t P = w.size(0), B = w.size(1), m = w.size(2);
  if (ar.has_value()) {
    cm::check_dense_adj(w, *ar, ai);
    return cm::stream_applies(w, *ar, ai) ? cm::stream_adj(w, *ar, ai) : cm::dense_adj(w, *ar, ai);
  }
  TORCH_CHECK_VALUE(seed >= 0, "seed must be >= 0, got ", seed);
  at::Tensor out = new_output({B, n}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "cm_adj_seeded_cpu", [&] {
    const scalar_t* wd = w.data_ptr<scalar_t>();
    scalar_t* od = out.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, n, 1, [&](int64_t j_begin, int64_t j_end) {
      std::vector<scalar_t> acc(B);
      for (int64_t j = j_begin; j < j_end; ++j) {
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        for (int64_t i = 0; i < m; ++i) {
          float gr, gi;
          gauss_pair(static_cast<uint64_t>(seed), static_cast<uint32_t>(i),
                     static_cast<uint32_t>(j), &gr, &gi);
          const scalar_t a_r = static_cast<scalar_t>(gr) * sc;
          const scalar_t a_i = static_cast<scalar_t>(gi) * sc;
          for (int64_t b = 0; b < B; ++b) {
            acc[b] += wd[b * m + i] * a_r;
            if (P == 2) acc[b] += wd[B * m + b * m + i] * a_i;
          }
        }
        for (int64_t b = 0; b < B; ++b) od[b * n + j] = acc[b];
      }
    });
  });
  return out;
}

at::Tensor cm_adj_phase_cpu(const at::Tensor& g_, const at::Tensor& z_,
                            const c10::optional<at::Tensor>& ar,
                            const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                            double scale) {
  TORCH_CHECK_VALUE(z_.dim() == 3 && z_.size(0) == 2, "z must be (2, B, m), got ", z_.sizes());
  TORCH_CHECK_VALUE(g_.dim() == 2 && g_.size(0) == z_.size(1) && g_.size(1) == z_.size(2),
              "g must be (B, m) = (", z_.size(1), ", ", z_.size(2), "), got ", g_.sizes());
  const at::Tensor z = z_.contiguous();
  const at::Tensor g = g_.to(z.scalar_type()).contiguous();
  const int64_t Bm = g.numel();
  at::Tensor w = new_output(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "cm_phase_cpu", [&] {
    const scalar_t* zd = z.data_ptr<scalar_t>();
    const scalar_t* gd = g.data_ptr<scalar_t>();
    scalar_t* wd = w.data_ptr<scalar_t>();
    at::parallel_for(0, Bm, kGrain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const scalar_t re = zd[q], im = zd[Bm + q];
        const scalar_t r = std::sqrt(re * re + im * im);
        // The gradient of |z| at z = 0 is defined as 0 (matches the torch reference).
        const scalar_t k = r > 0 ? gd[q] / r : scalar_t(0);
        wd[q] = k * re;
        wd[Bm + q] = k * im;
      }
    });
  });
  return cm_adj_cpu(w, ar, ai, seed, n, scale);
}

at::Tensor cm_materialize_cpu(int64_t seed, int64_t m, int64_t n, bool cplx, double scale,
                              at::ScalarType dtype) {
  TORCH_CHECK_VALUE(seed >= 0, "seed must be >= 0, got ", seed);
  TORCH_CHECK_VALUE(m >= 1 && n >= 1, "m, n must be >= 1, got ", m, ", ", n);
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, "dtype must be float32/float64");
  const int64_t P = cplx ? 2 : 1;
  at::Tensor a = new_output({P, m, n}, at::TensorOptions().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(dtype, "cm_materialize_cpu", [&] {
    scalar_t* ad = a.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, m, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          float gr, gi;
          gauss_pair(static_cast<uint64_t>(seed), static_cast<uint32_t>(i),
                     static_cast<uint32_t>(j), &gr, &gi);
          ad[i * n + j] = static_cast<scalar_t>(gr) * sc;
          if (P == 2) ad[m * n + i * n + j] = static_cast<scalar_t>(gi) * sc;
        }
      }
    });
  });
  return a;
}

std::tuple<at::Tensor, at::Tensor> cm_meas_cpu(const at::Tensor& x,
                                               const c10::optional<at::Tensor>& ar,
                                               const c10::optional<at::Tensor>& ai, int64_t seed,
                                               int64_t m, double scale) {
  TORCH_CHECK_VALUE(!ar.has_value() || ai.has_value(), "|Ax| needs both planes of a complex A");
  at::Tensor z = cm_lin_cpu(x, ar, ai, seed, m, true, scale);
  const int64_t Bm = z.size(1) * z.size(2);
  at::Tensor y = new_output({z.size(1), z.size(2)}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "cm_mag_cpu", [&] {
    const scalar_t* zd = z.data_ptr<scalar_t>();
    scalar_t* yd = y.data_ptr<scalar_t>();
    at::parallel_for(0, Bm, kGrain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const scalar_t re = zd[q], im = zd[Bm + q];
        yd[q] = std::sqrt(re * re + im * im);
      }
    });
  });
  return {y, z};
}

}  // namespace metadip
