// Complex (or real) Gaussian measurements on CUDA.
// Dense A: cuBLAS GEMMs through ATen plus fused elementwise epilogue/prologue
// kernels (magnitude, phase weights). Seeded A: entries generated per thread by
// gauss_pair (csrc/common.h), n (or m) split across blocks, batch in register
// chunks, partial sums combined with atomicAdd.
// Compiled for sm_90 in CI (.ci/compile_cuda.sh); never run on a GPU yet.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "../common.h"
#include "../ops.h"
#include "cmeasure_dense.h"

namespace metadip {
namespace {

constexpr int kThreads = 128;
constexpr int kChunkB = 8;    // batch items accumulated in registers per pass
constexpr int64_t kSplit = 256;  // columns (rows) per block along the reduced axis

template <typename T>
__global__ void seeded_lin_kernel(const T* __restrict__ x, T* __restrict__ z, int64_t B,
                                  int64_t m, int64_t n, uint64_t seed, T scale, int planes) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= m) return;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kSplit;
  const int64_t j1 = min(n, j0 + kSplit);
  for (int64_t b0 = 0; b0 < B; b0 += kChunkB) {
    T ar[kChunkB] = {0}, ai[kChunkB] = {0};
    for (int64_t j = j0; j < j1; ++j) {
      float gr, gi;
      gauss_pair(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(j), &gr, &gi);
      const T a_r = static_cast<T>(gr) * scale, a_i = static_cast<T>(gi) * scale;
#pragma unroll
      for (int q = 0; q < kChunkB; ++q) {
        if (b0 + q < B) {
          const T xv = x[(b0 + q) * n + j];
          ar[q] += a_r * xv;
          ai[q] += a_i * xv;
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kChunkB; ++q) {
      if (b0 + q < B) {
        atomicAdd(z + (b0 + q) * m + i, ar[q]);
        if (planes == 2) atomicAdd(z + B * m + (b0 + q) * m + i, ai[q]);
      }
    }
  }
}

template <typename T>
__global__ void seeded_adj_kernel(const T* __restrict__ w, T* __restrict__ out, int64_t B,
                                  int64_t m, int64_t n, uint64_t seed, T scale, int planes) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= n) return;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kSplit;
  const int64_t i1 = min(m, i0 + kSplit);
  for (int64_t b0 = 0; b0 < B; b0 += kChunkB) {
    T acc[kChunkB] = {0};
    for (int64_t i = i0; i < i1; ++i) {
      float gr, gi;
      gauss_pair(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(j), &gr, &gi);
      const T a_r = static_cast<T>(gr) * scale, a_i = static_cast<T>(gi) * scale;
#pragma unroll
      for (int q = 0; q < kChunkB; ++q) {
        if (b0 + q < B) {
          acc[q] += w[(b0 + q) * m + i] * a_r;
          if (planes == 2) acc[q] += w[B * m + (b0 + q) * m + i] * a_i;
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kChunkB; ++q) {
      if (b0 + q < B) atomicAdd(out + (b0 + q) * n + j, acc[q]);
    }
  }
}

template <typename T>
__global__ void materialize_kernel(T* __restrict__ a, int64_t m, int64_t n, uint64_t seed, T scale,
                                   int planes) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= m * n) return;
  const int64_t i = idx / n, j = idx % n;
  float gr, gi;
  gauss_pair(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(j), &gr, &gi);
  a[idx] = static_cast<T>(gr) * scale;
  if (planes == 2) a[m * n + idx] = static_cast<T>(gi) * scale;
}

template <typename T>
__global__ void magnitude_kernel(const T* __restrict__ z, T* __restrict__ y, int64_t count) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (q >= count) return;
  const T re = z[q], im = z[count + q];
  y[q] = sqrt(re * re + im * im);
}

template <typename T>
__global__ void phase_kernel(const T* __restrict__ g, const T* __restrict__ z, T* __restrict__ w,
                             int64_t count) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (q >= count) return;
  const T re = z[q], im = z[count + q];
  const T r = sqrt(re * re + im * im);
  const T k = r > 0 ? g[q] / r : T(0);  // d|z|/dz := 0 at z = 0, as in the reference
  w[q] = k * re;
  w[count + q] = k * im;
}

int blocks(int64_t count) { return static_cast<int>((count + kThreads - 1) / kThreads); }

}  // namespace

at::Tensor cm_lin_cuda(const at::Tensor& x_, const c10::optional<at::Tensor>& ar,
                       const c10::optional<at::Tensor>& ai, int64_t seed, int64_t m, bool cplx,
                       double scale) {
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = cm::checked_x(x_);
  const int64_t B = x.size(0), n = x.size(1);
  if (ar.has_value()) return cm::dense_lin(x, *ar, ai);
  TORCH_CHECK_VALUE(seed >= 0 && m >= 1, "seeded A needs seed >= 0 and m >= 1");
  const int P = cplx ? 2 : 1;
  at::Tensor z = at::zeros({P, B, m}, x.options());  // atomically accumulated
  const dim3 grid(blocks(m), (n + kSplit - 1) / kSplit);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cm_lin_seeded_cuda", [&] {
    seeded_lin_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), B, m, n, static_cast<uint64_t>(seed),
        static_cast<scalar_t>(scale), P);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return z;
}

at::Tensor cm_adj_cuda(const at::Tensor& w_, const c10::optional<at::Tensor>& ar,
                       const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                       double scale) {
  c10::cuda::CUDAGuard guard(w_.device());
  const at::Tensor w = cm::checked_w(w_);
  const int64_t P = w.size(0), B = w.size(1), m = w.size(2);
  if (ar.has_value()) return cm::dense_adj(w, *ar, ai);
  TORCH_CHECK_VALUE(seed >= 0, "seed must be >= 0, got ", seed);
  at::Tensor out = at::zeros({B, n}, w.options());  // atomically accumulated
  const dim3 grid(blocks(n), (m + kSplit - 1) / kSplit);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "cm_adj_seeded_cuda", [&] {
    seeded_adj_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, m, n, static_cast<uint64_t>(seed),
        static_cast<scalar_t>(scale), static_cast<int>(P));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor cm_adj_phase_cuda(const at::Tensor& g_, const at::Tensor& z_,
                             const c10::optional<at::Tensor>& ar,
                             const c10::optional<at::Tensor>& ai, int64_t seed, int64_t n,
                             double scale) {
  TORCH_CHECK_VALUE(z_.dim() == 3 && z_.size(0) == 2, "z must be (2, B, m), got ", z_.sizes());
  TORCH_CHECK_VALUE(g_.dim() == 2 && g_.size(0) == z_.size(1) && g_.size(1) == z_.size(2),
                    "g must be (B, m) = (", z_.size(1), ", ", z_.size(2), "), got ", g_.sizes());
  c10::cuda::CUDAGuard guard(z_.device());
  const at::Tensor z = z_.contiguous();
  const at::Tensor g = g_.to(z.scalar_type()).contiguous();
  const int64_t count = g.numel();
  at::Tensor w = new_output(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "cm_phase_cuda", [&] {
    phase_kernel<scalar_t><<<blocks(count), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        g.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), count);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return cm_adj_cuda(w, ar, ai, seed, n, scale);
}

at::Tensor cm_materialize_cuda(int64_t seed, int64_t m, int64_t n, bool cplx, double scale,
                               at::ScalarType dtype) {
  TORCH_CHECK_VALUE(seed >= 0 && m >= 1 && n >= 1, "materialize needs seed >= 0, m, n >= 1");
  const int P = cplx ? 2 : 1;
  at::Tensor a = new_output({P, m, n}, at::TensorOptions().dtype(dtype).device(at::kCUDA));
  AT_DISPATCH_FLOATING_TYPES(dtype, "cm_materialize_cuda", [&] {
    materialize_kernel<scalar_t><<<blocks(m * n), kThreads, 0,
                                   c10::cuda::getCurrentCUDAStream()>>>(
        a.data_ptr<scalar_t>(), m, n, static_cast<uint64_t>(seed), static_cast<scalar_t>(scale),
        P);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return a;
}

std::tuple<at::Tensor, at::Tensor> cm_meas_cuda(const at::Tensor& x,
                                                const c10::optional<at::Tensor>& ar,
                                                const c10::optional<at::Tensor>& ai, int64_t seed,
                                                int64_t m, double scale) {
  TORCH_CHECK_VALUE(!ar.has_value() || ai.has_value(), "|Ax| needs both planes of a complex A");
  at::Tensor z = cm_lin_cuda(x, ar, ai, seed, m, true, scale);
  const int64_t count = z.size(1) * z.size(2);
  at::Tensor y = new_output({z.size(1), z.size(2)}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "cm_mag_cuda", [&] {
    magnitude_kernel<scalar_t><<<blocks(count), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        z.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), count);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, z};
}

}  // namespace metadip
