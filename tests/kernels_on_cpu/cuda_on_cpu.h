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
#include <vector>

#define VELLUM_CUDA_ON_CPU 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
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
