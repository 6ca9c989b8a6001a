//! `a · b` in f32 on AVX-512 for many rows of `a`: prefill and the vision towers when serving,
//! and the linear layers of training, forward and backward. candle's GEMM (the `gemm` crate)
//! runs its AVX2 kernels on stable Rust, half the width the CPU has. Here `b` is packed into
//! panels of 32 columns (each k's 32 values one after another) and a 12 × 32 block of the output
//! stays in 24 registers while k runs, each step two panel loads and twelve broadcasts for 24
//! FMAs. `a` is read where it lies when its rows lie along memory; a transposed `a` (the weight
//! gradient's `gradᵀ`) is first copied into rows, since read through its strides every k would
//! be another page. K runs in passes of at most 2,048.
//! Rows are taken in blocks sized to keep them in the L2 cache across all panels. Packing reads
//! every value of `b` once a call, so for serving it pays from [`MIN_ROWS`] rows.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output columns per panel: two vectors of 16.
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 12;
/// Rows from which [`takes`] takes `x`. Intel Xeon (AMX machine), 2 cores, GFLOP/s against
/// candle's GEMM: 1,444 × 640 → 1,708: 269 / 196; 6,816 × 1,792 → 640: 305 / 191; the LM head
/// (32,768 × 640) over 64 rows: 55 / 131, packing its 84 MB of weights the larger part.
pub const MIN_ROWS: usize = 128;
/// Longest run of K one pass takes: its panels (at most 32 × 2,048 × 4 bytes = 256 KiB each)
/// stay in L2 while a row block runs through them. The serving shapes (K ≤ 1,792) take one pass.
const MAX_KC: usize = 2048;
/// Bytes of `x` a row block keeps in the L2 cache.
const ROW_BLOCK_BYTES: usize = 512 << 10;

/// Whether [`matmul_t`] takes `x` (rows, K) and `w` (N, K): f32 CPU matrices of any strides,
/// at least [`MIN_ROWS`] rows, on a CPU with AVX-512; gradients or not (the linear layers of
/// training take it too).
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    let matrix = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.rank() == 2;
    available() && matrix(x) && matrix(w) && x.dim(1).ok() == w.dim(1).ok() && x.dim(0).is_ok_and(|m| m >= MIN_ROWS)
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

/// `x · wᵀ` for `x` (rows, K) and `w` (N, K) (see [`takes`]).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    matmul(x, &w.t()?)
}

/// `a · b` for f32 CPU matrices `a` (M, K) and `b` (K, N) of any strides, on a CPU with
/// AVX-512; the gradients flow back through the same kernel (`grad · bᵀ` and `aᵀ · grad`).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, Avx512Matmul)
}

struct Avx512Matmul;

/// A matrix as its storage, first element and strides (row, column).
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    start: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Strided<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<(Self, usize, usize)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{what}: f32 only");
        };
        let (rows, cols) = layout.shape().dims2()?;
        let (rs, cs) = (layout.stride()[0], layout.stride()[1]);
        let start = layout.start_offset();
        let last = start + rows.saturating_sub(1) * rs + cols.saturating_sub(1) * cs;
        if rows > 0 && cols > 0 && last >= data.len() {
            candle_core::bail!("{what}: layout reaches past its storage");
        }
        Ok((Self { data, start, rs, cs }, rows, cols))
    }

    /// The transposed matrix, in the same storage.
    fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `v` (rows, cols) as (cols, rows), in tiles that stay in L1.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; v.len()];
    out.par_chunks_mut(TILE * rows).enumerate().for_each(|(t, out)| {
        let c0 = t * TILE;
        let width = out.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in 0..width {
                    out[c * rows + r] = v[r * cols + c0 + c];
                }
            }
        }
    });
    out
}

impl CustomOp2 for Avx512Matmul {
    fn name(&self) -> &'static str {
        "vellum-avx512-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, m, k) = Strided::new(s1, l1, "avx512 matmul")?;
        let (b, k2, n) = Strided::new(s2, l2, "avx512 matmul")?;
        if k != k2 {
            candle_core::bail!("avx512 matmul: ({m}, {k}) · ({k2}, {n})");
        }
        if !available() {
            candle_core::bail!("avx512 matmul: this CPU has no AVX-512");
        }
        if m == 0 || n == 0 || k == 0 {
            return Ok((CpuStorage::F32(vec![0f32; m * n]), Shape::from((m, n))));
        }
        // Packing reads all of `b`, column by column when it is a weight transposed (`x · wᵀ`).
        // When `a` and the output together are smaller (few rows against a large weight), pack
        // `a` instead, (w · xᵀ)ᵀ: the weight is then read row by row where it lies.
        let out = if b.cs != 1 && a.cs == 1 && m * k + m * n < k * n {
            transpose(&product(b.t(), a.t(), n, k, m), n, m)
        } else {
            product(a, b, m, k, n)
        };
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let da = a.track_op().then(|| grad.apply_op2_no_bwd(&b.t()?, self)).transpose()?;
        let db = b.track_op().then(|| a.t()?.apply_op2_no_bwd(grad, self)).transpose()?;
        Ok((da, db))
    }
}

/// `a · b` as (M, N), row-major: `b` packed, `a` read through its strides. K runs in blocks of
/// at most [`MAX_KC`], each block's panels read from L2 by every row; the blocks after the first
/// add to the output.
fn product(a: Strided, b: Strided, m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let blocks = k.div_ceil(MAX_KC);
    let kc_max = k.div_ceil(blocks);
    let threads = rayon::current_num_threads().max(1);
    for kb in 0..blocks {
        let (k0, kc) = (kb * kc_max, kc_max.min(k - kb * kc_max));
        let packed = pack(
            Strided {
                start: b.start + k0 * b.rs,
                ..b
            },
            kc,
            n,
        );
        let cache_rows = (ROW_BLOCK_BYTES / (4 * kc)).max(MR);
        let per_task = cache_rows.min(m.div_ceil(threads)).div_ceil(MR) * MR;
        out.par_chunks_mut(per_task * n).enumerate().for_each(|(i, out)| {
            let rows = out.len() / n;
            let first = a.start + i * per_task * a.rs + k0 * a.cs;
            // Rows that do not lie along memory (the weight gradient's gradᵀ) are copied into
            // place first: read through their strides, each k would be another page.
            let mut copied = Vec::new();
            let a = if a.cs == 1 {
                Strided { start: first, ..a }
            } else {
                copied.resize(rows * kc, 0f32);
                for kk in 0..kc {
                    for r in 0..rows {
                        copied[r * kc + kk] = a.data[first + r * a.rs + kk * a.cs];
                    }
                }
                Strided {
                    data: &copied,
                    start: 0,
                    rs: kc,
                    cs: 1,
                }
            };
            // SAFETY: `cpu_fwd` checked that the CPU has AVX-512 and that `a`'s layout stays
            // inside its storage for all m rows and k columns, of which this block takes rows
            // i·rows.. (out.len() / n) and columns k0..k0 + kc.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                block(a, rows, &packed, kc, n, out, kb > 0)
            };
        });
    }
    out
}

/// `b` (K, N) as panels of [`NR`] columns: `panel[kk·NR + j] = b[kk][p·NR + j]`, zero past N.
fn pack(b: Strided, k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut packed = vec![0f32; panels * k * NR];
    packed.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
        let cols = NR.min(n - p * NR);
        let at = |kk: usize, j: usize| b.start + kk * b.rs + (p * NR + j) * b.cs;
        if b.cs == 1 {
            for kk in 0..k {
                panel[kk * NR..][..cols].copy_from_slice(&b.data[at(kk, 0)..][..cols]);
            }
        } else {
            // Down each column: a transposed `b` (weights as they are stored) is read in order.
            for j in 0..cols {
                for kk in 0..k {
                    panel[kk * NR + j] = b.data[at(kk, j)];
                }
            }
        }
    });
    packed
}

/// `rows` rows of `a` from its first against every panel, into `out` (rows, N), or added to it.
///
/// # Safety
/// AVX-512 is present, and `a` holds `rows` rows of k values along memory, `a.rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(a: Strided, rows: usize, packed: &[f32], k: usize, n: usize, out: &mut [f32], add: bool) {
    for (p, panel) in packed.chunks(k * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        let mut r = 0;
        while r < rows {
            let take = MR.min(rows - r);
            let first = a.data.as_ptr().add(a.start + r * a.rs);
            let c = &mut out[r * n + p * NR..];
            // SAFETY: as the function's; `c` reaches `take - 1` rows of n past its start plus
            // `cols` ≤ n − p·NR, and `panel` holds k·NR values.
            let args = (first, a.rs, panel, k, c, n, cols, add);
            match take {
                12 => kernel::<12>(args),
                11 => kernel::<11>(args),
                10 => kernel::<10>(args),
                9 => kernel::<9>(args),
                8 => kernel::<8>(args),
                7 => kernel::<7>(args),
                6 => kernel::<6>(args),
                5 => kernel::<5>(args),
                4 => kernel::<4>(args),
                3 => kernel::<3>(args),
                2 => kernel::<2>(args),
                _ => kernel::<1>(args),
            }
            r += take;
        }
    }
}

/// The first row of a block of `a`, its row stride (its columns lie along memory), a panel, K,
/// the output, its row stride, the panel's columns in use, and whether to add to the output.
type KernelArgs<'a> = (*const f32, usize, &'a [f32], usize, &'a mut [f32], usize, usize, bool);

/// `c[r·ldc + j] (+)= Σ_kk a[r·rs + kk] · panel[kk·NR + j]` for r < R, j < cols.
///
/// # Safety
/// AVX-512 is present and `a` holds R rows of k values, `rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>((a, rs, panel, k, c, ldc, cols, add): KernelArgs) {
    use std::arch::x86_64::*;
    let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let c = c.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
            acc[1] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
        }
    }
    let b = panel.as_ptr();
    for kk in 0..k {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * rs + kk));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc[0]);
        _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc[1]);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ops::rel_l2;

    /// A seeded generator, or none (and a line saying so) on a CPU without AVX-512.
    fn seeded(seed: u64) -> Option<rand::rngs::StdRng> {
        if !available() {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
        }
        available().then(|| rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn random(rng: &mut rand::rngs::StdRng, shape: (usize, usize)) -> Tensor {
        let v = (0..shape.0 * shape.1).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn equals_candles_matmul() {
        let Some(mut rng) = seeded(5) else { return };
        // Whole and partial register blocks and panels, K from 1, rows over several blocks, K in
        // three passes, and few rows against a large weight (x packed, not the weight).
        for (m, k, n) in [
            (1, 1, 1),
            (13, 5, 33),
            (37, 70, 45),
            (200, 640, 97),
            (300, 2000, 64),
            (130, 4500, 40),
            (25, 96, 16),
            (20, 300, 500),
        ] {
            let (x, w) = (random(&mut rng, (m, k)), random(&mut rng, (n, k)));
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let err = rel_l2(&matmul_t(&x, &w).unwrap(), &want).unwrap();
            assert!(err < 3e-6, "({m}, {k}) · ({n}, {k})ᵀ: rel L2 {err:.2e}");
            // Both operands the other way round in memory, and a view that starts inside its
            // storage: the strides decide, not the layout.
            let (xt, wt) = (random(&mut rng, (k, m + 1)), random(&mut rng, (k, n)));
            let xt = xt.narrow(1, 1, m).unwrap().t().unwrap();
            let want = xt.matmul(&wt).unwrap();
            let err = rel_l2(&matmul(&xt, &wt).unwrap(), &want).unwrap();
            assert!(err < 3e-6, "strided ({m}, {k}) · ({k}, {n}): rel L2 {err:.2e}");
        }
    }

    #[test]
    fn gradients_equal_candles() {
        let Some(mut rng) = seeded(6) else { return };
        // The weight gradient of the 2,100-row case sums over K = 2,100 rows: two passes; the
        // 20-row case packs x, not the weight.
        for (m, k, n) in [
            (130, 70, 45),
            (257, 96, 300),
            (12, 1, 33),
            (2100, 16, 20),
            (20, 300, 500),
        ] {
            let x = Var::from_tensor(&random(&mut rng, (m, k))).unwrap();
            let w = Var::from_tensor(&random(&mut rng, (n, k))).unwrap();
            let up = random(&mut rng, (m, n));
            let grads = |y: Tensor| (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let ours = grads(matmul_t(&x, &w).unwrap());
            let want = grads(x.matmul(&w.t().unwrap()).unwrap());
            for (name, v) in [("x", &x), ("w", &w)] {
                let err = rel_l2(ours.get(v).unwrap(), want.get(v).unwrap()).unwrap();
                assert!(err < 1e-6, "({m}, {k}) · ({n}, {k})ᵀ, d{name}: rel L2 {err:.2e}");
            }
        }
        // A frozen weight takes no gradient; the input still does.
        let x = Var::from_tensor(&random(&mut rng, (140, 20))).unwrap();
        let w = random(&mut rng, (30, 20));
        let grads = matmul_t(&x, &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&w).is_none() && grads.get(&x).is_some());
    }
}
