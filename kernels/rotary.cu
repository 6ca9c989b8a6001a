// Rotary embedding in the rotate-half layout from per-token cos/sin tables.
//
// The tables carry the geometry, so one kernel serves the three conventions: M-RoPE (Qwen text,
// angles from the t/h/w position of each frequency's section), 2D vision rotary (rows, then
// columns) and 1D. `sign = +1` rotates by θ (Qwen: y1 = x1·c − x2·s, y2 = x2·c + x1·s); `sign = −1`
// by −θ (nanochat: y1 = x1·c + x2·s, y2 = x2·c − x1·s). Tables are f32 (tokens, ≥ dim/2) with
// row stride `table_stride`; only their first dim/2 columns are read. Math in f32.
#include "common.cuh"

template <typename T>
__device__ void rotary(const T* x, const float* cos, const float* sin, T* out, uint32_t tokens, uint32_t heads,
                       uint32_t dim, uint32_t table_stride, float sign) {
  const uint32_t half = dim / 2;
  GRID_STRIDE(i, (size_t)tokens * heads * half) {
    const size_t j = i % half, row = i / half, token = row / heads;
    const float c = cos[token * table_stride + j], s = sign * sin[token * table_stride + j];
    const float x1 = to_f32(x[row * dim + j]), x2 = to_f32(x[row * dim + j + half]);
    out[row * dim + j] = from_f32<T>(x1 * c - x2 * s);
    out[row * dim + j + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

#define INSTANTIATE(T, S)                                                                              \
  extern "C" __global__ void rotary_##S(const T* x, const float* cos, const float* sin, T* out,        \
                                        uint32_t tokens, uint32_t heads, uint32_t dim,                 \
                                        uint32_t table_stride, float sign) {                           \
    rotary<T>(x, cos, sin, out, tokens, heads, dim, table_stride, sign);                               \
  }
FOR_EACH_DTYPE(INSTANTIATE)
