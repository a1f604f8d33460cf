// Shared helpers for the CPU and CUDA kernels: the counter-based Gaussian that
// defines seeded measurement matrices. It must match kernels/cmeasure.py and
// metadip/dispatch.py bit for bit in its integer part.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MD_HOST_DEVICE inline
#endif

#include <cmath>

namespace metadip {

// Philox4x32-10 (Salmon et al. 2011), the same round function as triton.language.random.
MD_HOST_DEVICE void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[1] = static_cast<uint32_t>(p1);
    c[3] = static_cast<uint32_t>(p0);
    c[0] = n0;
    c[2] = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Standard normal pair for entry (row, col): key = seed, counter = (col, row, 0, 0);
// u = ((r >> 9) + 1/2) * 2^-23 lies in (0, 1) and is exact in float32, so log(u) is finite.
// Box-Muller: re = sqrt(-2 ln u0) cos(2π u1), im = sqrt(-2 ln u0) sin(2π u1), in float32.
MD_HOST_DEVICE void gauss_pair(uint64_t seed, uint32_t row, uint32_t col, float* re, float* im) {
  uint32_t c[4] = {col, row, 0u, 0u};
  philox4x32_10(c, static_cast<uint32_t>(seed & 0xffffffffu), static_cast<uint32_t>(seed >> 32));
  const float u0 = (static_cast<float>(c[0] >> 9) + 0.5f) * 1.1920928955078125e-07f;
  const float u1 = (static_cast<float>(c[1] >> 9) + 0.5f) * 1.1920928955078125e-07f;
  const float r = sqrtf(-2.0f * logf(u0));
  const float th = 6.283185307179586f * u1;
  *re = r * cosf(th);
  *im = r * sinf(th);
}

}  // namespace metadip
