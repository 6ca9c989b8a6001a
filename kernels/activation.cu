// Fused elementwise activations over contiguous rows, computed in f32 whatever the storage dtype.
#include "common.cuh"

// silu(gate) * up: the SwiGLU MLPs of Qwen2.5-VL's text model and vision tower.
template <typename T>
__device__ void silu_and_mul(const T* gate, const T* up, T* out, size_t n) {
  GRID_STRIDE(i, n) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.f + expf(-g)) * to_f32(up[i]));
  }
}

// relu(x)²: nanochat's MLP.
template <typename T>
__device__ void relu_squared(const T* x, T* out, size_t n) {
  GRID_STRIDE(i, n) {
    const float r = fmaxf(to_f32(x[i]), 0.f);
    out[i] = from_f32<T>(r * r);
  }
}

// cap · tanh(x / cap): nanochat's logit soft-capping.
template <typename T>
__device__ void softcap(const T* x, T* out, size_t n, float cap) {
  GRID_STRIDE(i, n) { out[i] = from_f32<T>(cap * tanhf(to_f32(x[i]) / cap)); }
}

#define INSTANTIATE(T, S)                                                                       \
  extern "C" __global__ void silu_and_mul_##S(const T* gate, const T* up, T* out, size_t n) {  \
    silu_and_mul<T>(gate, up, out, n);                                                          \
  }                                                                                             \
  extern "C" __global__ void relu_squared_##S(const T* x, T* out, size_t n) { relu_squared<T>(x, out, n); } \
  extern "C" __global__ void softcap_##S(const T* x, T* out, size_t n, float cap) { softcap<T>(x, out, n, cap); }
FOR_EACH_DTYPE(INSTANTIATE)
