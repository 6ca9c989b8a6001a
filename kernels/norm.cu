// RMSNorm, one block per row, optionally fused with the residual add before it.
//
// The arithmetic follows the references' order so the kernel and its CPU twin round alike:
// statistics in f32, the normalised row rounded to the storage dtype, then the learned scale
// (Qwen); `weight == nullptr` is nanochat's parameter-free norm. With `residual`, the row is
// first `x + residual` rounded to the dtype, which is also written to `sum_out`.
#include "common.cuh"

template <typename T>
__device__ void rms_norm(const T* x, const T* residual, const T* weight, T* out, T* sum_out, uint32_t cols,
                         float eps) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * cols;
  float squares = 0.f;
  for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = to_f32(x[base + c]);
    if (residual != nullptr) {
      const T s = from_f32<T>(v + to_f32(residual[base + c]));
      sum_out[base + c] = s;
      v = to_f32(s);
    }
    squares += v * v;
  }
  const float inv = 1.f / sqrtf(block_sum(squares, scratch) / (float)cols + eps);
  for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x) {
    // The same thread wrote sum_out[base + c] above.
    const float v = residual != nullptr ? to_f32(sum_out[base + c]) : to_f32(x[base + c]);
    const T y = from_f32<T>(v * inv);
    out[base + c] = weight != nullptr ? from_f32<T>(to_f32(y) * to_f32(weight[c])) : y;
  }
}

#define INSTANTIATE(T, S)                                                                             \
  extern "C" __global__ void rms_norm_##S(const T* x, const T* residual, const T* weight, T* out,     \
                                          T* sum_out, uint32_t cols, float eps) {                      \
    rms_norm<T>(x, residual, weight, out, sum_out, cols, eps);                                         \
  }
FOR_EACH_DTYPE(INSTANTIATE)
