// Runs the CUDA C++ of kernels/*.cu on the CPU, to check the kernels' logic (indexing, masks,
// barriers, warp shuffles, the split-K merge) where there is no GPU. Force-included before each
// kernel source (g++ -include).
//
// A launch runs its blocks one after another on blockDim OS threads: __syncthreads is a barrier
// of the block's threads, a warp's shuffle an exchange through memory between two barriers of
// its 32 threads. Since only one block runs at a time, `static` locals stand in for __shared__
// arrays. bf16 and f16 are bit patterns converted with round-to-nearest-even, as on the GPU.
// Arithmetic is the host's (no fused multiply-add contraction, no fast-math), so results match
// the GPU's to rounding, not bit for bit.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#define VELLUM_CUDA_ON_CPU 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(cuda_on_cpu::dynamic_shared.data())

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace cuda_on_cpu {
struct Warp {
  std::unique_ptr<std::barrier<>> barrier;
  float slots[32];
};
inline thread_local unsigned tid;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<Warp> warps;
inline std::vector<float> dynamic_shared;
}  // namespace cuda_on_cpu

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline void __syncthreads() { cuda_on_cpu::block_barrier->arrive_and_wait(); }
inline void __syncwarp() { cuda_on_cpu::warps[cuda_on_cpu::tid / 32].barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  auto& w = cuda_on_cpu::warps[cuda_on_cpu::tid / 32];
  const unsigned lane = cuda_on_cpu::tid % 32;
  w.slots[lane] = v;
  w.barrier->arrive_and_wait();
  const float r = w.slots[lane ^ offset];
  w.barrier->arrive_and_wait();
  return r;
}

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {uint16_t(0x7fc0)};
  u += 0x7fff + ((u >> 16) & 1);
  return {uint16_t(u >> 16)};
}
inline float __half2float(__half x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, 2);
  return float(h);
}
inline __half __float2half_rn(float f) {
  const _Float16 h = _Float16(f);
  __half x;
  std::memcpy(&x.bits, &h, 2);
  return x;
}
// Conversions for the emulation and its driver.
inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_float(__half x) { return __half2float(x); }
template <typename T> T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> inline __half from_float<__half>(float x) { return __float2half_rn(x); }

// wmma, as its API defines it: a fragment is the whole 16×16 tile (every thread holds a copy;
// the real layout across lanes is opaque to kernels that only load, multiply and store), loads
// read from memory the caller synchronised, mma accumulates in f32, and lane 0 stores (the
// caller synchronises before reading back, as on the GPU).
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 tiles are emulated");
  float v[256];
};

template <typename Use, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const P* p, unsigned ldm) {
  // Element (row, col) of the tile: A is (m, k), B is (k, n).
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.v[r * 16 + c] = to_float(std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}

template <typename T>
void fill_fragment(fragment<accumulator, 16, 16, 16, T>& f, float value) {
  for (auto& x : f.v) x = value;
}

template <typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = c.v[m * 16 + n];
      for (int k = 0; k < 16; ++k) acc += a.v[m * 16 + k] * b.v[k * 16 + n];
      out[m * 16 + n] = acc;
    }
  std::memcpy(d.v, out, sizeof out);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t layout) {
  if (cuda_on_cpu::tid % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r * 16 + c];
}
}  // namespace nvcuda::wmma

namespace cuda_on_cpu {
// Runs `kernel` (a call of the kernel with its arguments bound) over the grid.
template <typename F>
void launch(dim3 grid, dim3 block, size_t shared_bytes, F kernel) {
  gridDim = grid;
  blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  dynamic_shared.assign(shared_bytes / sizeof(float) + 1, NAN);  // poisoned, as unwritten memory should be
  block_barrier = std::make_unique<std::barrier<>>(threads);
  warps = std::vector<Warp>((threads + 31) / 32);
  for (unsigned w = 0; w < warps.size(); ++w)
    warps[w].barrier = std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w));
  std::barrier<> between_blocks(threads);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      tid = t;
      threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            blockIdx = {x, y, z};
            kernel();
            between_blocks.arrive_and_wait();  // the block is done before its shared memory is reused
          }
    });
  }
  for (auto& t : pool) t.join();
}
}  // namespace cuda_on_cpu
