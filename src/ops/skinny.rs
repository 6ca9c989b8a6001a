//! `x · wᵀ` for a few rows of `x` (decode steps: one row per sequence) on the CPU. A general
//! GEMM packs the whole weight matrix on every call, which at 16 rows costs more than the
//! arithmetic (the LM head's 32,768 × 640 weights, every step); here each weight row is read
//! once, straight from its storage, against all rows of `x`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of `x` up to which [`matmul_t`] is used.
/// (Criterion, 16 rows: 123 against the GEMM's 66 GFLOP/s on the 640 × 1,792 down projection,
/// level at 65 on the LM head; at 32 the GEMM wins on the LM head, 95 against 75.)
pub const MAX_ROWS: usize = 16;

/// Whether [`matmul_t`] takes `x` (rows, K) and `w` (N, K): f32 CPU tensors, contiguous, no
/// gradient, 1 to [`MAX_ROWS`] rows.
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    super::plain_matrix(x)
        && super::plain_matrix(w)
        && x.dim(0).is_ok_and(|m| (1..=MAX_ROWS).contains(&m))
        && x.dim(1).ok() == w.dim(1).ok()
}

/// Rows of `x` up to which `x · wᵀ` is computed as `(w · xᵀ)ᵀ`: the GEMM then packs the few
/// rows of `x`, not the weights (16 rows: 65 → 97 GFLOP/s on a 640 × 1,792 projection, 61 → 66
/// on the 32,768-row LM head).
pub const SWAP_ROWS: usize = 32;

/// `linear.forward(x)`: by [`matmul_t`] when it takes the tensors, swapped for a few more rows.
pub fn linear(linear: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let w = linear.weight();
    let y = if takes(x, w) {
        matmul_t(x, w)?
    } else if x.rank() == 2
        && x.device().is_cpu()
        && !x.track_op()
        && !w.track_op()
        && x.dim(0).is_ok_and(|m| m <= SWAP_ROWS)
    {
        w.matmul(&x.t()?)?.t()?.contiguous()?
    } else if x.rank() >= 2 && x.is_contiguous() {
        // Many rows: AVX-512 where the CPU has it (leading dimensions folded into rows), in
        // training too (the op carries its backward).
        let (dims, k) = (x.dims(), x.dim(candle_core::D::Minus1)?);
        let rows = x.reshape((x.elem_count() / k.max(1), k))?;
        if !super::gemm_avx512::takes(&rows, w) {
            return linear.forward(x);
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 2") = w.dim(0)?;
        super::gemm_avx512::matmul_t(&rows, w)?.reshape(out_dims)?
    } else {
        return linear.forward(x);
    };
    match linear.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x · wᵀ` (see [`takes`]).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(w, &SkinnyMatmul)
}

struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "vellum-skinny-matmul"
    }

    fn cpu_fwd<'a>(
        &self,
        xs: &'a CpuStorage,
        xl: &Layout,
        ws: &'a CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let (x, w) = (
            super::f32_slice(xs, xl, "skinny matmul")?,
            super::f32_slice(ws, wl, "skinny matmul")?,
        );
        // Output transposed (n, m): each block of weight rows writes its own contiguous part.
        let mut out_t = vec![0f32; n * m];
        let block = 64;
        out_t
            .par_chunks_mut(block * m)
            .enumerate()
            .for_each(|(b, chunk)| rows(x, &w[b * block * k..((b * block + chunk.len() / m) * k)], m, k, chunk));
        let mut out = vec![0f32; m * n];
        for (j, col) in out_t.chunks(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `out[j·m + i] = x[i] · w[j]` for the weight rows `w` (j < w.len() / k).
fn rows(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { rows_avx2(x, w, m, k, out) };
    }
    rows_portable(x, w, m, k, out)
}

/// Three weight rows against four rows of `x` at a time: twelve accumulators stay in
/// registers and each step loads seven vectors for twelve FMAs, where one weight row against
/// four `x` rows loads five for four (8 rows of the down projection: 117 GFLOP/s, the GEMM 39).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    if m < 4 {
        // Memory-bound: one weight stream at a time reads fastest (LM head, 1 row: 17
        // against 13 GFLOP/s with three).
        return rows_portable(x, w, m, k, out);
    }
    let n = w.len() / k;
    let xr = |i: usize| &x[i * k..][..k];
    let wr = |j: usize| &w[j * k..][..k];
    let mut j = 0;
    while j + 3 <= n {
        let ws = [wr(j), wr(j + 1), wr(j + 2)];
        let mut i = 0;
        while i + 4 <= m {
            let d = dots_avx2::<3, 4>(ws, [xr(i), xr(i + 1), xr(i + 2), xr(i + 3)]);
            for (r, row) in d.iter().enumerate() {
                out[(j + r) * m + i..][..4].copy_from_slice(row);
            }
            i += 4;
        }
        for i in i..m {
            let d = dots_avx2::<3, 1>(ws, [xr(i)]);
            for (r, row) in d.iter().enumerate() {
                out[(j + r) * m + i] = row[0];
            }
        }
        j += 3;
    }
    rows_portable(x, &w[j * k..], m, k, &mut out[j * m..])
}

/// The R × C dot products of R weight rows with C rows of `x` (all of one length).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dots_avx2<const R: usize, const C: usize>(w: [&[f32]; R], xs: [&[f32]; C]) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let k = w[0].len();
    let body = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut c = 0;
    while c < body {
        // SAFETY: c + 8 ≤ body ≤ k, the length of every row.
        let wv: [__m256; R] = std::array::from_fn(|r| unsafe { _mm256_loadu_ps(w[r].as_ptr().add(c)) });
        for (q, x) in xs.iter().enumerate() {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(c)) };
            for r in 0..R {
                acc[r][q] = _mm256_fmadd_ps(wv[r], xv, acc[r][q]);
            }
        }
        c += 8;
    }
    let mut out = [[0f32; C]; R];
    for r in 0..R {
        for q in 0..C {
            let mut lanes = [0f32; 8];
            // SAFETY: lanes holds eight f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][q]) };
            let tail: f32 = w[r][body..].iter().zip(&xs[q][body..]).map(|(p, q)| p * q).sum();
            out[r][q] = lanes.iter().sum::<f32>() + tail;
        }
    }
    out
}

#[inline(always)]
fn rows_portable(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    for (wrow, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        let mut i = 0;
        while i + 4 <= m {
            let d = dot4(
                wrow,
                [
                    &x[i * k..][..k],
                    &x[(i + 1) * k..][..k],
                    &x[(i + 2) * k..][..k],
                    &x[(i + 3) * k..][..k],
                ],
            );
            o[i..i + 4].copy_from_slice(&d);
            i += 4;
        }
        for (i, o) in o.iter_mut().enumerate().skip(i) {
            *o = super::softmax::kernels::dot(wrow, &x[i * k..][..k]);
        }
    }
}

/// Four dot products against one weight row, eight lanes each.
#[inline(always)]
fn dot4(w: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let chunks = w.len() / 8;
    for c in 0..chunks {
        let wv = &w[c * 8..c * 8 + 8];
        for (a, x) in acc.iter_mut().zip(&xs) {
            let xv = &x[c * 8..c * 8 + 8];
            for l in 0..8 {
                a[l] = wv[l].mul_add(xv[l], a[l]);
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), x) in out.iter_mut().zip(&acc).zip(&xs) {
        let tail: f32 = w[chunks * 8..].iter().zip(&x[chunks * 8..]).map(|(p, q)| p * q).sum();
        *o = a.iter().sum::<f32>() + tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_candle_at_every_row_count() -> Result<()> {
        use candle_core::Module;
        let dev = candle_core::Device::Cpu;
        let lin = candle_nn::Linear::new(
            Tensor::randn(0f32, 1.0, (203, 77), &dev)?,
            Some(Tensor::randn(0f32, 1.0, 203, &dev)?),
        );
        for m in [1, 4, 5, 16, 32, 33, 100] {
            let x = Tensor::randn(0f32, 1.0, (m, 77), &dev)?;
            let err = (linear(&lin, &x)? - lin.forward(&x)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(err < 1e-4, "{m} rows: {err}");
        }
        Ok(())
    }

    #[test]
    fn matches_the_gemm_for_every_row_count() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (203, 77), &dev)?;
        for m in 1..=MAX_ROWS {
            let x = Tensor::randn(0f32, 1.0, (m, 77), &dev)?;
            let want = x.matmul(&w.t()?)?;
            let err = (matmul_t(&x, &w)? - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{m} rows: {err}");
        }
        Ok(())
    }
}
