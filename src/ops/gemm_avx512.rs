//! `x · wᵀ` in f32 on AVX-512 for many rows of `x` (prefill, vision towers). candle's GEMM (the
//! `gemm` crate) runs its AVX2 kernels on stable Rust, half the width the CPU has. Here the
//! weights are packed into panels of 32 outputs (each k's 32 weights one after another) and a
//! 12 × 32 block of the output stays in 24 registers while k runs, each step two panel loads and
//! twelve broadcasts for 24 FMAs. Rows are taken in blocks sized to keep them in the L2 cache
//! across all panels. Packing reads every weight once a call, so it pays from [`MIN_ROWS`] rows.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output columns per panel: two vectors of 16.
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 12;
/// Rows from which [`takes`] takes `x`. Intel Xeon (AMX machine), 2 cores, GFLOP/s against
/// candle's GEMM: 1,444 × 640 → 1,708: 269 / 196; 6,816 × 1,792 → 640: 305 / 191; the LM head
/// (32,768 × 640) over 64 rows: 55 / 131, packing its 84 MB of weights the larger part.
pub const MIN_ROWS: usize = 128;
/// Bytes of `x` a row block keeps in the L2 cache.
const ROW_BLOCK_BYTES: usize = 512 << 10;

/// Whether [`matmul_t`] takes `x` (rows, K) and `w` (N, K): f32 CPU tensors, contiguous, no
/// gradient, at least [`MIN_ROWS`] rows, on a CPU with AVX-512.
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    available()
        && super::plain_matrix(x)
        && super::plain_matrix(w)
        && x.dim(1).ok() == w.dim(1).ok()
        && x.dim(0).is_ok_and(|m| m >= MIN_ROWS)
}

fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x · wᵀ` (see [`takes`]).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(w, &Avx512Matmul)
}

struct Avx512Matmul;

impl CustomOp2 for Avx512Matmul {
    fn name(&self) -> &'static str {
        "vellum-avx512-matmul"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let x = super::f32_slice(xs, xl, "avx512 matmul")?;
        let w = super::f32_slice(ws, wl, "avx512 matmul")?;
        if !available() {
            candle_core::bail!("avx512 matmul: this CPU has no AVX-512");
        }
        if m == 0 || n == 0 || k == 0 {
            return Ok((CpuStorage::F32(vec![0f32; m * n]), Shape::from((m, n))));
        }
        Ok((CpuStorage::F32(product(x, w, k)), Shape::from((m, n))))
    }
}

/// `a · bᵀ` for `a` (rows, K) and `b` (cols, K), as (rows, cols): `b` packed, `a` streamed.
fn product(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let (m, n) = (a.len() / k, b.len() / k);
    let mut out = vec![0f32; m * n];
    let packed = pack(b, n, k);
    let threads = rayon::current_num_threads().max(1);
    let cache_rows = (ROW_BLOCK_BYTES / (4 * k)).max(MR);
    let rows = cache_rows.min(m.div_ceil(threads)).div_ceil(MR) * MR;
    out.par_chunks_mut(rows * n).enumerate().for_each(|(i, out)| {
        let a = &a[i * rows * k..][..out.len() / n * k];
        // SAFETY: `takes` checked that the CPU has AVX-512.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block(a, &packed, k, n, out)
        };
    });
    out
}

/// The weights (N, K) as panels of [`NR`] output columns: `panel[kk·NR + j] = w[p·NR + j][kk]`,
/// zero past N.
fn pack(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut packed = vec![0f32; panels * k * NR];
    packed.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
        for j in 0..NR.min(n - p * NR) {
            let row = &w[(p * NR + j) * k..][..k];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + j] = v;
            }
        }
    });
    packed
}

/// One block of rows `x` (rows, K) against every panel, into `out` (rows, N).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block(x: &[f32], packed: &[f32], k: usize, n: usize, out: &mut [f32]) {
    let rows = x.len() / k.max(1);
    for (p, panel) in packed.chunks(k * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        let mut r = 0;
        while r < rows {
            let take = MR.min(rows - r);
            let a = &x[r * k..][..take * k];
            let c = &mut out[r * n + p * NR..];
            // SAFETY: AVX-512 is enabled here; `a` holds `take` rows of k, `panel` k·NR values,
            // and `c` reaches `take - 1` rows of n past its start plus `cols` ≤ n − p·NR.
            unsafe {
                match take {
                    12 => kernel::<12>(a, panel, k, c, n, cols),
                    11 => kernel::<11>(a, panel, k, c, n, cols),
                    10 => kernel::<10>(a, panel, k, c, n, cols),
                    9 => kernel::<9>(a, panel, k, c, n, cols),
                    8 => kernel::<8>(a, panel, k, c, n, cols),
                    7 => kernel::<7>(a, panel, k, c, n, cols),
                    6 => kernel::<6>(a, panel, k, c, n, cols),
                    5 => kernel::<5>(a, panel, k, c, n, cols),
                    4 => kernel::<4>(a, panel, k, c, n, cols),
                    3 => kernel::<3>(a, panel, k, c, n, cols),
                    2 => kernel::<2>(a, panel, k, c, n, cols),
                    _ => kernel::<1>(a, panel, k, c, n, cols),
                }
            }
            r += take;
        }
    }
}

/// `c[r·ldc + j] = Σ_kk a[r·k + kk] · panel[kk·NR + j]` for r < R, j < cols.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(a: &[f32], panel: &[f32], k: usize, c: &mut [f32], ldc: usize, cols: usize) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a, b) = (a.as_ptr(), panel.as_ptr());
    for kk in 0..k {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * k + kk));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let c = c.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc[0]);
        _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc[1]);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ops::rel_l2;

    #[test]
    fn equals_candles_matmul() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // Whole and partial register blocks and panels, K from 1, rows over several blocks.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 5, 33),
            (37, 70, 45),
            (200, 640, 97),
            (300, 2000, 64),
            (25, 96, 16),
        ] {
            let mut random = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
            let x = Tensor::from_vec(random(m * k), (m, k), &Device::Cpu).unwrap();
            let w = Tensor::from_vec(random(n * k), (n, k), &Device::Cpu).unwrap();
            let got = matmul_t(&x, &w).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let err = rel_l2(&got, &want).unwrap();
            assert!(err < 1e-6, "({m}, {k}) · ({n}, {k})ᵀ: rel L2 {err:.2e}");
        }
    }
}
