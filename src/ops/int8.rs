//! `x · wᵀ + b` in integers on AVX2 CPUs (AVX-512 VNNI and Intel AMX where present): the linear
//! layers of the int8 fast mode.
//!
//! AVX2 has no int8 dot product (VNNI). Its fastest integer step, `vpmaddubsw`, multiplies
//! unsigned by signed bytes and adds neighbours into saturating i16. Two such steps summed in
//! i16 before one widening `vpmaddwd` run at 124 G multiply-adds/s per core here, against 50 for
//! f32 FMAs and 81 for llama.cpp's sign-trick step (benches/cpu_peak.rs). That needs four
//! products to fit in an i16: activations take 7 bits unsigned (0..=127 from each row's min in
//! its own steps) and weights 7 bits signed (−63..=63, one scale per output row):
//! 4 · 127 · 63 = 32,004 ≤ 32,767. With x ≈ min + s·xu and w ≈ sw·wq,
//!
//! `y[m][n] = sw[n] · (s[m] · Σ xu·wq + min[m] · Σ wq) + b[n]`,
//!
//! the sums exact in i32. Where the CPU has AVX-512 VNNI, one `vpdpbusd` per 64 products does
//! the same sums (same codes, same integers, so the same bits) at about twice the rate, and
//! where it has Intel AMX, one `tdpbusd` per 16,384 at about twice that again. Serving only:
//! the weights are a quantised copy, not the parameters.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::SendPtr;

/// Output rows per weight panel: two 8-lane i32 accumulators.
const NR: usize = 16;
/// Input values per kernel step: two 4-byte groups, one `vpmaddubsw` each.
const KSTEP: usize = 8;
/// Rows of `x` per kernel call (4 × 2 accumulators, 4 weight vectors and the broadcasts fill
/// the 16 registers).
const MR: usize = 4;
/// Rows of `x` one task takes: their codes (64 × K bytes) stay in L2 while each weight panel
/// (16 × K bytes) is read from L1 by all of them.
const ROW_BLOCK: usize = 64;
/// Rows per VNNI tile: 8 × 2 accumulators of the 32 AVX-512 registers.
const MR_VNNI: usize = 8;
/// Input values per AMX tile (64 bytes a row); K is padded to it for every kernel, so that
/// one packing serves all (at most 63 zero inputs more).
const KTILE: usize = 64;
/// Rows of `x` per AMX tile.
const AMX_ROWS: usize = 16;
/// Fewest rows that run on AMX, as one tile padded with zero rows: below it the VNNI tiles.
const AMX_MIN_ROWS: usize = 4;
const WEIGHT_MAX: f32 = 63.0;
const CODE_MAX: f32 = 127.0;

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer's weights (N, K) and bias, quantised and packed for the kernel.
#[derive(Debug)]
pub struct Int8Linear {
    n: usize,
    k: usize,
    /// K rounded up to [`KTILE`]; the padding is zero weights.
    kp: usize,
    /// Per panel of [`NR`] output rows and per [`KSTEP`] inputs, 128 bytes: inputs 0..4 of
    /// rows 0..8, of rows 8..16, then inputs 4..8 of rows 0..8 and of rows 8..16 (row r's four
    /// bytes land in i32 lane r % 8 of a vector). Rows past N are zero.
    panels: Vec<i8>,
    /// Per output row, padded to whole panels: sw, sw · Σ wq, the bias.
    scale: Vec<f32>,
    offset: Vec<f32>,
    bias: Vec<f32>,
    kernel: Kernel,
}

/// The instructions the tiles run on, the fastest this CPU has. All give the same bits: the
/// same codes, the same integer sums, the same affine map.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    Avx2,
    /// AVX-512 VNNI: `vpdpbusd` on 512-bit vectors.
    Vnni,
    /// Intel AMX: `tdpbusd` multiplies a 16 × 64 tile of codes by a 64 × 16 tile of weights,
    /// 16,384 products, in one instruction (VNNI tiles for fewer than [`AMX_MIN_ROWS`] rows).
    Amx,
}

impl Kernel {
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            return if amx::available() { Kernel::Amx } else { Kernel::Vnni };
        }
        Kernel::Avx2
    }
}

impl Int8Linear {
    /// Quantises `weight` (N, K) and keeps `bias` (N) in f32.
    /// Fails on a CPU without AVX2 and FMA (the kernel's only implementation).
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        if !supported() {
            candle_core::bail!("int8 linear layers need a CPU with AVX2 and FMA");
        }
        // A panel of rows per task.
        let (n, k, kp, panels, scale, offset) = super::convert_linear_weight(weight, "int8 linear", |w, n, k| {
            let kp = k.div_ceil(KTILE) * KTILE;
            let np = n.div_ceil(NR) * NR;
            let mut panels = vec![0i8; np * kp];
            let (mut scale, mut offset) = (vec![0f32; np], vec![0f32; np]);
            panels
                .par_chunks_mut(NR * kp)
                .zip(scale.par_chunks_mut(NR).zip(offset.par_chunks_mut(NR)))
                .zip(w.par_chunks(NR * k))
                .for_each(|((panel, (scale, offset)), rows)| {
                    for (lane, values) in rows.chunks_exact(k).enumerate() {
                        let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let sw = if amax > 0.0 { amax / WEIGHT_MAX } else { 1.0 };
                        let mut sum = 0i32;
                        for (i, v) in values.iter().enumerate() {
                            let q = (v / sw).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8;
                            sum += q as i32;
                            let at = i / KSTEP * NR * KSTEP
                                + (i % KSTEP) / 4 * NR * 4
                                + lane / 8 * 32
                                + lane % 8 * 4
                                + i % 4;
                            panel[at] = q;
                        }
                        scale[lane] = sw;
                        offset[lane] = sw * sum as f32;
                    }
                });
            (n, k, kp, panels, scale, offset)
        })?;
        let b = super::padded_bias(bias, n, scale.len(), "int8 linear")?;
        Ok(Self {
            n,
            k,
            kp,
            panels,
            scale,
            offset,
            bias: b,
            kernel: Kernel::best(),
        })
    }

    /// `x · wᵀ + b` for `x` (..., K) f32 on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }

    /// The rows of `x` (M × K) times the weights, M × N.
    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        // No rows: a prefill chunk that samples nothing still asks the LM head.
        if m == 0 {
            return Vec::new();
        }
        let (k, kp, n) = (self.k, self.kp, self.n);
        let amx = self.kernel == Kernel::Amx && m >= AMX_MIN_ROWS;
        // AMX reads whole tiles of 16 rows: the last one is padded with zero codes.
        let mut codes = vec![0u8; if amx { m.next_multiple_of(AMX_ROWS) } else { m } * kp];
        let mut rows = vec![(0f32, 0f32); m];
        codes
            .par_chunks_mut(ROW_BLOCK * kp)
            .zip(rows.par_chunks_mut(ROW_BLOCK))
            .zip(x.par_chunks(ROW_BLOCK * k))
            .for_each(|((codes, rows), x)| {
                for ((c, r), x) in codes.chunks_exact_mut(kp).zip(rows.iter_mut()).zip(x.chunks_exact(k)) {
                    *r = quantize_row(x, &mut c[..k]);
                }
            });
        // Not zero-filled: the tiles write every value (a memset of the output was 4% of a run).
        let mut y = Vec::<f32>::with_capacity(m * n);
        let panels = self.panels.len() / (NR * kp);
        let out = SendPtr(y.as_mut_ptr());
        super::tile_tasks(m, ROW_BLOCK, panels, |row_range, panel_range| {
            #[cfg(target_arch = "x86_64")]
            if amx {
                // SAFETY: `new` chose AMX only where `amx::available()`; codes hold whole tiles
                // of rows (padded above), and the task writes only its own tiles of `y`.
                unsafe { self.amx_task(&codes, &rows, row_range, panel_range, out) };
                return;
            }
            for panel in panel_range {
                let cols = (n - panel * NR).min(NR);
                let mut r = row_range.start;
                while r < row_range.end {
                    let count = (row_range.end - r).min(if self.kernel == Kernel::Avx2 { MR } else { MR_VNNI });
                    // SAFETY: tasks write disjoint tiles (rows of their block × columns of
                    // their panels) of `y`, which outlives the parallel loop.
                    let out = unsafe { out.get().add(r * n + panel * NR) };
                    self.tile(&codes[r * kp..(r + count) * kp], &rows[r..r + count], panel, out, cols);
                    r += count;
                }
            }
        });
        // SAFETY: the tasks above wrote all m × n values (every row block × every panel's
        // columns, the last panel's `cols` included).
        unsafe { y.set_len(m * n) };
        y
    }

    /// Panel `panel`'s per-output parameters.
    fn panel(&self, panel: usize) -> Panel<'_> {
        let at = panel * NR;
        Panel {
            scale: &self.scale[at..at + NR],
            offset: &self.offset[at..at + NR],
            bias: &self.bias[at..at + NR],
        }
    }

    /// One task on AMX: its rows, 16 at a time, against its panels, four at a time (tiles 0–3
    /// accumulate, 4 holds the codes, 5 a panel's weights). Each 64-input step of a panel is
    /// 1,024 bytes, 16 rows of 64: exactly a tile of weights as `tdpbusd` reads it (row i: inputs
    /// 4i..4i+4 of the 16 outputs), so the packing of the other kernels serves as it is.
    ///
    /// # Safety
    /// AMX must be available (`amx::available()`); `codes` must hold whole 16-row tiles for the
    /// rows in `row_range`; `out` is the m × N output, of which this task writes its rows ×
    /// its panels' columns.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn amx_task(
        &self,
        codes: &[u8],
        rows: &[(f32, f32)],
        row_range: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        out: SendPtr,
    ) {
        use std::arch::asm;
        let (kp, n) = (self.kp, self.n);
        let panel_bytes = NR * kp;
        let config = amx::TileConfig::new();
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        let mut sums = [[0i32; NR * AMX_ROWS]; 4];
        for r in row_range.clone().step_by(AMX_ROWS) {
            assert!((r + AMX_ROWS) * kp <= codes.len());
            let a = codes.as_ptr().add(r * kp);
            let mut p = panels.start;
            while p < panels.end {
                let count = (panels.end - p).min(4);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                let w = self.panels.as_ptr().add(p * panel_bytes);
                for kb in 0..kp / KTILE {
                    asm!("tileloadd tmm4, [{a} + {s}*1]", a = in(reg) a.add(kb * KTILE), s = in(reg) kp, options(nostack, readonly));
                    let b = |j: usize| w.add(j * panel_bytes + kb * NR * KTILE);
                    macro_rules! step {
                        ($c:literal, $j:expr) => {
                            asm!(
                                "tileloadd tmm5, [{b} + {s}*1]",
                                concat!("tdpbusd ", $c, ", tmm4, tmm5"),
                                b = in(reg) b($j),
                                s = in(reg) 64usize,
                                options(nostack, readonly)
                            )
                        };
                    }
                    step!("tmm0", 0);
                    if count > 1 {
                        step!("tmm1", 1);
                    }
                    if count > 2 {
                        step!("tmm2", 2);
                    }
                    if count > 3 {
                        step!("tmm3", 3);
                    }
                }
                let s = 4 * NR;
                asm!(
                    "tilestored [{0} + {s}*1], tmm0",
                    "tilestored [{1} + {s}*1], tmm1",
                    "tilestored [{2} + {s}*1], tmm2",
                    "tilestored [{3} + {s}*1], tmm3",
                    in(reg) sums[0].as_mut_ptr(),
                    in(reg) sums[1].as_mut_ptr(),
                    in(reg) sums[2].as_mut_ptr(),
                    in(reg) sums[3].as_mut_ptr(),
                    s = in(reg) s,
                    options(nostack)
                );
                for (j, sums) in sums.iter().enumerate().take(count) {
                    let panel = p + j;
                    let (affine, cols) = (affine(&self.panel(panel)), (n - panel * NR).min(NR));
                    for i in 0..AMX_ROWS.min(row_range.end - r) {
                        let sum = std::arch::x86_64::_mm512_loadu_si512(sums.as_ptr().add(i * NR) as *const _);
                        store_row(sum, rows[r + i], &affine, out.get().add((r + i) * n + panel * NR), cols);
                    }
                }
                p += count;
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }

    /// Up to [`MR`] rows of codes (AVX2; [`MR_VNNI`] with VNNI) against one panel, written to
    /// `out` (row stride N).
    fn tile(&self, codes: &[u8], rows: &[(f32, f32)], panel: usize, out: *mut f32, cols: usize) {
        let kp = self.kp;
        let weights = &self.panels[panel * NR * kp..][..NR * kp];
        let params = self.panel(panel);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` checked `supported()` and chose VNNI or AMX only where the CPU has
        // VNNI; codes hold rows.len() rows of kp bytes, weights NR × kp, and out has
        // rows.len() rows of `cols` writable values at stride N.
        unsafe {
            match (self.kernel != Kernel::Avx2, rows.len()) {
                (true, 1) => tile_vnni::<1>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 2) => tile_vnni::<2>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 3) => tile_vnni::<3>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 4) => tile_vnni::<4>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 5) => tile_vnni::<5>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 6) => tile_vnni::<6>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, 7) => tile_vnni::<7>(codes, kp, weights, rows, &params, out, self.n, cols),
                (true, _) => tile_vnni::<8>(codes, kp, weights, rows, &params, out, self.n, cols),
                (false, 1) => tile_avx2::<1>(codes, kp, weights, rows, &params, out, self.n, cols),
                (false, 2) => tile_avx2::<2>(codes, kp, weights, rows, &params, out, self.n, cols),
                (false, 3) => tile_avx2::<3>(codes, kp, weights, rows, &params, out, self.n, cols),
                (false, _) => tile_avx2::<4>(codes, kp, weights, rows, &params, out, self.n, cols),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "Int8Linear::new refuses CPUs without AVX2: {:?}",
            (codes, rows, weights, out, cols)
        );
    }
}

/// What AMX needs from the OS and the CPU.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::sync::OnceLock;

    /// Whether AMX-INT8 runs here: the CPU has it, and Linux granted this process the 8 KB
    /// tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without it the first
    /// tile instruction is a SIGILL).
    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            // CPUID leaf 7 exists on every x86_64 CPU with AVX-512 (checked first).
            let leaf = std::arch::x86_64::__cpuid_count(7, 0);
            let (tile, int8) = (leaf.edx & (1 << 24) != 0, leaf.edx & (1 << 25) != 0);
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a request for a permission; it changes nothing else.
            tile && int8 && unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) } == 0
        })
    }

    /// `ldtilecfg`'s 64 bytes: palette 1, six tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    pub struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    impl TileConfig {
        pub fn new() -> Self {
            let mut c = TileConfig {
                palette: 1,
                start_row: 0,
                reserved: [0; 14],
                bytes_per_row: [0; 16],
                rows: [0; 16],
            };
            for t in 0..6 {
                (c.bytes_per_row[t], c.rows[t]) = (64, 16);
            }
            c
        }
    }
}

struct Panel<'a> {
    scale: &'a [f32],
    offset: &'a [f32],
    bias: &'a [f32],
}

/// A row's 7-bit codes (x ≈ min + step · code) and its (step, min).
fn quantize_row(x: &[f32], codes: &mut [u8]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `Int8Linear::new` checked `supported()`.
    unsafe {
        quantize_row_avx2(x, codes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("Int8Linear::new refuses CPUs without AVX2: {:?}", (x, codes))
}

/// 32 values per step: the compiler leaves the saturating f32 → u8 cast scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_row_avx2(x: &[f32], codes: &mut [u8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (step, lo) = step_and_min(x);
    let inv = 1.0 / step;
    let body = x.len() / 32 * 32;
    let (vlo, vinv, half, top) = (
        _mm256_set1_ps(lo),
        _mm256_set1_ps(inv),
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(CODE_MAX),
    );
    // packs/packus interleave the 128-bit halves: 4-byte groups come out as a0 b0 c0 d0 a1 b1
    // c1 d1 (a0: codes 0..4, a1: codes 4..8 of the first 8 values, …).
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for c in (0..body).step_by(32) {
        // SAFETY: c + 32 ≤ body ≤ x.len() = codes.len() (the caller's row).
        unsafe {
            let q = |i: usize| {
                let v = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(c + 8 * i)), vlo);
                // Rounding half up, as `encode`: (v·inv + ½) truncated, all terms ≥ 0.
                _mm256_cvttps_epi32(_mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(v, vinv), half), top))
            };
            let words = (_mm256_packs_epi32(q(0), q(1)), _mm256_packs_epi32(q(2), q(3)));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(words.0, words.1), order);
            _mm256_storeu_si256(codes.as_mut_ptr().add(c) as *mut __m256i, bytes);
        }
    }
    encode(&x[body..], lo, inv, &mut codes[body..x.len()]);
    (step, lo)
}

/// The row's step (127 of them span min..max) and min, in eight lanes; a NaN step for a row
/// with a NaN (min and max skip it, and the row's outputs must not look valid).
#[inline(always)]
fn step_and_min(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let mut nan = [false; 8];
    let chunks = x.chunks_exact(8);
    for &v in chunks.remainder() {
        (lo[0], hi[0], nan[0]) = (lo[0].min(v), hi[0].max(v), nan[0] | v.is_nan());
    }
    for c in chunks {
        for i in 0..8 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
            nan[i] |= c[i].is_nan();
        }
    }
    if nan.contains(&true) {
        return (f32::NAN, f32::NAN);
    }
    let lo = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (if hi > lo { (hi - lo) / CODE_MAX } else { 1.0 }, lo)
}

#[inline(always)]
fn encode(x: &[f32], lo: f32, inv: f32, codes: &mut [u8]) {
    for (c, v) in codes.iter_mut().zip(x) {
        // (v − lo) · inv lies in [0, 127] up to rounding; the cast saturates below.
        *c = ((v - lo) * inv + 0.5).min(CODE_MAX) as u8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const R: usize>(
    codes: &[u8],
    kp: usize,
    weights: &[i8],
    rows: &[(f32, f32)],
    panel: &Panel,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let (x, mut w) = (codes.as_ptr(), weights.as_ptr() as *const __m256i);
    let mut kk = 0;
    while kk < kp {
        let (wa0, wa1) = (_mm256_loadu_si256(w), _mm256_loadu_si256(w.add(1)));
        let (wb0, wb1) = (_mm256_loadu_si256(w.add(2)), _mm256_loadu_si256(w.add(3)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = x.add(r * kp + kk);
            let xa = _mm256_set1_epi32((at as *const i32).read_unaligned());
            let xb = _mm256_set1_epi32((at.add(4) as *const i32).read_unaligned());
            let p0 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, wa0), _mm256_maddubs_epi16(xb, wb0));
            let p1 = _mm256_add_epi16(_mm256_maddubs_epi16(xa, wa1), _mm256_maddubs_epi16(xb, wb1));
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(p0, ones));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(p1, ones));
        }
        w = w.add(4);
        kk += KSTEP;
    }
    for (r, (sums, &(step, min))) in acc.iter().zip(rows).enumerate() {
        for (half, &sum) in sums.iter().enumerate() {
            let scale = _mm256_loadu_ps(panel.scale.as_ptr().add(8 * half));
            let offset = _mm256_loadu_ps(panel.offset.as_ptr().add(8 * half));
            let bias = _mm256_loadu_ps(panel.bias.as_ptr().add(8 * half));
            let y = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sum),
                _mm256_mul_ps(_mm256_set1_ps(step), scale),
                _mm256_fmadd_ps(_mm256_set1_ps(min), offset, bias),
            );
            let dst = out.add(r * ldo + 8 * half);
            if cols >= 8 * (half + 1) {
                _mm256_storeu_ps(dst, y);
            } else if cols > 8 * half {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), y);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, cols - 8 * half);
            }
        }
    }
}

/// [`tile_avx2`] on AVX-512 VNNI: the first 64 bytes of each 128-byte step are inputs 0..4 of
/// all 16 rows, one `vpdpbusd` operand, and the next 64 inputs 4..8. Each row keeps two
/// accumulators, one per half of the step, so that eight chains hide the instruction's latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_vnni<const R: usize>(
    codes: &[u8],
    kp: usize,
    weights: &[i8],
    rows: &[(f32, f32)],
    panel: &Panel,
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    let (x, mut w) = (codes.as_ptr(), weights.as_ptr() as *const __m512i);
    let mut kk = 0;
    while kk < kp {
        let (wa, wb) = (_mm512_loadu_si512(w), _mm512_loadu_si512(w.add(1)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = x.add(r * kp + kk);
            let xa = _mm512_set1_epi32((at as *const i32).read_unaligned());
            let xb = _mm512_set1_epi32((at.add(4) as *const i32).read_unaligned());
            acc[0] = _mm512_dpbusd_epi32(acc[0], xa, wa);
            acc[1] = _mm512_dpbusd_epi32(acc[1], xb, wb);
        }
        w = w.add(2);
        kk += KSTEP;
    }
    let affine = affine(panel);
    for (r, (acc, &row)) in acc.iter().zip(rows).enumerate() {
        store_row(_mm512_add_epi32(acc[0], acc[1]), row, &affine, out.add(r * ldo), cols);
    }
}

/// A panel's scale, offset and bias as vectors, loaded once for all its rows (the stores to
/// the output may alias them as far as the compiler knows, so it would reload them per row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn affine(panel: &Panel) -> [std::arch::x86_64::__m512; 3] {
    use std::arch::x86_64::_mm512_loadu_ps;
    // Not `.map(…)`: a closure does not take the function's target features.
    [
        _mm512_loadu_ps(panel.scale.as_ptr()),
        _mm512_loadu_ps(panel.offset.as_ptr()),
        _mm512_loadu_ps(panel.bias.as_ptr()),
    ]
}

/// One row of a panel's outputs from its 16 integer sums: the affine map, then the first
/// `cols` values stored (the last panel of an N that is not a multiple of 16 has fewer).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_row(
    sum: std::arch::x86_64::__m512i,
    (step, min): (f32, f32),
    &[scale, offset, bias]: &[std::arch::x86_64::__m512; 3],
    out: *mut f32,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let y = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(sum),
        _mm512_mul_ps(_mm512_set1_ps(step), scale),
        _mm512_fmadd_ps(_mm512_set1_ps(min), offset, bias),
    );
    _mm512_mask_storeu_ps(out, ((1u32 << cols) - 1) as u16, y);
}

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "vellum-int8-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        super::linear_forward(storage, layout, (self.k, self.n), "int8 linear", |x, m| {
            self.matmul(x, m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The same arithmetic written out: codes and weights by the definitions above, integer
    /// sums, then the affine map.
    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, bias: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for j in 0..n {
            let wr = &w[j * k..][..k];
            let amax = wr.iter().fold(0f32, |a, v| a.max(v.abs()));
            let sw = amax / WEIGHT_MAX;
            let wq: Vec<i32> = wr.iter().map(|v| (v / sw).round() as i32).collect();
            for i in 0..m {
                let xr = &x[i * k..][..k];
                let lo = xr.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let step = (hi - lo) / CODE_MAX;
                let inv = 1.0 / step;
                let dot: i64 = xr
                    .iter()
                    .zip(&wq)
                    .map(|(v, q)| ((((v - lo) * inv) + 0.5).floor().min(127.0) as i64) * *q as i64)
                    .sum();
                let sum: i64 = wq.iter().map(|&q| q as i64).sum();
                y[i * n + j] = (sw as f64 * (step as f64 * dot as f64 + lo as f64 * sum as f64)) as f32 + bias[j];
            }
        }
        y
    }

    #[test]
    fn matches_its_arithmetic_written_out_at_every_tail() -> Result<()> {
        if !supported() {
            return Ok(());
        }
        let dev = Device::Cpu;
        for (m, n, k) in [
            (0, 16, 8),
            (1, 16, 8),
            (3, 17, 13),
            (4, 31, 64),
            (7, 40, 77),
            (70, 33, 100),
            (130, 16, 24),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let got: Vec<f32> = Int8Linear::new(&w, Some(&b))?.forward(&x)?.flatten_all()?.to_vec1()?;
            let want = reference(
                &x.flatten_all()?.to_vec1()?,
                m,
                &w.flatten_all()?.to_vec1()?,
                n,
                k,
                &b.to_vec1()?,
            );
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4, "{m}×{k} · ({n}×{k})ᵀ: max difference {err}");
        }
        Ok(())
    }

    /// The kernels this CPU has below its best (AVX2 under VNNI, both under AMX) give the best
    /// one's bits: the same integer sums through the same affine map.
    #[test]
    fn every_kernel_gives_the_same_bits() -> Result<()> {
        let best = Kernel::best();
        if !supported() || best == Kernel::Avx2 {
            return Ok(());
        }
        let dev = Device::Cpu;
        for (m, n, k) in [(1, 16, 8), (5, 37, 77), (16, 64, 64), (33, 70, 130), (70, 640, 1792)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, n, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let mut linear = Int8Linear::new(&w, Some(&b))?;
            let want: Vec<f32> = linear.forward(&x)?.flatten_all()?.to_vec1()?;
            for kernel in [Kernel::Avx2, Kernel::Vnni].into_iter().filter(|&kn| kn != best) {
                linear.kernel = kernel;
                let got: Vec<f32> = linear.forward(&x)?.flatten_all()?.to_vec1()?;
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel:?} against {best:?}, {m}×{k} · ({n}×{k})ᵀ"
                );
            }
        }
        Ok(())
    }

    /// A NaN poisons its row's outputs, as in f32, and only those.
    #[test]
    fn a_nan_input_gives_nan_outputs_in_its_row_only() -> Result<()> {
        if !supported() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (20, 40), &dev)?;
        let mut x: Vec<f32> = Tensor::randn(0f32, 1.0, (3, 40), &dev)?.flatten_all()?.to_vec1()?;
        x[40 + 33] = f32::NAN;
        let y = Int8Linear::new(&w, None)?.forward(&Tensor::from_vec(x, (3, 40), &dev)?)?;
        let rows = y.to_vec2::<f32>()?;
        assert!(rows[1].iter().all(|v| v.is_nan()), "{:?}", rows[1]);
        assert!(rows[0].iter().chain(&rows[2]).all(|v| v.is_finite()));
        Ok(())
    }

    /// The quantisation error against f32: ≈ 1.5% of rms from each side (a step of ~1/20 σ).
    #[test]
    fn stays_within_the_quantisation_error_of_f32() -> Result<()> {
        if !supported() {
            return Ok(());
        }
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (640, 1792), &dev)?;
        let b = Tensor::randn(0f32, 0.1, 640, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 37, 1792), &dev)?;
        let got = Int8Linear::new(&w, Some(&b))?.forward(&x)?;
        let want = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
        assert_eq!(got.dims(), &[2, 37, 640]);
        let err = super::super::rel_l2(&got, &want).map_err(candle_core::Error::wrap)?;
        assert!(err < 0.03, "rel L2 {err}");
        assert!(
            err > 1e-3,
            "rel L2 {err}: no quantisation error at all, so no quantisation"
        );
        Ok(())
    }
}
