// Declarations of the CPU and CUDA implementations bound in bindings.cpp.
#pragma once

// ATen only (not torch/extension.h): the kernel files compile several times faster.
#include <ATen/ATen.h>

#include <limits>
#include <tuple>

namespace metadip {

// Test hook: when set, every output buffer is filled with NaN right after
// allocation, so an element a kernel forgets to write fails the tests.
void set_poison(bool on);
bool poison_enabled();

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
  if (poison_enabled()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// tv: x (B,C,H,W) -> value (B,), gradient (B,C,H,W) (empty unless with_grad); hvp: H(x) v.
std::tuple<at::Tensor, at::Tensor> tv_fwd_cpu(const at::Tensor& x, double eps, bool with_grad);
at::Tensor tv_hvp_cpu(const at::Tensor& x, const at::Tensor& v, double eps);

// Complex/real measurement. A is dense (ar, optional ai) or seeded (ar undefined).
// lin: x (B,n) -> z (P,B,m); adj: w (P,B,m) -> (B,n); meas: -> (|z| (B,m), z (2,B,m));
// adj_phase: g (B,m), z (2,B,m) -> A^T-apply of g * z/|z| (0 where |z| = 0).
at::Tensor cm_lin_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& ar,
                      const c10::optional<at::Tensor>& ai, int64_t seed, int64_t m, bool cplx,
                      double scale);
// normal: a least-squares fit of a stored A, x (B,n), y (B,m) -> (value (B,m), gradient
// (B,n)): real A (z = A x, Aᵀ(z − y)); complex A, amplitudes (|z|, Re Aᴴ((|z| − y) z/|z|)).
// A read once where the streaming loops apply.
std::tuple<at::Tensor, at::Tensor> cm_normal_cpu(const at::Tensor& x, const at::Tensor& ar,
                                                 const c10::optional<at::Tensor>& ai,
                                                 const at::Tensor& y);
at::Tensor cm_adj_cpu(const at::Tensor& w, const c10::optional<at::Tensor>& ar,
                      const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n, double scale);
at::Tensor cm_adj_phase_cpu(const at::Tensor& g, const at::Tensor& z,
                            const c10::optional<at::Tensor>& ar,
                            const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                            double scale);
at::Tensor cm_materialize_cpu(int64_t seed, int64_t m, int64_t n, bool cplx, double scale,
                              at::ScalarType dtype);
std::tuple<at::Tensor, at::Tensor> cm_meas_cpu(const at::Tensor& x,
                                               const c10::optional<at::Tensor>& ar,
                                               const c10::optional<at::Tensor>& ai, int64_t seed,
                                               int64_t m, double scale);

// Fourier features: b (k,2) -> (2k,H,W); bwd: g (2k,H,W) -> (k,2).
at::Tensor ff_fwd_cpu(const at::Tensor& b, int64_t height, int64_t width);
at::Tensor ff_bwd_cpu(const at::Tensor& g, const at::Tensor& b, int64_t height, int64_t width);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> tv_fwd_cuda(const at::Tensor& x, double eps, bool with_grad);
at::Tensor tv_hvp_cuda(const at::Tensor& x, const at::Tensor& v, double eps);
at::Tensor cm_lin_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& ar,
                       const c10::optional<at::Tensor>& ai, int64_t seed, int64_t m, bool cplx,
                       double scale);
at::Tensor cm_adj_cuda(const at::Tensor& w, const c10::optional<at::Tensor>& ar,
                       const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                       double scale);
at::Tensor cm_adj_phase_cuda(const at::Tensor& g, const at::Tensor& z,
                             const c10::optional<at::Tensor>& ar,
                             const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                             double scale);
at::Tensor cm_materialize_cuda(int64_t seed, int64_t m, int64_t n, bool cplx, double scale,
                               at::ScalarType dtype);
std::tuple<at::Tensor, at::Tensor> cm_meas_cuda(const at::Tensor& x,
                                                const c10::optional<at::Tensor>& ar,
                                                const c10::optional<at::Tensor>& ai, int64_t seed,
                                                int64_t m, double scale);
at::Tensor ff_fwd_cuda(const at::Tensor& b, int64_t height, int64_t width);
at::Tensor ff_bwd_cuda(const at::Tensor& g, const at::Tensor& b, int64_t height, int64_t width);
#endif

}  // namespace metadip
