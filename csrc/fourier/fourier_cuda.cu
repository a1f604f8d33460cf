// Fourier features on CUDA: one thread per (k, pixel) for the forward; the
// backward reduces per block into a partial buffer summed by ATen (deterministic).
// Compiled for sm_90 in CI (.ci/compile_cuda.sh); never run on a GPU yet.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"

namespace metadip {
namespace {

constexpr int kThreads = 256;
constexpr double kTwoPi = 6.283185307179586;

template <typename T>
__global__ void ff_fwd_kernel(const T* __restrict__ b, T* __restrict__ out, int64_t K, int64_t H,
                              int64_t W) {
  const int64_t k = blockIdx.y;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= H * W) return;
  const T ph = static_cast<T>(idx / W) / static_cast<T>(H);
  const T pw = static_cast<T>(idx % W) / static_cast<T>(W);
  const T phi = static_cast<T>(kTwoPi) * (b[2 * k] * ph + b[2 * k + 1] * pw);
  out[k * H * W + idx] = sin(phi);
  out[(K + k) * H * W + idx] = cos(phi);
}

template <typename T>
__global__ void ff_bwd_kernel(const T* __restrict__ g, const T* __restrict__ b,
                              T* __restrict__ part, int64_t K, int64_t H, int64_t W) {
  __shared__ T r0[kThreads], r1[kThreads];
  const int64_t k = blockIdx.y;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  T a0 = 0, a1 = 0;
  if (idx < H * W) {
    const T ph = static_cast<T>(idx / W) / static_cast<T>(H);
    const T pw = static_cast<T>(idx % W) / static_cast<T>(W);
    const T phi = static_cast<T>(kTwoPi) * (b[2 * k] * ph + b[2 * k + 1] * pw);
    const T t = g[k * H * W + idx] * cos(phi) - g[(K + k) * H * W + idx] * sin(phi);
    a0 = t * ph;
    a1 = t * pw;
  }
  r0[threadIdx.x] = a0;
  r1[threadIdx.x] = a1;
  __syncthreads();
  for (int off = kThreads / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) {
      r0[threadIdx.x] += r0[threadIdx.x + off];
      r1[threadIdx.x] += r1[threadIdx.x + off];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    T* dst = part + (k * gridDim.x + blockIdx.x) * 2;
    dst[0] = static_cast<T>(kTwoPi) * r0[0];
    dst[1] = static_cast<T>(kTwoPi) * r1[0];
  }
}

void check_b(const at::Tensor& b, int64_t H, int64_t W) {
  TORCH_CHECK_VALUE(b.dim() == 2 && b.size(1) == 2,
                    "fourier_features expects b of shape (k, 2), got ", b.sizes());
  TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat || b.scalar_type() == at::kDouble,
                   "fourier_features supports float32/float64, got ", b.scalar_type());
  TORCH_CHECK_VALUE(H >= 1 && W >= 1, "fourier_features needs height, width >= 1, got ", H, "x",
                    W);
}

}  // namespace

at::Tensor ff_fwd_cuda(const at::Tensor& b_, int64_t H, int64_t W) {
  check_b(b_, H, W);
  c10::cuda::CUDAGuard guard(b_.device());
  const at::Tensor b = b_.contiguous();
  const int64_t K = b.size(0);
  at::Tensor out = new_output({2 * K, H, W}, b.options());
  const dim3 grid((H * W + kThreads - 1) / kThreads, K);
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "ff_fwd_cuda", [&] {
    ff_fwd_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), K, H, W);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor ff_bwd_cuda(const at::Tensor& g_, const at::Tensor& b_, int64_t H, int64_t W) {
  check_b(b_, H, W);
  c10::cuda::CUDAGuard guard(b_.device());
  const at::Tensor b = b_.contiguous();
  const int64_t K = b.size(0);
  TORCH_CHECK_VALUE(g_.dim() == 3 && g_.size(0) == 2 * K && g_.size(1) == H && g_.size(2) == W,
                    "fourier_features backward expects g of shape (", 2 * K, ", ", H, ", ", W,
                    "), got ", g_.sizes());
  const at::Tensor g = g_.to(b.scalar_type()).contiguous();
  const dim3 grid((H * W + kThreads - 1) / kThreads, K);
  at::Tensor part = new_output({K, static_cast<int64_t>(grid.x), 2}, b.options());
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "ff_bwd_cuda", [&] {
    ff_bwd_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        g.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), part.data_ptr<scalar_t>(), K, H, W);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return part.sum(1);
}

}  // namespace metadip
