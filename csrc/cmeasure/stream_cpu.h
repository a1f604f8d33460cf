// Streaming dense products for a few vectors on the CPU (stream_cpu.cpp): one read of A
// where ATen's GEMM reads it at a fraction of the bandwidth. Callers check
// stream_applies() and otherwise take ATen's mm.
#pragma once

#include <ATen/ATen.h>

namespace metadip {
namespace cm {

// Vectors (rows of x, or of each plane of w) for which the streaming loops beat ATen:
// from 2 (one vector is MKL's GEMV, already at the bandwidth) to 8 (beyond, each group
// of 4 re-reads A and GEMM's blocking wins).
constexpr int64_t kStreamMinRows = 2;
constexpr int64_t kStreamMaxRows = 8;

// float32 CPU tensors, A planes contiguous without grad, kStreamMinRows..kStreamMaxRows
// vectors (v.size(-2)), and a CPU with AVX-512.
bool stream_applies(const at::Tensor& v, const at::Tensor& ar,
                    const c10::optional<at::Tensor>& ai);
// z = A x as planes (P, B, m); x (B, n) contiguous.
at::Tensor stream_lin(const at::Tensor& x, const at::Tensor& ar,
                      const c10::optional<at::Tensor>& ai);
// Σ_p w_p A_p (B, n); w (P, B, m) contiguous.
at::Tensor stream_adj(const at::Tensor& w, const at::Tensor& ar,
                      const c10::optional<at::Tensor>& ai);
// A least-squares fit's value and gradient in one read of A; x (B, n) and y (B, m)
// contiguous. Real A: (z = A x, Aᵀ(z − y)). Complex A = ar + i ai, amplitude fit:
// (|z|, Re Aᴴ((|z| − y) z/|z|)), 0 where |z| = 0. Values (B, m), gradients (B, n).
std::tuple<at::Tensor, at::Tensor> stream_normal(const at::Tensor& x, const at::Tensor& ar,
                                                 const c10::optional<at::Tensor>& ai,
                                                 const at::Tensor& y);

}  // namespace cm
}  // namespace metadip
