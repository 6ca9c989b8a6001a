// kernels/*.cu run on the CPU (cuda_on_cpu.h) against plain double-precision references, on
// fresh random inputs, with the launch geometry of src/ops/kernels.rs. Prints one line per check
// and exits non-zero if any fails. Built and run by tests/kernels_on_cpu.rs.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <random>
#include <string>

#include "cuda_on_cpu.h"

using bf16 = __nv_bfloat16;
using f16 = __half;

#define ELEMENTWISE(T, S)                                                                                  \
  extern "C" void silu_and_mul_##S(const T*, const T*, T*, size_t);                                        \
  extern "C" void relu_squared_##S(const T*, T*, size_t);                                                  \
  extern "C" void softcap_##S(const T*, T*, size_t, float);                                                \
  extern "C" void rms_norm_##S(const T*, const T*, const T*, T*, T*, uint32_t, float);                    \
  extern "C" void rotary_##S(const T*, const float*, const float*, T*, uint32_t, uint32_t, uint32_t, uint32_t, float); \
  extern "C" void reshape_and_cache_##S(const T*, T*, const uint32_t*, uint32_t);
ELEMENTWISE(float, f32)
ELEMENTWISE(bf16, bf16)
ELEMENTWISE(f16, f16)

#define ATTENTION(T, S, D)                                                                                 \
  extern "C" void paged_decode_##S##_d##D(T*, float*, float*, float*, const T*, const T*, const T*,        \
                                          const uint32_t*, const uint32_t*, uint32_t, uint32_t, uint32_t,  \
                                          float, uint32_t);                                                \
  extern "C" void paged_decode_reduce_##S##_d##D(T*, const float*, const float*, const float*,             \
                                                 const uint32_t*, uint32_t, uint32_t);                     \
  extern "C" void paged_prefill_##S##_d##D(T*, const T*, const T*, const T*, const uint32_t*,              \
                                           const uint32_t*, const uint32_t*, uint32_t, uint32_t, uint32_t, \
                                           uint32_t, float);                                               \
  extern "C" void varlen_attention_##S##_d##D(T*, const T*, const T*, const T*, const uint32_t*, uint32_t, \
                                              uint32_t, float);
#define HEAD_DIMS(T, S) ATTENTION(T, S, 16) ATTENTION(T, S, 80) ATTENTION(T, S, 128)
HEAD_DIMS(float, f32)
HEAD_DIMS(bf16, bf16)
HEAD_DIMS(f16, f16)

#define MMA(T, S, D)                                                                                         \
  extern "C" void paged_prefill_mma_##S##_d##D(T*, const T*, const T*, const T*, const uint32_t*,            \
                                               const uint32_t*, const uint32_t*, uint32_t, uint32_t, uint32_t, \
                                               uint32_t, float);                                             \
  extern "C" void varlen_attention_mma_##S##_d##D(T*, const T*, const T*, const T*, const uint32_t*, uint32_t, \
                                                  uint32_t, float);
MMA(bf16, bf16, 16) MMA(bf16, bf16, 80) MMA(bf16, bf16, 128) MMA(f16, f16, 80)

static std::mt19937 rng(std::random_device{}());
static int failures = 0, checks = 0;

// Values as the dtype holds them, kept in float for the references.
template <typename T>
struct Buf {
  std::vector<T> dev;
  std::vector<float> host;
  explicit Buf(size_t n, float scale = 1.f) : dev(n), host(n) {
    std::normal_distribution<float> normal(0.f, scale);
    for (size_t i = 0; i < n; ++i) {
      dev[i] = from_float<T>(normal(rng));
      host[i] = to_float(dev[i]);
    }
  }
  // An output: poisoned, so an element the kernel never writes fails the check.
  static Buf output(size_t n) {
    Buf b(0);
    b.dev.assign(n, from_float<T>(NAN));
    return b;
  }
};

template <typename T>
void check(const std::string& name, const std::vector<T>& got, const std::vector<double>& want, double tol) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_float(got[i]);
    num += (g - want[i]) * (g - want[i]);
    den += want[i] * want[i];
  }
  const double err = den > 0 ? std::sqrt(num / den) : INFINITY;
  const bool ok = err <= tol;  // NaN fails
  ++checks;
  failures += !ok;
  std::printf("%s %-48s %.2e <= %.0e\n", ok ? "ok  " : "FAIL", name.c_str(), err, tol);
}

static dim3 grid1(size_t n) { return {unsigned(std::min<size_t>((n + 255) / 256, 65535)), 1, 1}; }

template <typename T>
void elementwise(const char* tag, double tol,
                 void (*silu)(const T*, const T*, T*, size_t), void (*relu2)(const T*, T*, size_t),
                 void (*softcap)(const T*, T*, size_t, float)) {
  const size_t n = 3000;
  Buf<T> g(n, 2.f), u(n), x(n, 20.f);
  auto out = Buf<T>::output(n);
  std::vector<double> want(n);
  cuda_on_cpu::launch(grid1(n), {256}, 0, [&] { silu(g.dev.data(), u.dev.data(), out.dev.data(), n); });
  for (size_t i = 0; i < n; ++i) want[i] = g.host[i] / (1 + std::exp(-double(g.host[i]))) * u.host[i];
  check(std::string("silu_and_mul/") + tag, out.dev, want, tol);
  cuda_on_cpu::launch(grid1(n), {256}, 0, [&] { relu2(g.dev.data(), out.dev.data(), n); });
  for (size_t i = 0; i < n; ++i) want[i] = g.host[i] > 0 ? double(g.host[i]) * g.host[i] : 0;
  check(std::string("relu_squared/") + tag, out.dev, want, tol);
  cuda_on_cpu::launch(grid1(n), {256}, 0, [&] { softcap(x.dev.data(), out.dev.data(), n, 15.f); });
  for (size_t i = 0; i < n; ++i) want[i] = 15 * std::tanh(x.host[i] / 15.0);
  check(std::string("softcap/") + tag, out.dev, want, tol);
}

template <typename T>
void norm(const char* tag, double tol, void (*kernel)(const T*, const T*, const T*, T*, T*, uint32_t, float)) {
  for (auto [rows, cols] : {std::pair{5u, 80u}, std::pair{3u, 1280u}, std::pair{2u, 3584u}}) {
    const size_t n = size_t(rows) * cols;
    Buf<T> x(n, 3.f), r(n), w(cols, 0.5f);
    for (int variant = 0; variant < 3; ++variant) {  // weighted, parameter-free, with the residual
      auto out = Buf<T>::output(n), sum = Buf<T>::output(n);
      const T* residual = variant == 2 ? r.dev.data() : nullptr;
      const T* weight = variant == 1 ? nullptr : w.dev.data();
      cuda_on_cpu::launch({rows}, {std::min(1024u, std::max(32u, std::bit_ceil(cols)))}, 0,
                          [&] { kernel(x.dev.data(), residual, weight, out.dev.data(), sum.dev.data(), cols, 1e-6f); });
      std::vector<double> want(n), want_sum(n);
      for (unsigned i = 0; i < rows; ++i) {
        double ss = 0;
        for (unsigned c = 0; c < cols; ++c) {
          const size_t k = size_t(i) * cols + c;
          want_sum[k] = variant == 2 ? double(x.host[k]) + r.host[k] : x.host[k];
          ss += want_sum[k] * want_sum[k];
        }
        const double inv = 1 / std::sqrt(ss / cols + 1e-6);
        for (unsigned c = 0; c < cols; ++c) {
          const size_t k = size_t(i) * cols + c;
          want[k] = want_sum[k] * inv * (weight ? w.host[c] : 1.0);
        }
      }
      const char* what[] = {"rms_norm", "rms_norm_no_weight", "add_rms_norm"};
      check(std::string(what[variant]) + "/" + tag + "/" + std::to_string(rows) + "x" + std::to_string(cols), out.dev, want, tol);
      if (variant == 2) check(std::string("add_rms_norm_sum/") + tag, sum.dev, want_sum, tol);
    }
  }
}

template <typename T>
void rotary(const char* tag, double tol,
            void (*kernel)(const T*, const float*, const float*, T*, uint32_t, uint32_t, uint32_t, uint32_t, float)) {
  const unsigned tokens = 7, heads = 3, dim = 80, half = dim / 2;
  for (float sign : {1.f, -1.f}) {
    // Qwen's tables are full width (the halves repeat), nanochat's half width.
    const unsigned stride = sign > 0 ? dim : half;
    Buf<T> x(size_t(tokens) * heads * dim);
    std::vector<float> cos(tokens * stride), sin(tokens * stride);
    std::uniform_real_distribution<float> angle(-50, 50);
    for (unsigned t = 0; t < tokens; ++t)
      for (unsigned j = 0; j < half; ++j) {
        const float a = angle(rng);
        cos[t * stride + j] = std::cos(a);
        sin[t * stride + j] = std::sin(a);
        if (stride == dim) {
          cos[t * stride + j + half] = cos[t * stride + j];
          sin[t * stride + j + half] = sin[t * stride + j];
        }
      }
    auto out = Buf<T>::output(x.dev.size());
    cuda_on_cpu::launch(grid1(tokens * heads * half), {256}, 0, [&] {
      kernel(x.dev.data(), cos.data(), sin.data(), out.dev.data(), tokens, heads, dim, stride, sign);
    });
    std::vector<double> want(x.dev.size());
    for (unsigned t = 0; t < tokens; ++t)
      for (unsigned h = 0; h < heads; ++h)
        for (unsigned j = 0; j < half; ++j) {
          const size_t row = (size_t(t) * heads + h) * dim;
          const double c = cos[t * stride + j], s = sign * double(sin[t * stride + j]);
          const double x1 = x.host[row + j], x2 = x.host[row + j + half];
          want[row + j] = x1 * c - x2 * s;
          want[row + j + half] = x2 * c + x1 * s;
        }
    check(std::string(sign > 0 ? "rotary/" : "rotary_neg_theta/") + tag, out.dev, want, tol);
  }
}

// Softmax(q·k / sqrt(dim)) · v over `keys` (positions), in double.
static void attend(const float* q, const std::vector<const float*>& ks, const std::vector<const float*>& vs, unsigned dim,
                   double* out) {
  std::vector<double> s(ks.size());
  double m = -INFINITY, total = 0;
  for (size_t p = 0; p < ks.size(); ++p) {
    double dot = 0;
    for (unsigned d = 0; d < dim; ++d) dot += double(q[d]) * ks[p][d];
    s[p] = dot / std::sqrt(double(dim));
    m = std::max(m, s[p]);
  }
  for (auto& x : s) total += (x = std::exp(x - m));
  for (unsigned d = 0; d < dim; ++d) {
    double o = 0;
    for (size_t p = 0; p < ks.size(); ++p) o += s[p] * vs[p][d];
    out[d] = o / total;
  }
}

// The paged kernels over three sequences with scattered block tables: the cache write, then a
// prefill of each one's rows on top of its cached part, then a decode step, unsplit and split-K.
template <typename T, unsigned D>
void paged(const char* tag, double tol,
           void (*cache_write)(const T*, T*, const uint32_t*, uint32_t),
           void (*prefill)(T*, const T*, const T*, const T*, const uint32_t*, const uint32_t*, const uint32_t*, uint32_t,
                           uint32_t, uint32_t, uint32_t, float),
           void (*decode)(T*, float*, float*, float*, const T*, const T*, const T*, const uint32_t*, const uint32_t*,
                          uint32_t, uint32_t, uint32_t, float, uint32_t),
           void (*reduce)(T*, const float*, const float*, const float*, const uint32_t*, uint32_t, uint32_t),
           decltype(prefill) prefill_mma) {
  const unsigned heads = 14, kv_heads = 2, block_size = 16, seqs = 3, row = kv_heads * D;  // Qwen's group of 7
  std::uniform_int_distribution<unsigned> total_len(20, 70);
  std::vector<unsigned> total(seqs), cached(seqs);
  unsigned blocks_needed = 0;
  for (unsigned s = 0; s < seqs; ++s) {
    total[s] = total_len(rng);  // positions after the decode token
    cached[s] = std::uniform_int_distribution<unsigned>(0, total[s] - 2)(rng);
    blocks_needed += (total[s] + block_size - 1) / block_size;
  }
  const unsigned num_blocks = blocks_needed + 5, max_blocks = (70 + block_size - 1) / block_size;
  std::vector<uint32_t> ids(num_blocks);
  for (unsigned i = 0; i < num_blocks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<uint32_t> tables(seqs * max_blocks, 0);
  for (unsigned s = 0, next = 0; s < seqs; ++s)
    for (unsigned b = 0; b < (total[s] + block_size - 1) / block_size; ++b) tables[s * max_blocks + b] = ids[next++];
  auto slot = [&](unsigned s, unsigned p) { return tables[s * max_blocks + p / block_size] * block_size + p % block_size; };

  // Every position's K/V, written through the cache-write kernel.
  unsigned all = 0;
  for (auto t : total) all += t;
  Buf<T> k(size_t(all) * row), v(size_t(all) * row);
  std::vector<uint32_t> slots;
  for (unsigned s = 0; s < seqs; ++s)
    for (unsigned p = 0; p < total[s]; ++p) slots.push_back(slot(s, p));
  auto k_cache = Buf<T>::output(size_t(num_blocks) * block_size * row), v_cache = Buf<T>::output(k_cache.dev.size());
  cuda_on_cpu::launch({all}, {std::min(1024u, std::max(32u, row))}, 0, [&] {
    cache_write(k.dev.data(), k_cache.dev.data(), slots.data(), row);
    cache_write(v.dev.data(), v_cache.dev.data(), slots.data(), row);
  });
  bool cache_ok = true;
  for (unsigned i = 0; i < all; ++i)
    for (unsigned j = 0; j < row; ++j)
      cache_ok &= std::memcmp(&k_cache.dev[size_t(slots[i]) * row + j], &k.dev[size_t(i) * row + j], sizeof(T)) == 0 &&
                  std::memcmp(&v_cache.dev[size_t(slots[i]) * row + j], &v.dev[size_t(i) * row + j], sizeof(T)) == 0;
  ++checks;
  failures += !cache_ok;
  std::printf("%s %-48s exact\n", cache_ok ? "ok  " : "FAIL", (std::string("reshape_and_cache/") + tag + "/d" + std::to_string(D)).c_str());

  std::vector<unsigned> first(seqs);  // each sequence's first row in k/v
  for (unsigned s = 1; s < seqs; ++s) first[s] = first[s - 1] + total[s - 1];
  auto expected = [&](unsigned s, unsigned pos, unsigned h, const float* q, double* out) {
    const unsigned kvh = h / (heads / kv_heads);
    std::vector<const float*> ks, vs;
    for (unsigned p = 0; p <= pos; ++p) {
      ks.push_back(&k.host[(size_t(first[s]) + p) * row + kvh * D]);
      vs.push_back(&v.host[(size_t(first[s]) + p) * row + kvh * D]);
    }
    attend(q, ks, vs, D, out);
  };
  const float scale = 1.f / std::sqrt(float(D));

  // Prefill: rows cached[s] .. total[s]-1 (the last position is the decode step's).
  std::vector<uint32_t> cu_q{0}, context(seqs);
  unsigned max_rows = 0;
  for (unsigned s = 0; s < seqs; ++s) {
    cu_q.push_back(cu_q.back() + (total[s] - 1 - cached[s]));
    context[s] = cached[s];
    max_rows = std::max(max_rows, total[s] - 1 - cached[s]);
  }
  const unsigned rows = cu_q.back();
  Buf<T> q(size_t(rows) * heads * D);
  auto out = Buf<T>::output(q.dev.size());
  cuda_on_cpu::launch({(max_rows + 15) / 16, heads, seqs}, {128}, 0, [&] {
    prefill(out.dev.data(), q.dev.data(), k_cache.dev.data(), v_cache.dev.data(), cu_q.data(), context.data(),
            tables.data(), max_blocks, block_size, heads, kv_heads, scale);
  });
  std::vector<double> want(q.dev.size());
  for (unsigned s = 0; s < seqs; ++s)
    for (unsigned j = 0; j < cu_q[s + 1] - cu_q[s]; ++j)
      for (unsigned h = 0; h < heads; ++h) {
        const size_t o = (size_t(cu_q[s] + j) * heads + h) * D;
        expected(s, cached[s] + j, h, &q.host[o], &want[o]);
      }
  check(std::string("paged_prefill/") + tag + "/d" + std::to_string(D), out.dev, want, tol);
  if (prefill_mma) {
    auto mma_out = Buf<T>::output(q.dev.size());
    cuda_on_cpu::launch({(max_rows + 15) / 16, heads, seqs}, {32}, 0, [&] {
      prefill_mma(mma_out.dev.data(), q.dev.data(), k_cache.dev.data(), v_cache.dev.data(), cu_q.data(), context.data(),
                  tables.data(), max_blocks, block_size, heads, kv_heads, scale);
    });
    check(std::string("paged_prefill_mma/") + tag + "/d" + std::to_string(D), mma_out.dev, want, tol);
  }

  // Decode: one row per sequence at its last position, over all its positions.
  std::vector<uint32_t> ctx(seqs);
  unsigned max_ctx = 0;
  for (unsigned s = 0; s < seqs; ++s) max_ctx = std::max(max_ctx, ctx[s] = total[s]);
  Buf<T> dq(size_t(seqs) * heads * D);
  std::vector<double> dwant(dq.dev.size());
  for (unsigned s = 0; s < seqs; ++s)
    for (unsigned h = 0; h < heads; ++h) {
      const size_t o = (size_t(s) * heads + h) * D;
      expected(s, total[s] - 1, h, &dq.host[o], &dwant[o]);
    }
  for (unsigned partition : {max_ctx, 16u}) {
    const unsigned parts = (max_ctx + partition - 1) / partition;
    auto dout = Buf<T>::output(dq.dev.size());
    std::vector<float> part_out(size_t(seqs) * heads * parts * D), part_max(seqs * heads * parts), part_sum(seqs * heads * parts);
    const unsigned group = heads / kv_heads;
    const size_t shared = (group * (D + 4 * D + partition) + 32) * sizeof(float);
    const bool split = parts > 1;
    cuda_on_cpu::launch({kv_heads, seqs, parts}, {128}, shared, [&] {
      decode(dout.dev.data(), split ? part_out.data() : nullptr, split ? part_max.data() : nullptr,
             split ? part_sum.data() : nullptr, dq.dev.data(), k_cache.dev.data(), v_cache.dev.data(), tables.data(),
             ctx.data(), max_blocks, block_size, heads, scale, partition);
    });
    if (split)
      cuda_on_cpu::launch({heads, seqs, 1}, {128}, 0, [&] {
        reduce(dout.dev.data(), part_out.data(), part_max.data(), part_sum.data(), ctx.data(), partition, parts);
      });
    check(std::string(split ? "paged_decode_split/" : "paged_decode/") + tag + "/d" + std::to_string(D), dout.dev, dwant, tol);
  }
}

// Packed segments attending within themselves (the vision tower's windows and full blocks).
template <typename T, unsigned D>
void varlen(const char* tag, double tol,
            void (*kernel)(T*, const T*, const T*, const T*, const uint32_t*, uint32_t, uint32_t, float),
            decltype(kernel) kernel_mma) {
  const unsigned heads = 2;
  const std::vector<uint32_t> cu{0, 1, 17, 50, 53};
  const unsigned tokens = cu.back();
  Buf<T> q(size_t(tokens) * heads * D), k(q.dev.size()), v(q.dev.size());
  auto out = Buf<T>::output(q.dev.size());
  unsigned max_len = 0;
  for (size_t i = 0; i + 1 < cu.size(); ++i) max_len = std::max(max_len, cu[i + 1] - cu[i]);
  auto mma_out = Buf<T>::output(q.dev.size());
  cuda_on_cpu::launch({(max_len + 15) / 16, heads, unsigned(cu.size() - 1)}, {128}, 0, [&] {
    kernel(out.dev.data(), q.dev.data(), k.dev.data(), v.dev.data(), cu.data(), heads, heads, 1.f / std::sqrt(float(D)));
  });
  if (kernel_mma)
    cuda_on_cpu::launch({(max_len + 15) / 16, heads, unsigned(cu.size() - 1)}, {32}, 0, [&] {
      kernel_mma(mma_out.dev.data(), q.dev.data(), k.dev.data(), v.dev.data(), cu.data(), heads, heads,
                 1.f / std::sqrt(float(D)));
    });
  std::vector<double> want(q.dev.size());
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (unsigned i = cu[s]; i < cu[s + 1]; ++i)
      for (unsigned h = 0; h < heads; ++h) {
        std::vector<const float*> ks, vs;
        for (unsigned p = cu[s]; p < cu[s + 1]; ++p) {
          ks.push_back(&k.host[(size_t(p) * heads + h) * D]);
          vs.push_back(&v.host[(size_t(p) * heads + h) * D]);
        }
        attend(&q.host[(size_t(i) * heads + h) * D], ks, vs, D, &want[(size_t(i) * heads + h) * D]);
      }
  check(std::string("varlen_attention/") + tag + "/d" + std::to_string(D), out.dev, want, tol);
  if (kernel_mma) check(std::string("varlen_attention_mma/") + tag + "/d" + std::to_string(D), mma_out.dev, want, tol);
}

#define ATTENTION_CHECKS(T, S, D, TOL, PREFILL_MMA, VARLEN_MMA)                                             \
  paged<T, D>(#S, TOL, reshape_and_cache_##S, paged_prefill_##S##_d##D, paged_decode_##S##_d##D,           \
              paged_decode_reduce_##S##_d##D, PREFILL_MMA);                                                 \
  varlen<T, D>(#S, TOL, varlen_attention_##S##_d##D, VARLEN_MMA);

int main() {
  elementwise<float>("f32", 1e-5, silu_and_mul_f32, relu_squared_f32, softcap_f32);
  elementwise<bf16>("bf16", 1e-2, silu_and_mul_bf16, relu_squared_bf16, softcap_bf16);
  elementwise<f16>("f16", 2e-3, silu_and_mul_f16, relu_squared_f16, softcap_f16);
  norm<float>("f32", 1e-5, rms_norm_f32);
  norm<bf16>("bf16", 1e-2, rms_norm_bf16);
  norm<f16>("f16", 2e-3, rms_norm_f16);
  rotary<float>("f32", 1e-5, rotary_f32);
  rotary<bf16>("bf16", 1e-2, rotary_bf16);
  rotary<f16>("f16", 2e-3, rotary_f16);
  ATTENTION_CHECKS(float, f32, 16, 1e-5, nullptr, nullptr)
  ATTENTION_CHECKS(float, f32, 80, 1e-5, nullptr, nullptr)
  ATTENTION_CHECKS(float, f32, 128, 1e-5, nullptr, nullptr)
  ATTENTION_CHECKS(bf16, bf16, 16, 1e-2, paged_prefill_mma_bf16_d16, varlen_attention_mma_bf16_d16)
  ATTENTION_CHECKS(bf16, bf16, 80, 1e-2, paged_prefill_mma_bf16_d80, varlen_attention_mma_bf16_d80)
  ATTENTION_CHECKS(bf16, bf16, 128, 1e-2, paged_prefill_mma_bf16_d128, varlen_attention_mma_bf16_d128)
  ATTENTION_CHECKS(f16, f16, 80, 2e-3, paged_prefill_mma_f16_d80, varlen_attention_mma_f16_d80)
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
