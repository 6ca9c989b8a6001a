//! `x · wᵀ + b` with bf16 weights on CPUs with AVX-512 BF16: the linear layers of the bf16 fast
//! mode. Activations stay f32 between layers; each layer rounds its input to bf16 (to nearest
//! even, as PyTorch's bf16 matmuls take it), multiplies by weights rounded once at load, and sums
//! in f32. The weights take half the bytes of f32, which is what decode steps wait on.
//!
//! The weights are packed at load into panels of 32 outputs, each input pair's 32 × 2 values in
//! one 64-byte line (output j's pair in 32-bit lane j % 16 of vector j / 16), the order
//! `vdpbf16ps` multiplies them in. For one row that instruction does the work. For more, FMAs do:
//! on an Intel Xeon (family 6 model 207) `vdpbf16ps` runs 51 G products/s a core against 101 G
//! for f32 FMAs, so the kernel widens each line to f32 in registers (a bf16 is the top half of
//! its f32: one shift, one mask) and keeps a block of 12 rows × 32 outputs in 24 registers, each
//! pair two panel loads for 48 FMAs. Serving only: the weights are a rounded copy, not the
//! parameters.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

use super::SendPtr;

/// Outputs per panel: two vectors of 16 f32 sums.
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 12;
/// Rows up to which the `vdpbf16ps` kernel runs; from there the FMA kernel. On an Intel Xeon
/// (family 6 model 207, no AMX), one core: `vdpbf16ps` 51 G products/s, f32 FMAs 101 G. The
/// LM head (32,768 × 640), GFLOP/s dot / FMA kernel: 1 row 50 / 44; 16 rows 177 / 277.
const DOT_MAX_ROWS: usize = 1;
/// Rows of `x` one task takes (a multiple of [`MR`]): their bf16 pairs stay in L2 while each
/// panel is read by all of them.
const ROW_BLOCK: usize = 96;

/// Whether this CPU runs the kernel (AVX-512 F and BF16).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer's weights (N, K) rounded to bf16 and packed for the kernel, its bias in f32.
#[derive(Debug)]
pub struct Bf16Linear {
    n: usize,
    k: usize,
    /// Input pairs, ⌈K / 2⌉ (an odd K's last pair ends in a zero).
    pairs: usize,
    /// Per panel of [`NR`] outputs and per input pair, NR 32-bit lanes: output j's weights for
    /// inputs 2p (low half) and 2p + 1 (high half). Outputs past N are zero.
    panels: Vec<u32>,
    /// Per output, padded to whole panels.
    bias: Vec<f32>,
}

/// Two values rounded to bf16 (to nearest even) in one 32-bit lane, `lo` in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    (bf16::from_f32(hi).to_bits() as u32) << 16 | bf16::from_f32(lo).to_bits() as u32
}

/// A row of K values as ⌈K / 2⌉ bf16 pairs.
fn pack_row(row: &[f32], out: &mut [u32]) {
    for (o, p) in out.iter_mut().zip(row.chunks(2)) {
        *o = pair(p[0], p.get(1).copied().unwrap_or(0.0));
    }
}

impl Bf16Linear {
    /// Rounds `weight` (N, K) to bf16 and keeps `bias` (N) in f32.
    /// Fails on a CPU without AVX-512 bf16 (the kernel's only implementation).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        if !supported() {
            candle_core::bail!("bf16 linear layers need a CPU with AVX-512 BF16");
        }
        let (n, k, pairs, panels) = super::convert_linear_weight(weight, "bf16 linear", |w, n, k| {
            let pairs = k.div_ceil(2);
            let mut panels = vec![0u32; n.div_ceil(NR) * NR * pairs];
            panels
                .par_chunks_mut(NR * pairs)
                .zip(w.par_chunks(NR * k))
                .for_each(|(panel, rows)| {
                    let mut packed = vec![0u32; pairs];
                    for (j, row) in rows.chunks_exact(k).enumerate() {
                        pack_row(row, &mut packed);
                        for (p, &v) in packed.iter().enumerate() {
                            panel[p * NR + j] = v;
                        }
                    }
                });
            (n, k, pairs, panels)
        })?;
        let b = super::padded_bias(bias, n, panels.len() / pairs, "bf16 linear")?;
        Ok(Self {
            n,
            k,
            pairs,
            panels,
            bias: b,
        })
    }

    /// `x · wᵀ + b` for `x` (..., K) f32 on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// The rows of `x` (M × K) times the weights, M × N.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n, pairs) = (self.k, self.n, self.pairs);
        if m == 0 {
            return Vec::new();
        }
        // Few rows: reading the weights bounds the time, and `vdpbf16ps` reads the pairs as they
        // are. More: FMAs on the values widened to f32 run twice the products per cycle (see
        // `DOT_MAX_ROWS`); the input goes as its rounded values, so both compute the same products.
        let (kernel, stride) = if m <= DOT_MAX_ROWS {
            (Kernel::Dot, pairs)
        } else {
            (Kernel::Fma, 2 * pairs)
        };
        let mut xp = vec![0u32; m * stride];
        xp.par_chunks_mut(ROW_BLOCK * stride)
            .zip(x.par_chunks(ROW_BLOCK * k))
            .for_each(|(out, rows)| {
                for (o, row) in out.chunks_exact_mut(stride).zip(rows.chunks_exact(k)) {
                    match kernel {
                        Kernel::Dot => pack_row(row, o),
                        Kernel::Fma => {
                            for (o, &v) in o.iter_mut().zip(row) {
                                *o = (bf16::from_f32(v).to_bits() as u32) << 16;
                            }
                        }
                    }
                }
            });
        let mut y = Vec::<f32>::with_capacity(m * n);
        let panels = self.panels.len() / (NR * pairs);
        let out = SendPtr(y.as_mut_ptr());
        super::tile_tasks(m, ROW_BLOCK, panels, |rows, panel_range| {
            for panel in panel_range {
                let weights = &self.panels[panel * NR * pairs..][..NR * pairs];
                let bias = &self.bias[panel * NR..][..NR];
                let cols = (n - panel * NR).min(NR);
                let mut r = rows.start;
                while r < rows.end {
                    let take = (rows.end - r).min(MR);
                    let a = &xp[r * stride..(r + take) * stride];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `new` checked `supported()`; `a` holds `take` rows of `stride`
                    // (pairs, or their 2 · pairs values widened), `weights` NR × pairs, and this
                    // task alone writes rows r..r + take × columns panel·NR..+cols of `y`
                    // (m × n), which outlives the loop.
                    unsafe {
                        tile(
                            kernel,
                            a,
                            weights,
                            bias,
                            pairs,
                            take,
                            out.get().add(r * n + panel * NR),
                            n,
                            cols,
                        )
                    };
                    r += take;
                }
            }
        });
        // SAFETY: the tasks above wrote all m × n values (every row block × every panel's
        // columns, the last panel's `cols` included).
        unsafe { y.set_len(m * n) };
        y
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    /// `vdpbf16ps` on the bf16 pairs.
    Dot,
    /// FMAs on the rounded values widened to f32.
    Fma,
}

/// Dispatches a block of `rows` ≤ [`MR`] rows to the kernel of that height.
///
/// # Safety
/// As [`dot_kernel`] and [`fma_kernel`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kernel: Kernel,
    a: &[u32],
    w: &[u32],
    bias: &[f32],
    pairs: usize,
    rows: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match (kernel, rows) {
                $((Kernel::Dot, $r) => dot_kernel::<$r>(a, w, bias, pairs, c, ldc, cols),
                  (Kernel::Fma, $r) => fma_kernel::<$r>(a, w, bias, pairs, c, ldc, cols),)*
                (_, r) => unreachable!("{r} rows for a register block of {MR}"),
            }
        };
    }
    by_rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// `c[r·ldc + j] = bias[j] + Σ_p a[r·pairs + p] · w[p·NR + j]` (each a dot product of two bf16
/// pairs) for r < R, j < cols.
///
/// # Safety
/// The CPU has AVX-512 F and BF16; `a` holds R rows of `pairs`, `w` NR × pairs, and `c` may be
/// written at rows 0..R (stride `ldc`), columns 0..cols.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot_kernel<const R: usize>(
    a: &[u32],
    w: &[u32],
    bias: &[f32],
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a, b) = (a.as_ptr(), w.as_ptr());
    for p in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
        }
    }
    store(&acc, bias, c, ldc, cols);
}

/// As [`dot_kernel`], with `a` the rows' rounded values in f32 (bit patterns, 2 · pairs a row)
/// and the weights widened to f32 in registers (a bf16 is the top half of its f32): each pair
/// two panel loads and four shifts or masks for 48 FMAs.
///
/// # Safety
/// As [`dot_kernel`], with `a` holding R rows of 2 · pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_kernel<const R: usize>(
    a: &[u32],
    w: &[u32],
    bias: &[f32],
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a, b) = (a.as_ptr() as *const f32, w.as_ptr());
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    for p in 0..pairs {
        let v0 = _mm512_loadu_si512(b.add(p * NR) as *const _);
        let v1 = _mm512_loadu_si512(b.add(p * NR + 16) as *const _);
        let lo = [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0)),
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1)),
        ];
        let hi = [
            _mm512_castsi512_ps(_mm512_and_si512(v0, high)),
            _mm512_castsi512_ps(_mm512_and_si512(v1, high)),
        ];
        for (r, acc) in acc.iter_mut().enumerate() {
            let x0 = _mm512_set1_ps(*a.add(r * 2 * pairs + 2 * p));
            let x1 = _mm512_set1_ps(*a.add(r * 2 * pairs + 2 * p + 1));
            acc[0] = _mm512_fmadd_ps(x1, hi[0], _mm512_fmadd_ps(x0, lo[0], acc[0]));
            acc[1] = _mm512_fmadd_ps(x1, hi[1], _mm512_fmadd_ps(x0, lo[1], acc[1]));
        }
    }
    store(&acc, bias, c, ldc, cols);
}

/// `c[r·ldc + j] = acc[r][j] + bias[j]` for j < cols.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store<const R: usize>(
    acc: &[[std::arch::x86_64::__m512; 2]; R],
    bias: &[f32],
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let (bias0, bias1) = (_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias.as_ptr().add(16)));
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(c.add(r * ldc), m0, _mm512_add_ps(acc[0], bias0));
        _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, _mm512_add_ps(acc[1], bias1));
    }
}

impl CustomOp1 for Bf16Linear {
    fn name(&self) -> &'static str {
        "vellum-bf16-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::linear_forward(storage, layout, (self.k, self.n), "bf16 linear", |x, m| {
            self.matmul(x, m)
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::ops::rel_l2;

    /// Against candle: input and weights rounded to bf16 by candle's own conversion, then an f32
    /// matmul (products of bf16 values are exact in f32; only the order of the sums differs).
    #[test]
    fn equals_candles_matmul_of_the_rounded_values() -> Result<()> {
        if !supported() {
            eprintln!("no AVX-512 BF16 on this CPU: nothing to compare");
            return Ok(());
        }
        let dev = Device::Cpu;
        let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
        // Whole and partial register blocks, panels and row blocks; odd K; a decode row.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 5, 33),
            (37, 71, 45),
            (200, 640, 97),
            (1, 640, 300),
            (16, 96, 64),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let got = Bf16Linear::new(&w, Some(&b))?.forward(&x)?;
            let want = round(&x)?.matmul(&round(&w)?.t()?)?.broadcast_add(&b)?;
            let err = rel_l2(&got, &want).map_err(candle_core::Error::wrap)?;
            assert!(err < 1e-6, "({m}, {k}) · ({n}, {k})ᵀ: rel L2 {err:.2e}");
            // And what the rounding costs against f32, for scale: bf16's 8 bits of mantissa
            // (over long sums; a single product plus a bias may cancel to anything).
            if k >= 64 {
                let exact = x.matmul(&w.t()?)?.broadcast_add(&b)?;
                let rounding = rel_l2(&got, &exact).map_err(candle_core::Error::wrap)?;
                assert!(rounding < 1e-2, "({m}, {k}) · ({n}, {k})ᵀ: {rounding:.2e} from f32");
            }
        }
        Ok(())
    }

    #[test]
    fn keeps_leading_dimensions() -> Result<()> {
        if !supported() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let lin = Bf16Linear::new(&Tensor::randn(0f32, 1.0, (7, 10), &dev)?, None)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 10), &dev)?;
        let y = lin.forward(&x)?;
        assert_eq!(y.dims(), &[2, 3, 7]);
        let flat = lin.forward(&x.reshape((6, 10))?)?;
        assert_eq!(y.reshape((6, 7))?.to_vec2::<f32>()?, flat.to_vec2::<f32>()?);
        Ok(())
    }
}
