// Dense measurements of a few vectors on the CPU, streaming A once.
//
// For kStreamMinRows <= B <= kStreamMaxRows vectors, z = A x and x = Σ_p w_p A_p are matrix-vector
// products: each entry of A is used B times and the time is the time it takes to read
// A. MKL's GEMM for B = 2..8 reads A at about a third of the memory bandwidth here (the
// same 33 ms for B = 3 and B = 8 on a 4096 × 16384 A, one thread), so these loops read
// A once, in register-blocked tiles of 4 rows × 4 vectors, and reach the bandwidth
// (about 13 ms for B = 3). For one vector MKL's GEMV is already there.
// They need AVX-512 (checked at run time; the functions carry their own target
// attribute, so the file builds for any x86-64 and the caller falls back to ATen).
// float32 only: float64 keeps ATen's GEMM and its summation order.
#include "stream_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define METADIP_STREAM 1
#include <immintrin.h>
// GCC 12 flags the undefined lanes of its own masked-load intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace metadip {
namespace cm {

#ifdef METADIP_STREAM
namespace {

constexpr int kRows = 4;         // rows of A per register tile
constexpr int64_t kCols = 1024;  // adjoint: columns per task (4 outputs x 4 KB stay in L1)
constexpr int64_t kGrainRows = 64;

#define STREAM_TARGET __attribute__((target("avx512f")))

STREAM_TARGET inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
}

// z[b, i] = Σ_j a[i, j] x[b, j] for rows [i0, i1) and NB vectors; x rows of stride n.
template <int NB>
STREAM_TARGET void lin_rows(const float* __restrict a, const float* __restrict x,
                            float* __restrict z, int64_t i0, int64_t i1, int64_t n, int64_t m) {
  int64_t i = i0;
  for (; i + kRows <= i1; i += kRows) {
    __m512 acc[kRows][NB];
    for (int r = 0; r < kRows; ++r)
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = tail_mask(n - j);
      __m512 xv[NB];
      for (int b = 0; b < NB; ++b) xv[b] = _mm512_maskz_loadu_ps(k, x + b * n + j);
      for (int r = 0; r < kRows; ++r) {
        const __m512 v = _mm512_maskz_loadu_ps(k, a + (i + r) * n + j);
        for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_fmadd_ps(v, xv[b], acc[r][b]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int b = 0; b < NB; ++b) z[b * m + i + r] = _mm512_reduce_add_ps(acc[r][b]);
  }
  for (; i < i1; ++i) {
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = tail_mask(n - j);
      const __m512 v = _mm512_maskz_loadu_ps(k, a + i * n + j);
      for (int b = 0; b < NB; ++b)
        acc[b] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, x + b * n + j), acc[b]);
    }
    for (int b = 0; b < NB; ++b) z[b * m + i] = _mm512_reduce_add_ps(acc[b]);
  }
}

// out[b, j] += Σ_i w[b, i] a[i, j] for columns [j0, j1) and NB vectors.
template <int NB>
STREAM_TARGET void adj_cols(const float* __restrict a, const float* __restrict w,
                            float* __restrict out, int64_t j0, int64_t j1, int64_t n, int64_t m) {
  int64_t i = 0;
  for (; i + kRows <= m; i += kRows) {
    __m512 wv[kRows][NB];
    for (int r = 0; r < kRows; ++r)
      for (int b = 0; b < NB; ++b) wv[r][b] = _mm512_set1_ps(w[b * m + i + r]);
    for (int64_t j = j0; j < j1; j += 16) {
      const __mmask16 k = tail_mask(j1 - j);
      __m512 v[kRows];
      for (int r = 0; r < kRows; ++r) v[r] = _mm512_maskz_loadu_ps(k, a + (i + r) * n + j);
      for (int b = 0; b < NB; ++b) {
        float* o = out + b * n + j;
        __m512 acc = _mm512_maskz_loadu_ps(k, o);
        for (int r = 0; r < kRows; ++r) acc = _mm512_fmadd_ps(v[r], wv[r][b], acc);
        _mm512_mask_storeu_ps(o, k, acc);
      }
    }
  }
  for (; i < m; ++i) {
    for (int64_t j = j0; j < j1; j += 16) {
      const __mmask16 k = tail_mask(j1 - j);
      const __m512 v = _mm512_maskz_loadu_ps(k, a + i * n + j);
      for (int b = 0; b < NB; ++b) {
        float* o = out + b * n + j;
        const __m512 acc = _mm512_fmadd_ps(v, _mm512_set1_ps(w[b * m + i]), _mm512_maskz_loadu_ps(k, o));
        _mm512_mask_storeu_ps(o, k, acc);
      }
    }
  }
}

// The kernels for a group of nb <= 4 vectors.
void lin_group(int64_t nb, const float* a, const float* x, float* z, int64_t i0, int64_t i1,
               int64_t n, int64_t m) {
  switch (nb) {
    case 4: lin_rows<4>(a, x, z, i0, i1, n, m); break;
    case 3: lin_rows<3>(a, x, z, i0, i1, n, m); break;
    case 2: lin_rows<2>(a, x, z, i0, i1, n, m); break;
    default: lin_rows<1>(a, x, z, i0, i1, n, m); break;
  }
}

void adj_group(int64_t nb, const float* a, const float* w, float* out, int64_t j0, int64_t j1,
               int64_t n, int64_t m) {
  switch (nb) {
    case 4: adj_cols<4>(a, w, out, j0, j1, n, m); break;
    case 3: adj_cols<3>(a, w, out, j0, j1, n, m); break;
    case 2: adj_cols<2>(a, w, out, j0, j1, n, m); break;
    default: adj_cols<1>(a, w, out, j0, j1, n, m); break;
  }
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

bool plane_ok(const at::Tensor& p) {
  return p.device().is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous() &&
         !p.requires_grad();
}

}  // namespace

bool stream_applies(const at::Tensor& v, const at::Tensor& ar,
                    const c10::optional<at::Tensor>& ai) {
  return cpu_has_avx512() && v.device().is_cpu() && v.scalar_type() == at::kFloat &&
         v.size(-2) >= kStreamMinRows && v.size(-2) <= kStreamMaxRows && plane_ok(ar) && (!ai.has_value() || plane_ok(*ai));
}

at::Tensor stream_lin(const at::Tensor& x, const at::Tensor& ar,
                      const c10::optional<at::Tensor>& ai) {
  const int64_t B = x.size(0), n = x.size(1), m = ar.size(0);
  const int64_t P = ai.has_value() ? 2 : 1;
  at::Tensor z = at::empty({P, B, m}, x.options());
  const float* xd = x.data_ptr<float>();
  for (int64_t p = 0; p < P; ++p) {
    const float* a = (p == 0 ? ar : *ai).data_ptr<float>();
    float* zd = z.data_ptr<float>() + p * B * m;
    at::parallel_for(0, m, kGrainRows, [&](int64_t i0, int64_t i1) {
      for (int64_t b = 0; b < B; b += 4)
        lin_group(std::min<int64_t>(4, B - b), a, xd + b * n, zd + b * m, i0, i1, n, m);
    });
  }
  return z;
}

at::Tensor stream_adj(const at::Tensor& w, const at::Tensor& ar,
                      const c10::optional<at::Tensor>& ai) {
  const int64_t P = w.size(0), B = w.size(1), m = w.size(2), n = ar.size(1);
  at::Tensor out = at::zeros({B, n}, w.options());
  float* od = out.data_ptr<float>();
  const int64_t tiles = (n + kCols - 1) / kCols;
  for (int64_t p = 0; p < P; ++p) {
    const float* a = (p == 0 ? ar : *ai).data_ptr<float>();
    const float* wd = w.data_ptr<float>() + p * B * m;
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kCols, j1 = std::min(n, j0 + kCols);
        for (int64_t b = 0; b < B; b += 4)
          adj_group(std::min<int64_t>(4, B - b), a, wd + b * m, od + b * n, j0, j1, n, m);
      }
    });
  }
  return out;
}

// Each task takes a block of rows: for every tile of kRows rows it forms z (reading the
// rows from memory), the residual weights w, then adds Σ_r w_r A_r to its own gradient
// buffer while the tile's rows are still in L2 (kRows × n floats per plane: 256 KB at
// n = 16384). So A is read from memory once where z = A x then Aᵀ w would read it twice;
// the task buffers are summed at the end. Real A: w = z − y. Complex A = ar + i ai
// (amplitude fit, |z| against y): w = (|z| − y) z / |z|, 0 where |z| = 0.
std::tuple<at::Tensor, at::Tensor> stream_normal(const at::Tensor& x, const at::Tensor& ar,
                                                 const c10::optional<at::Tensor>& ai,
                                                 const at::Tensor& y) {
  const int64_t B = x.size(0), n = x.size(1), m = ar.size(0);
  const int64_t P = ai.has_value() ? 2 : 1;
  at::Tensor z = at::empty({P, B, m}, x.options());
  const int64_t tiles = (m + kRows - 1) / kRows;
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles));
  at::Tensor parts = at::zeros({tasks, B, n}, x.options());
  const float* planes[2] = {ar.data_ptr<float>(), P == 2 ? ai->data_ptr<float>() : nullptr};
  const float *xd = x.data_ptr<float>(), *yd = y.data_ptr<float>();
  float *zd = z.data_ptr<float>(), *pd = parts.data_ptr<float>();
  const int64_t per_task = (tiles + tasks - 1) / tasks;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* g = pd + t * B * n;
      const int64_t first = t * per_task, last = std::min(tiles, first + per_task);
      float w[2][kStreamMaxRows * kRows];
      for (int64_t tile = first; tile < last; ++tile) {
        const int64_t i0 = tile * kRows, rows = std::min<int64_t>(kRows, m - i0);
        for (int64_t p = 0; p < P; ++p)
          for (int64_t b = 0; b < B; b += 4)
            lin_group(std::min<int64_t>(4, B - b), planes[p], xd + b * n, zd + (p * B + b) * m,
                      i0, i0 + rows, n, m);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t k = 0; k < rows; ++k) {
            const int64_t q = b * m + i0 + k;
            if (P == 1) {
              w[0][b * rows + k] = zd[q] - yd[q];
            } else {
              const float re = zd[q], im = zd[B * m + q], amp = std::sqrt(re * re + im * im);
              const float c = amp > 0 ? (amp - yd[q]) / amp : 0.0f;
              w[0][b * rows + k] = c * re;
              w[1][b * rows + k] = c * im;
            }
          }
        for (int64_t p = 0; p < P; ++p)
          for (int64_t b = 0; b < B; b += 4)
            adj_group(std::min<int64_t>(4, B - b), planes[p] + i0 * n, w[p] + b * rows,
                      g + b * n, 0, n, n, rows);
      }
    }
  });
  at::Tensor value = P == 1 ? z[0] : at::sqrt(z[0] * z[0] + z[1] * z[1]);
  return {value, tasks == 1 ? parts[0] : parts.sum(0)};
}

#else  // not x86-64 with GCC/Clang: ATen's GEMM everywhere

bool stream_applies(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  return false;
}
at::Tensor stream_lin(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "stream_lin needs x86-64 with AVX-512");
}
at::Tensor stream_adj(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "stream_adj needs x86-64 with AVX-512");
}
std::tuple<at::Tensor, at::Tensor> stream_normal(const at::Tensor&, const at::Tensor&,
                                                 const c10::optional<at::Tensor>&,
                                                 const at::Tensor&) {
  TORCH_CHECK(false, "stream_normal needs x86-64 with AVX-512");
}

#endif

}  // namespace cm
}  // namespace metadip
