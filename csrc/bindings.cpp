// pybind11 bindings for metadip._C: one entry per primitive, routed to the CPU
// or CUDA implementation by the inputs' device. Autograd and torch.library
// registration live in metadip/_ops.py.
#include <torch/extension.h>

#include "ops.h"

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#endif

namespace metadip {

namespace {
bool g_poison = false;
}  // namespace

void set_poison(bool on) { g_poison = on; }
bool poison_enabled() { return g_poison; }

namespace {

#ifdef WITH_CUDA
constexpr bool kHasCuda = true;
#define MD_ROUTE(dev, name, ...) \
  ((dev).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__))
#else
constexpr bool kHasCuda = false;
void no_cuda(const at::Tensor& t) {
  TORCH_CHECK(!t.is_cuda(), "metadip._C was built without CUDA; got a tensor on ", t.device());
}
#define MD_ROUTE(dev, name, ...) (no_cuda(dev), name##_cpu(__VA_ARGS__))
#endif

void same_device(const at::Tensor& a, const c10::optional<at::Tensor>& b, const char* what) {
  if (b.has_value()) {
    TORCH_CHECK(a.device() == b->device(), what, ": tensors on different devices: ",
                a.device(), " and ", b->device());
  }
}

std::tuple<at::Tensor, at::Tensor> tv_fwd(const at::Tensor& x, double eps, bool with_grad) {
  return MD_ROUTE(x, tv_fwd, x, eps, with_grad);
}

at::Tensor tv_hvp(const at::Tensor& x, const at::Tensor& v, double eps) {
  same_device(x, v, "tv_hvp");
  return MD_ROUTE(x, tv_hvp, x, v, eps);
}

at::Tensor cm_lin(const at::Tensor& x, const c10::optional<at::Tensor>& ar,
                  const c10::optional<at::Tensor>& ai, int64_t seed, int64_t m, bool cplx,
                  double scale) {
  same_device(x, ar, "measurement");
  same_device(x, ai, "measurement");
  return MD_ROUTE(x, cm_lin, x, ar, ai, seed, m, cplx, scale);
}

std::tuple<at::Tensor, at::Tensor> cm_normal(const at::Tensor& x, const at::Tensor& ar,
                                             const c10::optional<at::Tensor>& ai,
                                             const at::Tensor& y) {
  // CPU only: on a GPU the cuBLAS products are the fast path (metadip.backends).
  TORCH_CHECK(x.is_cpu() && ar.is_cpu() && y.is_cpu() && (!ai.has_value() || ai->is_cpu()),
              "cm_normal runs on CPU tensors; got x on ", x.device(), ", A on ", ar.device(),
              ", y on ", y.device());
  return cm_normal_cpu(x, ar, ai, y);
}

std::tuple<at::Tensor, at::Tensor> cm_meas(const at::Tensor& x,
                                           const c10::optional<at::Tensor>& ar,
                                           const c10::optional<at::Tensor>& ai, int64_t seed,
                                           int64_t m, double scale) {
  same_device(x, ar, "measurement");
  same_device(x, ai, "measurement");
  return MD_ROUTE(x, cm_meas, x, ar, ai, seed, m, scale);
}

at::Tensor cm_adj(const at::Tensor& w, const c10::optional<at::Tensor>& ar,
                  const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n, double scale) {
  same_device(w, ar, "adjoint");
  same_device(w, ai, "adjoint");
  return MD_ROUTE(w, cm_adj, w, ar, ai, seed, n, scale);
}

at::Tensor cm_adj_phase(const at::Tensor& g, const at::Tensor& z,
                        const c10::optional<at::Tensor>& ar, const c10::optional<at::Tensor>& ai,
                        int64_t seed, int64_t n, double scale) {
  same_device(z, g, "adjoint");
  same_device(z, ar, "adjoint");
  return MD_ROUTE(z, cm_adj_phase, g, z, ar, ai, seed, n, scale);
}

// `like` only carries the dtype and device of the result.
at::Tensor cm_materialize(int64_t seed, int64_t m, int64_t n, bool cplx, double scale,
                          const at::Tensor& like) {
#ifdef WITH_CUDA
  if (like.is_cuda()) {
    c10::cuda::CUDAGuard guard(like.device());
    return cm_materialize_cuda(seed, m, n, cplx, scale, like.scalar_type());
  }
#else
  no_cuda(like);
#endif
  return cm_materialize_cpu(seed, m, n, cplx, scale, like.scalar_type());
}

at::Tensor ff_fwd(const at::Tensor& b, int64_t height, int64_t width) {
  return MD_ROUTE(b, ff_fwd, b, height, width);
}

at::Tensor ff_bwd(const at::Tensor& g, const at::Tensor& b, int64_t height, int64_t width) {
  same_device(b, g, "fourier_features backward");
  return MD_ROUTE(b, ff_bwd, g, b, height, width);
}

}  // namespace
}  // namespace metadip

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  using namespace metadip;
  mod.doc() = "metadip fused ops (C++/OpenMP, CUDA when built with it)";
  mod.attr("has_cuda") = kHasCuda;
  mod.def("set_poison", &set_poison, "fill every output with NaN on allocation (tests)",
          py::arg("on"));
  mod.def("tv_fwd", &tv_fwd, "TV value (B,) and gradient (if with_grad)", py::arg("x"),
          py::arg("eps"), py::arg("with_grad") = true);
  mod.def("tv_hvp", &tv_hvp, "TV Hessian-vector product", py::arg("x"), py::arg("v"),
          py::arg("eps"));
  mod.def("cm_lin", &cm_lin, "z = A x as (P, B, m)", py::arg("x"), py::arg("ar"), py::arg("ai"),
          py::arg("seed"), py::arg("m"), py::arg("cplx"), py::arg("scale"));
  mod.def("cm_meas", &cm_meas, "(|A x|, z)", py::arg("x"), py::arg("ar"), py::arg("ai"),
          py::arg("seed"), py::arg("m"), py::arg("scale"));
  mod.def("cm_normal", &cm_normal, "a stored A's fit value and gradient in one pass",
          py::arg("x"), py::arg("ar"), py::arg("ai"), py::arg("y"));
  mod.def("cm_adj", &cm_adj, "A^T-apply of w (P, B, m)", py::arg("w"), py::arg("ar"),
          py::arg("ai"), py::arg("seed"), py::arg("n"), py::arg("scale"));
  mod.def("cm_adj_phase", &cm_adj_phase, "Re A^H (g * z/|z|)", py::arg("g"), py::arg("z"),
          py::arg("ar"), py::arg("ai"), py::arg("seed"), py::arg("n"), py::arg("scale"));
  mod.def("cm_materialize", &cm_materialize, "seeded A as (P, m, n)", py::arg("seed"),
          py::arg("m"), py::arg("n"), py::arg("cplx"), py::arg("scale"), py::arg("like"));
  mod.def("ff_fwd", &ff_fwd, "Fourier features (2k, H, W)", py::arg("b"), py::arg("height"),
          py::arg("width"));
  mod.def("ff_bwd", &ff_bwd, "gradient wrt b (k, 2)", py::arg("g"), py::arg("b"),
          py::arg("height"), py::arg("width"));
}
