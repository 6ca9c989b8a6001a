// Attention over the paged KV cache (decode and prefill), the cache write, and packed
// variable-length attention for the vision tower.
//
// Cache layout, per layer: [num_blocks][block_size][kv_heads][head_dim]; a sequence's position p
// lives in block `block_tables[seq][p / block_size]`, slot `p % block_size`. Scores, softmax and
// accumulation are f32 whatever the storage dtype; queries are pre-scaled by 1/sqrt(head_dim).
#include "common.cuh"
#ifndef VELLUM_CUDA_ON_CPU
#include <mma.h>
#endif

// ---------------------------------------------------------------------------------------------
// KV-cache write: row t of `src` (tokens, kv_heads·head_dim) goes to slot `slots[t]` of `cache`.
// grid: tokens; block: up to 1024 threads over the row.
template <typename T>
__device__ void reshape_and_cache(const T* src, T* cache, const uint32_t* slots, uint32_t row) {
  const size_t t = blockIdx.x, slot = slots[t];
  for (uint32_t i = threadIdx.x; i < row; i += blockDim.x) cache[slot * row + i] = src[t * row + i];
}

__device__ __forceinline__ size_t cache_row(const uint32_t* table, uint32_t pos, uint32_t block_size) {
  return (size_t)table[pos / block_size] * block_size + pos % block_size;
}

// ---------------------------------------------------------------------------------------------
// Decode: one query token per sequence. grid: (kv_heads, seqs, partitions); block: DECODE_THREADS.
// A block serves the `group` query heads that share one KV head (GQA), so each cached K/V row is
// read once for all of them, and covers `partition_size` positions of its sequence. With one
// partition the block writes the final output; with several (split-K, for long contexts) it
// writes each head's partition output (normalised), max score and exp-sum, and
// `paged_decode_reduce` merges them. Dynamic shared memory: group·(D + warps·D + partition) + 32
// floats.
constexpr int DECODE_THREADS = 128, MAX_GROUP = 8;

template <typename T, int D>
__device__ void paged_decode(T* out, float* part_out, float* part_max, float* part_sum, const T* q,
                             const T* k_cache, const T* v_cache, const uint32_t* block_tables,
                             const uint32_t* context_lens, uint32_t max_blocks, uint32_t block_size,
                             uint32_t heads, float scale, uint32_t partition_size) {
  const uint32_t kvh = blockIdx.x, seq = blockIdx.y, part = blockIdx.z;
  const uint32_t kv_heads = gridDim.x, parts = gridDim.z, group = heads / kv_heads;
  const uint32_t ctx = context_lens[seq], start = part * partition_size;
  if (start >= ctx) return;  // the whole block leaves together
  const uint32_t end = min(ctx, start + partition_size), n = end - start;
  constexpr int WARPS = DECODE_THREADS / 32, PER_LANE = (D + 31) / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  DYNAMIC_SHARED(float, smem);
  float* qs = smem;                              // [group][D]
  float* partial = qs + group * D;               // [warps][group][D]
  float* logits = partial + WARPS * group * D;   // [group][partition]
  float* scratch = logits + group * partition_size;  // [32]
  __shared__ float row_max[MAX_GROUP], row_sum[MAX_GROUP];

  const size_t q0 = ((size_t)seq * heads + (size_t)kvh * group) * D;  // the group's heads are adjacent
  for (uint32_t i = threadIdx.x; i < group * D; i += blockDim.x) qs[i] = to_f32(q[q0 + i]) * scale;
  __syncthreads();

  const uint32_t* table = block_tables + (size_t)seq * max_blocks;
  const size_t row = (size_t)kv_heads * D;
  // Scores: a warp per position, lanes across the head dimension, the K row held in registers.
  for (uint32_t p = start + warp; p < end; p += WARPS) {
    const T* k = k_cache + cache_row(table, p, block_size) * row + (size_t)kvh * D;
    float kr[PER_LANE];
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) kr[j] = lane + 32 * j < D ? to_f32(k[lane + 32 * j]) : 0.f;
    for (uint32_t g = 0; g < group; ++g) {
      float dot = 0.f;
#pragma unroll
      for (int j = 0; j < PER_LANE; ++j)
        if (lane + 32 * j < D) dot += qs[g * D + lane + 32 * j] * kr[j];
      dot = warp_sum(dot);
      if (lane == 0) logits[g * partition_size + (p - start)] = dot;
    }
  }
  __syncthreads();
  for (uint32_t g = 0; g < group; ++g) {
    float* lg = logits + g * partition_size;
    float m = -INFINITY;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, lg[i]);
    m = block_max(m, scratch);
    float s = 0.f;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float e = expf(lg[i] - m);
      lg[i] = e;
      s += e;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
      row_max[g] = m;
      row_sum[g] = s;
    }
  }
  __syncthreads();  // the exponentials and the row statistics are published

  float acc[MAX_GROUP][PER_LANE];
#pragma unroll
  for (int g = 0; g < MAX_GROUP; ++g)
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) acc[g][j] = 0.f;
  for (uint32_t p = start + warp; p < end; p += WARPS) {
    const T* v = v_cache + cache_row(table, p, block_size) * row + (size_t)kvh * D;
    float vr[PER_LANE];
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) vr[j] = lane + 32 * j < D ? to_f32(v[lane + 32 * j]) : 0.f;
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
      if (g < (int)group) {
        const float w = logits[g * partition_size + (p - start)];
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) acc[g][j] += w * vr[j];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < MAX_GROUP; ++g) {
    if (g < (int)group) {
#pragma unroll
      for (int j = 0; j < PER_LANE; ++j)
        if (lane + 32 * j < D) partial[(warp * group + g) * D + lane + 32 * j] = acc[g][j];
    }
  }
  __syncthreads();
  for (uint32_t idx = threadIdx.x; idx < group * D; idx += blockDim.x) {
    const uint32_t g = idx / D, i = idx % D, head = kvh * group + g;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) o += partial[(w * group + g) * D + i];
    o /= row_sum[g];
    if (parts == 1) {
      out[((size_t)seq * heads + head) * D + i] = from_f32<T>(o);
    } else {
      part_out[(((size_t)seq * heads + head) * parts + part) * D + i] = o;
    }
  }
  if (parts > 1 && threadIdx.x < group) {
    const size_t at = ((size_t)seq * heads + kvh * group + threadIdx.x) * parts + part;
    part_max[at] = row_max[threadIdx.x];
    part_sum[at] = row_sum[threadIdx.x];
  }
}

// Merges the partitions of a split-K decode. grid: (heads, seqs); block: DECODE_THREADS.
template <typename T, int D>
__device__ void paged_decode_reduce(T* out, const float* part_out, const float* part_max, const float* part_sum,
                                    const uint32_t* context_lens, uint32_t partition_size, uint32_t parts) {
  const uint32_t head = blockIdx.x, seq = blockIdx.y, heads = gridDim.x;
  const uint32_t used = (context_lens[seq] + partition_size - 1) / partition_size;
  const size_t base = ((size_t)seq * heads + head) * parts;
  float m = -INFINITY;
  for (uint32_t p = 0; p < used; ++p) m = fmaxf(m, part_max[base + p]);
  float total = 0.f;
  for (uint32_t p = 0; p < used; ++p) total += part_sum[base + p] * expf(part_max[base + p] - m);
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float o = 0.f;
    for (uint32_t p = 0; p < used; ++p)
      o += part_sum[base + p] * expf(part_max[base + p] - m) * part_out[(base + p) * D + i];
    out[((size_t)seq * heads + head) * D + i] = from_f32<T>(o / total);
  }
}

// ---------------------------------------------------------------------------------------------
// Tiled attention with an online softmax, for many query rows per sequence. grid: (query tiles
// of BQ rows, heads, seqs); block: BQ·8 threads, 8 per query row: thread c of a row scores keys
// c, c+8, … of each tile and accumulates output dims c, c+8, ….
//   PAGED (prefill, and mixed batches): queries are rows cu_q[s]..cu_q[s+1] of sequence s, keys
//     and values come from the cache, and row j sees positions ≤ context_lens[s] + j (its own
//     key was written to the cache before).
//   !PAGED (vision varlen): keys and values are packed rows like the queries (kv_heads = heads
//     allowed to differ), each segment attends within itself, no mask.
constexpr int BQ = 16, BK = 32, TILE_THREADS = BQ * 8;

template <typename T, int D, bool PAGED>
__device__ void tiled_attention(T* out, const T* q, const T* k, const T* v, const uint32_t* cu_q,
                                const uint32_t* context_lens, const uint32_t* block_tables, uint32_t max_blocks,
                                uint32_t block_size, uint32_t heads, uint32_t kv_heads, float scale) {
  const uint32_t tile = blockIdx.x, head = blockIdx.y, seq = blockIdx.z;
  const uint32_t q_start = cu_q[seq], q_len = cu_q[seq + 1] - q_start, row0 = tile * BQ;
  if (row0 >= q_len) return;
  const uint32_t ctx = PAGED ? context_lens[seq] : 0;
  const uint32_t kv_end = PAGED ? ctx + min(row0 + BQ, q_len) : q_len;
  const uint32_t kvh = head / (heads / kv_heads);
  const uint32_t* table = PAGED ? block_tables + (size_t)seq * max_blocks : nullptr;
  const size_t kv_row = (size_t)kv_heads * D;

  // +1 pads keep the rows of a warp on different banks.
  __shared__ float qs[BQ][D + 1];
  __shared__ float ks[BK][D + 1];
  __shared__ float vs[BK][D];
  __shared__ float ps[BQ][BK];

  const int r = threadIdx.x / 8, c = threadIdx.x % 8;
  const uint32_t qi = row0 + r;
  const bool row_valid = qi < q_len;
  for (int i = threadIdx.x; i < BQ * D; i += TILE_THREADS) {
    const int rr = i / D, d = i % D;
    qs[rr][d] = row0 + rr < q_len ? to_f32(q[((size_t)(q_start + row0 + rr) * heads + head) * D + d]) * scale : 0.f;
  }
  constexpr int PER_THREAD = D / 8;
  float acc[PER_THREAD];
#pragma unroll
  for (int j = 0; j < PER_THREAD; ++j) acc[j] = 0.f;
  float m = -INFINITY, l = 0.f;

  for (uint32_t kv0 = 0; kv0 < kv_end; kv0 += BK) {
    __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
    for (int i = threadIdx.x; i < BK * D; i += TILE_THREADS) {
      const int kk = i / D, d = i % D;
      const uint32_t pos = kv0 + kk;
      float kval = 0.f, vval = 0.f;
      if (pos < kv_end) {
        const size_t off = PAGED ? cache_row(table, pos, block_size) * kv_row + (size_t)kvh * D + d
                                 : ((size_t)(q_start + pos) * kv_heads + kvh) * D + d;
        kval = to_f32(k[off]);
        vval = to_f32(v[off]);
      }
      ks[kk][d] = kval;
      vs[kk][d] = vval;
    }
    __syncthreads();
    float s[BK / 8];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < BK / 8; ++j) {
      const int kk = c + 8 * j;
      const uint32_t pos = kv0 + kk;
      float dot = 0.f;
#pragma unroll 16
      for (int d = 0; d < D; ++d) dot += qs[r][d] * ks[kk][d];
      const bool visible = row_valid && pos < kv_end && (!PAGED || pos <= ctx + qi);
      s[j] = visible ? dot : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    // The 8 threads of a row are adjacent lanes of one warp.
    for (int o = 4; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
    const float m_new = fmaxf(m, tile_max);
    // A row with nothing visible yet keeps m = −inf; its weights stay 0 without NaNs.
    const float correction = m_new == -INFINITY ? 1.f : expf(m - m_new);
    float psum = 0.f;
#pragma unroll
    for (int j = 0; j < BK / 8; ++j) {
      const float p = s[j] == -INFINITY ? 0.f : expf(s[j] - m_new);
      ps[r][c + 8 * j] = p;
      psum += p;
    }
    for (int o = 4; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
    l = l * correction + psum;
    m = m_new;
    __syncwarp();
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) acc[j] *= correction;
    for (int kk = 0; kk < BK; ++kk) {
      const float p = ps[r][kk];
#pragma unroll
      for (int j = 0; j < PER_THREAD; ++j) acc[j] += p * vs[kk][c + 8 * j];
    }
  }
  if (row_valid) {
    const size_t o = ((size_t)(q_start + qi) * heads + head) * D;
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) out[o + c + 8 * j] = from_f32<T>(acc[j] / l);
  }
}

// ---------------------------------------------------------------------------------------------
// The same attention on tensor cores, for bf16/f16 and head dims that are multiples of 16: one
// warp per 16 query rows, 32-position K/V tiles. S = Q·Kᵀ and P·V run as 16×16×16 wmma products
// (f32 accumulation); the scale, mask and online softmax are f32 in shared memory; the output
// accumulator O (16 × D, f32) lives in shared memory, rescaled per row as the row maximum moves.
// grid: as tiled_attention; block: 32 threads.
constexpr int MMA_ROWS = 16, MMA_KEYS = 32;

template <typename T, int D, bool PAGED>
__device__ void tiled_attention_mma(T* out, const T* q, const T* k, const T* v, const uint32_t* cu_q,
                                    const uint32_t* context_lens, const uint32_t* block_tables, uint32_t max_blocks,
                                    uint32_t block_size, uint32_t heads, uint32_t kv_heads, float scale) {
  using namespace nvcuda;
  static_assert(D % 16 == 0, "wmma tiles are 16 wide");
  // Row strides in elements: multiples of 8 (16-bit) or 4 (f32) as wmma requires, padded off
  // the 32-bank period.
  constexpr int LD = D + 8, LDS = MMA_KEYS + 4, LDP = MMA_KEYS + 8;
  const uint32_t tile = blockIdx.x, head = blockIdx.y, seq = blockIdx.z;
  const uint32_t q_start = cu_q[seq], q_len = cu_q[seq + 1] - q_start, row0 = tile * MMA_ROWS;
  if (row0 >= q_len) return;
  const uint32_t ctx = PAGED ? context_lens[seq] : 0;
  const uint32_t kv_end = PAGED ? ctx + min(row0 + MMA_ROWS, q_len) : q_len;
  const uint32_t kvh = head / (heads / kv_heads);
  const uint32_t* table = PAGED ? block_tables + (size_t)seq * max_blocks : nullptr;
  const size_t kv_row = (size_t)kv_heads * D;
  const int lane = threadIdx.x;

  __shared__ __align__(32) T qs[MMA_ROWS * LD];
  __shared__ __align__(32) T ks[MMA_KEYS * LD];
  __shared__ __align__(32) T vs[MMA_KEYS * LD];
  __shared__ __align__(32) float ss[MMA_ROWS * LDS];
  __shared__ __align__(32) T ps[MMA_ROWS * LDP];
  __shared__ __align__(32) float os[MMA_ROWS * D];
  __shared__ float row_max[MMA_ROWS], row_sum[MMA_ROWS], row_scale[MMA_ROWS];

  for (int i = lane; i < MMA_ROWS * D; i += 32) {
    const int r = i / D, d = i % D;
    qs[r * LD + d] = row0 + r < q_len ? q[((size_t)(q_start + row0 + r) * heads + head) * D + d] : from_f32<T>(0.f);
    os[i] = 0.f;
  }
  if (lane < MMA_ROWS) {
    row_max[lane] = -INFINITY;
    row_sum[lane] = 0.f;
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(qf[kk], qs + kk * 16, LD);

  for (uint32_t kv0 = 0; kv0 < kv_end; kv0 += MMA_KEYS) {
    for (int i = lane; i < MMA_KEYS * D; i += 32) {
      const int kk = i / D, d = i % D;
      const uint32_t pos = kv0 + kk;
      T kval = from_f32<T>(0.f), vval = from_f32<T>(0.f);
      if (pos < kv_end) {
        const size_t off = PAGED ? cache_row(table, pos, block_size) * kv_row + (size_t)kvh * D + d
                                 : ((size_t)(q_start + pos) * kv_heads + kvh) * D + d;
        kval = k[off];
        vval = v[off];
      }
      ks[kk * LD + d] = kval;
      vs[kk * LD + d] = vval;
    }
    __syncwarp();
    // S = Q·Kᵀ: K's rows, read column-major, are Kᵀ.
#pragma unroll
    for (int n = 0; n < MMA_KEYS / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
      wmma::fill_fragment(sf, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + n * 16 * LD + kk * 16, LD);
        wmma::mma_sync(sf, qf[kk], kf, sf);
      }
      wmma::store_matrix_sync(ss + n * 16, sf, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    if (lane < MMA_ROWS) {
      const uint32_t qi = row0 + lane;
      float tile_max = -INFINITY;
      for (int j = 0; j < MMA_KEYS; ++j) {
        const uint32_t pos = kv0 + j;
        const bool visible = qi < q_len && pos < kv_end && (!PAGED || pos <= ctx + qi);
        const float s = visible ? ss[lane * LDS + j] * scale : -INFINITY;
        ss[lane * LDS + j] = s;
        tile_max = fmaxf(tile_max, s);
      }
      const float m = row_max[lane], m_new = fmaxf(m, tile_max);
      float psum = 0.f;
      for (int j = 0; j < MMA_KEYS; ++j) {
        const float s = ss[lane * LDS + j];
        const T p = from_f32<T>(s == -INFINITY ? 0.f : expf(s - m_new));
        ps[lane * LDP + j] = p;
        psum += to_f32(p);  // the weights P·V will use
      }
      const float correction = m_new == -INFINITY ? 1.f : expf(m - m_new);
      row_sum[lane] = row_sum[lane] * correction + psum;
      row_max[lane] = m_new;
      row_scale[lane] = correction;
    }
    __syncwarp();
    // O = O·correction + P·V, 16 output columns at a time through ss.
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
      wmma::fill_fragment(of, 0.f);
#pragma unroll
      for (int kk = 0; kk < MMA_KEYS / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps + kk * 16, LDP);
        wmma::load_matrix_sync(vf, vs + kk * 16 * LD + n * 16, LD);
        wmma::mma_sync(of, pf, vf, of);
      }
      wmma::store_matrix_sync(ss, of, LDS, wmma::mem_row_major);
      __syncwarp();
      for (int i = lane; i < 16 * 16; i += 32) {
        const int r = i / 16, c = i % 16;
        os[r * D + n * 16 + c] = os[r * D + n * 16 + c] * row_scale[r] + ss[r * LDS + c];
      }
      __syncwarp();
    }
  }
  for (int i = lane; i < MMA_ROWS * D; i += 32) {
    const int r = i / D, d = i % D;
    if (row0 + r < q_len) out[((size_t)(q_start + row0 + r) * heads + head) * D + d] = from_f32<T>(os[i] / row_sum[r]);
  }
}

// ---------------------------------------------------------------------------------------------
#define INSTANTIATE_CACHE(T, S)                                                                      \
  extern "C" __global__ void reshape_and_cache_##S(const T* src, T* cache, const uint32_t* slots,    \
                                                   uint32_t row) {                                   \
    reshape_and_cache<T>(src, cache, slots, row);                                                    \
  }
FOR_EACH_DTYPE(INSTANTIATE_CACHE)

#define INSTANTIATE_ATTENTION(T, S, D)                                                                          \
  extern "C" __global__ void __launch_bounds__(DECODE_THREADS) paged_decode_##S##_d##D(                         \
      T* out, float* part_out, float* part_max, float* part_sum, const T* q, const T* k_cache,                 \
      const T* v_cache, const uint32_t* block_tables, const uint32_t* context_lens, uint32_t max_blocks,       \
      uint32_t block_size, uint32_t heads, float scale, uint32_t partition_size) {                             \
    paged_decode<T, D>(out, part_out, part_max, part_sum, q, k_cache, v_cache, block_tables, context_lens,     \
                       max_blocks, block_size, heads, scale, partition_size);                                  \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(DECODE_THREADS) paged_decode_reduce_##S##_d##D(                  \
      T* out, const float* part_out, const float* part_max, const float* part_sum,                             \
      const uint32_t* context_lens, uint32_t partition_size, uint32_t parts) {                                 \
    paged_decode_reduce<T, D>(out, part_out, part_max, part_sum, context_lens, partition_size, parts);         \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(TILE_THREADS) paged_prefill_##S##_d##D(                          \
      T* out, const T* q, const T* k_cache, const T* v_cache, const uint32_t* cu_q,                            \
      const uint32_t* context_lens, const uint32_t* block_tables, uint32_t max_blocks, uint32_t block_size,    \
      uint32_t heads, uint32_t kv_heads, float scale) {                                                        \
    tiled_attention<T, D, true>(out, q, k_cache, v_cache, cu_q, context_lens, block_tables, max_blocks,        \
                                block_size, heads, kv_heads, scale);                                           \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(TILE_THREADS) varlen_attention_##S##_d##D(                       \
      T* out, const T* q, const T* k, const T* v, const uint32_t* cu_seqlens, uint32_t heads,                  \
      uint32_t kv_heads, float scale) {                                                                        \
    tiled_attention<T, D, false>(out, q, k, v, cu_seqlens, nullptr, nullptr, 0, 0, heads, kv_heads, scale);    \
  }

#define INSTANTIATE_MMA(T, S, D)                                                                                \
  extern "C" __global__ void __launch_bounds__(32) paged_prefill_mma_##S##_d##D(                                \
      T* out, const T* q, const T* k_cache, const T* v_cache, const uint32_t* cu_q,                            \
      const uint32_t* context_lens, const uint32_t* block_tables, uint32_t max_blocks, uint32_t block_size,    \
      uint32_t heads, uint32_t kv_heads, float scale) {                                                        \
    tiled_attention_mma<T, D, true>(out, q, k_cache, v_cache, cu_q, context_lens, block_tables, max_blocks,    \
                                    block_size, heads, kv_heads, scale);                                       \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(32) varlen_attention_mma_##S##_d##D(                             \
      T* out, const T* q, const T* k, const T* v, const uint32_t* cu_seqlens, uint32_t heads,                  \
      uint32_t kv_heads, float scale) {                                                                        \
    tiled_attention_mma<T, D, false>(out, q, k, v, cu_seqlens, nullptr, nullptr, 0, 0, heads, kv_heads, scale); \
  }
#define INSTANTIATE_MMA_HEAD_DIMS(T, S) \
  INSTANTIATE_MMA(T, S, 16) INSTANTIATE_MMA(T, S, 64) INSTANTIATE_MMA(T, S, 80) INSTANTIATE_MMA(T, S, 128)
INSTANTIATE_MMA_HEAD_DIMS(__nv_bfloat16, bf16)
INSTANTIATE_MMA_HEAD_DIMS(__half, f16)

// 64, 80 (nano GPT, Qwen vision) and 128 (Qwen text) are the real models'; 8, 16, 24 the tiny test models'.
#define INSTANTIATE_HEAD_DIMS(T, S)                                                            \
  INSTANTIATE_ATTENTION(T, S, 8) INSTANTIATE_ATTENTION(T, S, 16) INSTANTIATE_ATTENTION(T, S, 24) \
  INSTANTIATE_ATTENTION(T, S, 64) INSTANTIATE_ATTENTION(T, S, 80) INSTANTIATE_ATTENTION(T, S, 128)
FOR_EACH_DTYPE(INSTANTIATE_HEAD_DIMS)
