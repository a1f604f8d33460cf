// What the CPU and CUDA measurement files share: the argument checks and the dense
// (stored-matrix) paths. ATen's mm runs on either device, so only the seeded paths
// (entries generated in-kernel) and the fused epilogues differ between the two.
#pragma once

#include "../ops.h"

namespace metadip {
namespace cm {

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32/float64, got ", t.scalar_type());
}

inline void check_dense(const at::Tensor& ar, const c10::optional<at::Tensor>& ai, int64_t n,
                        at::ScalarType dt) {
  TORCH_CHECK_VALUE(ar.dim() == 2 && ar.size(1) == n, "A must be (m, n) with n = ", n, ", got ",
                    ar.sizes());
  TORCH_CHECK_TYPE(ar.scalar_type() == dt, "A has dtype ", ar.scalar_type(), " but x has ", dt);
  if (ai.has_value()) {
    TORCH_CHECK_VALUE(ai->sizes() == ar.sizes(), "a_imag must have a_real's shape ", ar.sizes(),
                      ", got ", ai->sizes());
    TORCH_CHECK_TYPE(ai->scalar_type() == dt, "a_imag has dtype ", ai->scalar_type(),
                     " but x has ", dt);
  }
}

// x (B, n): checked and made contiguous.
inline at::Tensor checked_x(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 2, "measurement expects x of shape (B, n), got ", x.sizes());
  check_float(x, "x");
  return x.contiguous();
}

// w (P, B, m), P in {1, 2}: checked and made contiguous.
inline at::Tensor checked_w(const at::Tensor& w) {
  TORCH_CHECK_VALUE(w.dim() == 3 && (w.size(0) == 1 || w.size(0) == 2),
                    "adjoint expects w of shape (P, B, m) with P in {1, 2}, got ", w.sizes());
  check_float(w, "w");
  return w.contiguous();
}

// z = A x as planes (P, B, m) for a stored A = ar (+ i ai).
inline at::Tensor dense_lin(const at::Tensor& x, const at::Tensor& ar,
                            const c10::optional<at::Tensor>& ai) {
  check_dense(ar, ai, x.size(1), x.scalar_type());
  const int64_t P = ai.has_value() ? 2 : 1;
  at::Tensor z = new_output({P, x.size(0), ar.size(0)}, x.options());
  at::Tensor z0 = z[0];
  at::mm_out(z0, x, ar.t());
  if (P == 2) {
    at::Tensor z1 = z[1];
    at::mm_out(z1, x, ai->t());
  }
  return z;
}

// The adjoint's checks: w (P, B, m) against a stored A of m rows and P planes.
inline void check_dense_adj(const at::Tensor& w, const at::Tensor& ar,
                            const c10::optional<at::Tensor>& ai) {
  const int64_t P = w.size(0), m = w.size(2);
  TORCH_CHECK_VALUE(ar.dim() == 2 && ar.size(0) == m, "A must have m = ", m, " rows, got ",
                    ar.sizes());
  check_dense(ar, ai, ar.size(1), w.scalar_type());
  TORCH_CHECK_VALUE((P == 2) == ai.has_value(), "w has ", P, " planes but A has ",
                    ai.has_value() ? 2 : 1);
}

// Σ_p w_p A_p (B, n) for a stored A.
inline at::Tensor dense_adj(const at::Tensor& w, const at::Tensor& ar,
                            const c10::optional<at::Tensor>& ai) {
  check_dense_adj(w, ar, ai);
  const int64_t P = w.size(0);
  at::Tensor out = at::mm(w[0], ar);
  if (P == 2) out.addmm_(w[1], *ai);
  return out;
}

}  // namespace cm
}  // namespace metadip
