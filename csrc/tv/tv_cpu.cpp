// Smoothed isotropic TV on the CPU (OpenMP). Maths in kernels/tv.py's docstring.
// OpenMP pragmas are written as _Pragma because they sit inside AT_DISPATCH macro arguments.
// Work unit: a band of rows of one plane; the row above the band is recomputed
// so bands are independent and the stencil reads each row of x once per band.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops.h"

namespace metadip {
namespace {

constexpr int64_t kBand = 16;

// Σ s over row i and, when kUV, u = dh/s, v = dw/s. The interior columns run
// branch-free (omp simd) and the last column, where dw = 0, is peeled off.
template <typename T, bool kUV>
T row_uv(const T* xp, int64_t i, int64_t H, int64_t W, T eps, T* u, T* v) {
  const T* r = xp + i * W;
  // On the last row dh = 0: read row i itself instead of a row past the plane.
  const T* d = r + (i + 1 < H ? W : 0);
  const int64_t last = W - 1;
  T acc = 0;
  _Pragma("omp simd reduction(+ : acc)")
  for (int64_t j = 0; j < last; ++j) {
    const T dh = d[j] - r[j];
    const T dw = r[j + 1] - r[j];
    const T s = std::sqrt(dh * dh + dw * dw + eps);
    if (kUV) {
      u[j] = dh / s;
      v[j] = dw / s;
    }
    acc += s;
  }
  const T dh = d[last] - r[last];
  const T s = std::sqrt(dh * dh + eps);
  if (kUV) {
    u[last] = dh / s;
    v[last] = T(0);
  }
  return acc + s;
}

// du, dv (directional derivatives of u, v along w) on row i.
template <typename T>
void row_duv(const T* xp, const T* wp, int64_t i, int64_t H, int64_t W, T eps, T* du, T* dv) {
  const T* r = xp + i * W;
  const T* q = wp + i * W;
  // On the last row dh = eh = 0: read row i itself instead of a row past the plane.
  const int64_t down = i + 1 < H ? W : 0;
  const T* d = r + down;
  const T* qd = q + down;
  _Pragma("omp simd")
  for (int64_t j = 0; j < W; ++j) {
    const int64_t jr = j + 1 < W ? j + 1 : j;  // dw = ew = 0 on the last column
    const T dh = d[j] - r[j];
    const T dw = r[jr] - r[j];
    const T eh = qd[j] - q[j];
    const T ew = q[jr] - q[j];
    const T s = std::sqrt(dh * dh + dw * dw + eps);
    const T k = (dh * eh + dw * ew) / (s * s * s);
    du[j] = eh / s - dh * k;
    dv[j] = ew / s - dw * k;
  }
}

// out[j] = -(u + v)[j] + u_up[j] + v[j-1], the divergence stencil shared by G and H·w.
template <typename T>
void row_div(const T* cu, const T* cv, const T* up, int64_t W, T* out) {
  out[0] = -(cu[0] + cv[0]) + up[0];
  _Pragma("omp simd")
  for (int64_t j = 1; j < W; ++j) out[j] = -(cu[j] + cv[j]) + up[j] + cv[j - 1];
}

void check_x(const at::Tensor& x, double eps) {
  TORCH_CHECK_VALUE(x.dim() == 4, "tv expects x of shape (B, C, H, W), got ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "tv supports float32/float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(eps > 0, "tv needs eps > 0, got ", eps);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> tv_fwd_cpu(const at::Tensor& x_, double eps, bool with_grad) {
  check_x(x_, eps);
  const at::Tensor x = x_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t P = B * C, nb = (H + kBand - 1) / kBand;
  // Value-only calls (no autograd) skip writing the gradient: a plain forward stays cheap.
  at::Tensor grad = with_grad ? new_output(x.sizes(), x.options()) : at::empty({0}, x.options());
  at::Tensor part = new_output({B, C * nb}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_fwd_cpu", [&] {
    const scalar_t* xd = x.data_ptr<scalar_t>();
    scalar_t* gd = with_grad ? grad.data_ptr<scalar_t>() : nullptr;
    double* pd = part.data_ptr<double>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, P * nb, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> up(W), cu(W), cv(W), scratch(W);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t p = t / nb, i0 = (t % nb) * kBand, i1 = std::min(H, i0 + kBand);
        const scalar_t* xp = xd + p * H * W;
        scalar_t* gp = with_grad ? gd + p * H * W : nullptr;
        double acc = 0.0;
        if (!with_grad) {
          for (int64_t i = i0; i < i1; ++i) {
            acc += row_uv<scalar_t, false>(xp, i, H, W, e, nullptr, nullptr);
          }
        } else {
          if (i0 > 0) {
            row_uv<scalar_t, true>(xp, i0 - 1, H, W, e, up.data(), scratch.data());
          } else {
            std::fill(up.begin(), up.end(), scalar_t(0));
          }
          for (int64_t i = i0; i < i1; ++i) {
            acc += row_uv<scalar_t, true>(xp, i, H, W, e, cu.data(), cv.data());
            row_div(cu.data(), cv.data(), up.data(), W, gp + i * W);
            std::swap(up, cu);
          }
        }
        pd[t] = acc;
      }
    });
  });
  return {part.sum(1).to(x.scalar_type()), grad};
}

at::Tensor tv_hvp_cpu(const at::Tensor& x_, const at::Tensor& v_, double eps) {
  check_x(x_, eps);
  TORCH_CHECK_VALUE(v_.sizes() == x_.sizes(), "tv_hvp: v must have x's shape ", x_.sizes(), ", got ",
              v_.sizes());
  const at::Tensor x = x_.contiguous();
  const at::Tensor v = v_.to(x.scalar_type()).contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t P = B * C, nb = (H + kBand - 1) / kBand;
  at::Tensor out = new_output(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_hvp_cpu", [&] {
    const scalar_t* xd = x.data_ptr<scalar_t>();
    const scalar_t* vd = v.data_ptr<scalar_t>();
    scalar_t* od = out.data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, P * nb, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> up(W), cu(W), cv(W), scratch(W);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t p = t / nb, i0 = (t % nb) * kBand, i1 = std::min(H, i0 + kBand);
        const scalar_t* xp = xd + p * H * W;
        const scalar_t* vp = vd + p * H * W;
        scalar_t* op = od + p * H * W;
        if (i0 > 0) {
          row_duv(xp, vp, i0 - 1, H, W, e, up.data(), scratch.data());
        } else {
          std::fill(up.begin(), up.end(), scalar_t(0));
        }
        for (int64_t i = i0; i < i1; ++i) {
          row_duv(xp, vp, i, H, W, e, cu.data(), cv.data());
          row_div(cu.data(), cv.data(), up.data(), W, op + i * W);
          std::swap(up, cu);
        }
      }
    });
  });
  return out;
}

}  // namespace metadip
