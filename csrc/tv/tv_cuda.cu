// Smoothed isotropic TV on CUDA: one thread per pixel, the 7-point stencil of
// kernels/tv.py; per-block partial sums of the value are reduced by ATen.
// Written to mirror the Triton kernel; not compiled or tested on the machine it
// was written on (no GPU there).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"

namespace metadip {
namespace {

constexpr int kBX = 32, kBY = 8;

template <typename T>
__device__ __forceinline__ T at2(const T* p, int64_t i, int64_t j, int64_t H, int64_t W) {
  return (i >= 0 && i < H && j >= 0 && j < W) ? p[i * W + j] : T(0);
}

// Differences at (i,j), (i-1,j), (i,j-1) (zero where they do not exist).
template <typename T>
__device__ __forceinline__ void diffs(const T* p, int64_t i, int64_t j, int64_t H, int64_t W,
                                      T d[6]) {
  const T c = at2(p, i, j, H, W);
  const bool dn = i + 1 < H, rt = j + 1 < W, up = i >= 1, lf = j >= 1;
  d[0] = dn ? at2(p, i + 1, j, H, W) - c : T(0);
  d[1] = rt ? at2(p, i, j + 1, H, W) - c : T(0);
  d[2] = up ? c - at2(p, i - 1, j, H, W) : T(0);
  d[3] = (up && rt) ? at2(p, i - 1, j + 1, H, W) - at2(p, i - 1, j, H, W) : T(0);
  d[4] = (lf && dn) ? at2(p, i + 1, j - 1, H, W) - at2(p, i, j - 1, H, W) : T(0);
  d[5] = lf ? c - at2(p, i, j - 1, H, W) : T(0);
}

template <typename T>
__global__ void tv_fwd_kernel(const T* __restrict__ x, T* __restrict__ grad, T* __restrict__ part,
                              int64_t H, int64_t W, T eps) {
  __shared__ T red[kBX * kBY];
  const int64_t p = blockIdx.z;
  const int64_t i = blockIdx.y * kBY + threadIdx.y, j = blockIdx.x * kBX + threadIdx.x;
  const T* xp = x + p * H * W;
  const bool inside = i < H && j < W;
  T s_val = 0;
  if (inside) {
    T d[6];
    diffs(xp, i, j, H, W, d);
    const T s = sqrt(d[0] * d[0] + d[1] * d[1] + eps);
    const T su = sqrt(d[2] * d[2] + d[3] * d[3] + eps);
    const T sl = sqrt(d[4] * d[4] + d[5] * d[5] + eps);
    if (grad != nullptr) grad[p * H * W + i * W + j] = -(d[0] + d[1]) / s + d[2] / su + d[5] / sl;
    s_val = s;
  }
  const int t = threadIdx.y * kBX + threadIdx.x;
  red[t] = s_val;
  __syncthreads();
  for (int off = kBX * kBY / 2; off > 0; off >>= 1) {
    if (t < off) red[t] += red[t + off];
    __syncthreads();
  }
  if (t == 0) {
    part[(p * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x] = red[0];
  }
}

template <typename T>
__global__ void tv_hvp_kernel(const T* __restrict__ x, const T* __restrict__ v, T* __restrict__ out,
                              int64_t H, int64_t W, T eps) {
  const int64_t p = blockIdx.z;
  const int64_t i = blockIdx.y * kBY + threadIdx.y, j = blockIdx.x * kBX + threadIdx.x;
  if (i >= H || j >= W) return;
  T d[6], e[6];
  diffs(x + p * H * W, i, j, H, W, d);
  diffs(v + p * H * W, i, j, H, W, e);
  const T s = sqrt(d[0] * d[0] + d[1] * d[1] + eps);
  const T su = sqrt(d[2] * d[2] + d[3] * d[3] + eps);
  const T sl = sqrt(d[4] * d[4] + d[5] * d[5] + eps);
  const T k = (d[0] * e[0] + d[1] * e[1]) / (s * s * s);
  const T ku = (d[2] * e[2] + d[3] * e[3]) / (su * su * su);
  const T kl = (d[4] * e[4] + d[5] * e[5]) / (sl * sl * sl);
  const T du = e[0] / s - d[0] * k, dv = e[1] / s - d[1] * k;
  const T du_u = e[2] / su - d[2] * ku, dv_l = e[5] / sl - d[5] * kl;
  out[p * H * W + i * W + j] = -(du + dv) + du_u + dv_l;
}

void check_x(const at::Tensor& x, double eps) {
  TORCH_CHECK_VALUE(x.dim() == 4, "tv expects x of shape (B, C, H, W), got ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "tv supports float32/float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(eps > 0, "tv needs eps > 0, got ", eps);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> tv_fwd_cuda(const at::Tensor& x_, double eps, bool with_grad) {
  check_x(x_, eps);
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const dim3 block(kBX, kBY);
  const dim3 grid((W + kBX - 1) / kBX, (H + kBY - 1) / kBY, B * C);
  at::Tensor grad = with_grad ? new_output(x.sizes(), x.options()) : at::empty({0}, x.options());
  at::Tensor part = new_output({B, C * grid.y * grid.x}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_fwd_cuda", [&] {
    tv_fwd_kernel<scalar_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), with_grad ? grad.data_ptr<scalar_t>() : nullptr,
        part.data_ptr<scalar_t>(), H, W,
        static_cast<scalar_t>(eps));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {part.sum(1), grad};
}

at::Tensor tv_hvp_cuda(const at::Tensor& x_, const at::Tensor& v_, double eps) {
  check_x(x_, eps);
  TORCH_CHECK_VALUE(v_.sizes() == x_.sizes(), "tv_hvp: v must have x's shape ", x_.sizes(),
                    ", got ", v_.sizes());
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous();
  const at::Tensor v = v_.to(x.scalar_type()).contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const dim3 block(kBX, kBY);
  const dim3 grid((W + kBX - 1) / kBX, (H + kBY - 1) / kBY, B * C);
  at::Tensor out = new_output(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_hvp_cuda", [&] {
    tv_hvp_kernel<scalar_t><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), H, W,
        static_cast<scalar_t>(eps));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace metadip
