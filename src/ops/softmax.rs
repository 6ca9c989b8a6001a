//! Softmax over the last dimension on the CPU, vectorised. candle's fused op calls libm's
//! scalar `expf` once per element; attention scores are the largest tensors a CPU prefill
//! touches (10 heads × 1,444² per full-attention block of a 532-pixel page), and that loop was
//! a fifth of a CPU OCR run. Here `exp` is Cephes' `expf` (range reduction by ln 2, degree-6
//! polynomial; relative error ≤ 2 ulp) written so that the compiler vectorises it, compiled for
//! AVX2+FMA when the CPU has them.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// The vectorisable pieces the host attention shares with the softmax.
pub mod kernels {
    /// Σ a·b in eight lanes (a fixed association the compiler vectorises).
    #[inline(always)]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                lanes[i] = x[i].mul_add(y[i], lanes[i]);
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    /// `y += a·x`.
    #[inline(always)]
    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = a.mul_add(x, *y);
        }
    }

    /// The largest value (−∞ for none), in eight lanes: `f32::max` folded one by one does not
    /// vectorise.
    #[inline(always)]
    pub fn max(values: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let chunks = values.chunks_exact(8);
        let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for i in 0..8 {
                lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
            }
        }
        lanes.iter().fold(tail, |m, &v| m.max(v))
    }

    /// The sum, in eight lanes: added one by one, each addition waits for the last.
    #[inline(always)]
    pub fn sum(values: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let chunks = values.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for i in 0..8 {
                lanes[i] += c[i];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    /// Replaces each score s by exp(s − max) and returns their sum.
    #[inline(always)]
    pub fn exp_shifted_sum(scores: &mut [f32], max: f32) -> f32 {
        for s in scores.iter_mut() {
            *s = super::exp_nonpositive(*s - max);
        }
        sum(scores)
    }
}

/// `exp(x)` for x ≤ 0 (softmax inputs after the max shift); exactly 0 below −87.3 (and for −∞).
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.3);
    let k = (xc * LOG2E + 0.5).floor();
    let r = xc - k * C1 - k * C2;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_2e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^k from k's bits: adding 1.5·2^23 leaves the integer k in the low mantissa bits. A bit
    // cast, where `k as i32` (a saturating conversion) kept the whole loop scalar.
    let k_int = (k + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let scaled = y * f32::from_bits(k_int.wrapping_add(127) << 23);
    if x < -87.3 {
        0.0
    } else {
        scaled
    }
}

/// softmax(scale · src) over the first `visible` entries of the row, zeros after them (a
/// causal mask).
#[inline(always)]
fn softmax_row(src: &[f32], dst: &mut [f32], scale: f32, visible: usize) {
    let (src, dst) = {
        dst[visible..].fill(0.0);
        (&src[..visible], &mut dst[..visible])
    };
    let max = kernels::max(src);
    if max == f32::NEG_INFINITY {
        // A fully masked row: what the reference gives (NaN), not a silent uniform row.
        dst.fill(f32::NAN);
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp_nonpositive((s - max) * scale);
    }
    let inv = 1.0 / kernels::sum(dst);
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

/// Rows `first..` of the op's input, as `src`/`dst` slices of whole rows.
#[inline(always)]
fn softmax_rows_portable(op: &SoftmaxLastDim, src: &[f32], dst: &mut [f32], dim: usize, first: usize) {
    for (r, (s, d)) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)).enumerate() {
        softmax_row(s, d, op.scale, op.visible(first + r, dim));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(op: &SoftmaxLastDim, src: &[f32], dst: &mut [f32], dim: usize, first: usize) {
    softmax_rows_portable(op, src, dst, dim, first)
}

fn softmax_rows(op: &SoftmaxLastDim, src: &[f32], dst: &mut [f32], dim: usize, first: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { softmax_rows_avx2(op, src, dst, dim, first) };
    }
    softmax_rows_portable(op, src, dst, dim, first)
}

/// log Σ exp(values): the log-softmax normaliser a sampler needs for every row of logits
/// (−∞ for none; NaN when a value is NaN). The exps are taken 64 at a time in f32 lanes and
/// each block's sum is added in f64, so a 152k vocabulary does not drift (an f32 running sum
/// does, by ~1e-4) and libm's scalar `exp` is not called once per token of the vocabulary.
pub fn log_sum_exp(values: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { log_sum_exp_avx2(values) };
    }
    log_sum_exp_portable(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn log_sum_exp_avx2(values: &[f32]) -> f64 {
    log_sum_exp_portable(values)
}

#[inline(always)]
fn log_sum_exp_portable(values: &[f32]) -> f64 {
    let max = kernels::max(values);
    if max == f32::NEG_INFINITY {
        return if values.iter().any(|v| v.is_nan()) {
            f64::NAN
        } else {
            f64::NEG_INFINITY
        };
    }
    let mut block = [0f32; 64];
    let mut total = 0f64;
    for chunk in values.chunks(64) {
        let block = &mut block[..chunk.len()];
        for (e, &v) in block.iter_mut().zip(chunk) {
            // `exp_nonpositive` clamps a NaN to a tiny number: keep it NaN (as is +∞ − +∞).
            let x = v - max;
            *e = if x.is_nan() { f32::NAN } else { exp_nonpositive(x) };
        }
        total += kernels::sum(block) as f64;
    }
    max as f64 + total.ln()
}

/// Softmax of `scale ·` the scores, with an optional causal mask: row r of each matrix is the
/// query `r % tokens`, which sees keys up to `offset + r % tokens`.
struct SoftmaxLastDim {
    scale: f32,
    causal: Option<(usize, usize)>,
}

impl SoftmaxLastDim {
    fn visible(&self, row: usize, dim: usize) -> usize {
        match self.causal {
            Some((tokens, offset)) => (offset + row % tokens + 1).min(dim),
            None => dim,
        }
    }
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "vellum-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = super::f32_slice(storage, layout, "the CPU softmax")?;
        let dim = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        // Blocks of rows across threads, each vectorised; small tensors (decode steps) in this
        // thread, where handing out work would cost more than doing it.
        if src.len() < 1 << 15 {
            softmax_rows(self, src, &mut dst, dim, 0);
        } else {
            use rayon::prelude::*;
            let rows = (src.len() / dim).div_ceil(4 * rayon::current_num_threads()).max(1);
            src.par_chunks(rows * dim)
                .zip(dst.par_chunks_mut(rows * dim))
                .enumerate()
                .for_each(|(i, (s, d))| softmax_rows(self, s, d, dim, i * rows));
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Whether [`softmax_last_dim`] takes `xs`: f32, contiguous, on the CPU, without gradient.
pub fn takes(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 && xs.is_contiguous() && !xs.track_op()
}

/// Softmax over the last dimension of an f32 CPU tensor (see [`takes`]).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    scaled(xs, 1.0, None)
}

/// `softmax(scale · xs)` over the last dimension, the scale and (with `causal = (tokens,
/// offset)`) the causal mask applied on the way: row r of each matrix is query `r % tokens`
/// and sees the first `offset + r % tokens + 1` keys; the rest of its row is 0.
pub fn scaled(xs: &Tensor, scale: f64, causal: Option<(usize, usize)>) -> Result<Tensor> {
    xs.apply_op1_no_bwd(&SoftmaxLastDim {
        scale: scale as f32,
        causal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_follows_the_f64_sum_over_a_vocabulary() {
        let reference = |v: &[f32]| {
            let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            max + v.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
        };
        // Logits as a model gives them: a wide spread, a few large, every length's tail.
        for n in [1, 7, 64, 65, 1000, 151_657] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 30.0 + if i % 997 == 3 { 25.0 } else { 0.0 })
                .collect();
            let (got, want) = (log_sum_exp(&v), reference(&v));
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1.0),
                "n {n}: {got} against {want}"
            );
        }
        let masked = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY];
        assert!((log_sum_exp(&masked) - 2.0).abs() < 1e-7);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert!(log_sum_exp(&[1.0, f32::NAN, 3.0]).is_nan());
        assert!(log_sum_exp(&[f32::NAN; 2]).is_nan());
        assert!(log_sum_exp(&[1.0, f32::INFINITY]).is_nan());
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_zero_when_masked() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
    }

    #[test]
    fn scaled_causal_rows_match_the_masked_softmax() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // 2 matrices of (3 heads × 5 tokens) rows over 9 keys: 4 cached, then the 5 tokens.
        let (tokens, offset, keys) = (5, 4, 9);
        let x = (Tensor::randn(0f32, 3.0, (2, 3 * tokens, keys), &dev)? * 4.0)?;
        let mask = crate::ops::attention::causal_mask(3 * tokens, keys, tokens, offset, &dev)?;
        let masked = (x.clone() * 0.125)?.broadcast_add(&mask)?;
        let want = candle_nn::ops::softmax_last_dim(&masked)?;
        let got = scaled(&x, 0.125, Some((tokens, offset)))?;
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-6, "max abs difference {err}");
        Ok(())
    }

    #[test]
    fn rows_match_the_plain_softmax() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (7, 5, 301), &dev)? * 4.0)?;
        // A causal-style masked tail in some rows.
        let mask: Vec<f32> = (0..7 * 5 * 301)
            .map(|i| {
                if i % 301 > 250 && (i / 301) % 2 == 0 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let x = (x + Tensor::from_vec(mask, (7, 5, 301), &dev)?)?;
        let got = softmax_last_dim(&x)?;
        let max = x.max_keepdim(2)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        let want = e.broadcast_div(&e.sum_keepdim(2)?)?;
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-6, "max abs difference {err}");
        Ok(())
    }
}
