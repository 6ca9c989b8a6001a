//! One-pass CPU versions of the elementwise chains around the GEMMs: RMSNorm (six candle ops,
//! each a full pass and a fresh buffer) and the rotary embedding (about ten). On the bench
//! model's tower a 532-pixel page moves ~2.6 GB through such chains, a sixth of its time.
//! They take f32 CPU tensors that carry no gradient; everything else (and the trainer) takes
//! the plain-op twins they are checked against.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

/// Whether the fused ops take these tensors.
pub fn takes(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && !t.track_op())
}

/// `f(row index, output row)` for every row of `dst`, blocks of rows over threads.
fn for_rows(dst: &mut [f32], dst_row: usize, rows: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let per = rows.div_ceil(4 * rayon::current_num_threads()).max(64);
    dst.par_chunks_mut(per * dst_row)
        .enumerate()
        .for_each(|(block, chunk)| {
            for (i, row) in chunk.chunks_mut(dst_row).enumerate() {
                f(block * per + i, row);
            }
        });
}

struct RmsNormOp {
    eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "vellum-cpu-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(xs, xl, "rms_norm")?, f32_slice(w, wl, "rms_norm weight")?);
        let dim = w.len();
        let rows = x.len() / dim;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, dim, rows, |r, dst| {
            let src = &x[r * dim..(r + 1) * dim];
            let mean = src.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            let inv = 1.0 / (mean + self.eps).sqrt();
            for ((d, &s), &g) in dst.iter_mut().zip(src).zip(w) {
                *d = s * inv * g;
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `rms_norm(xs) · weight` over the last dimension (see [`takes`]; `xs` contiguous).
pub fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    xs.apply_op2_no_bwd(weight, &RmsNormOp { eps: eps as f32 })
}

struct SiluMulOp;

impl CustomOp2 for SiluMulOp {
    fn name(&self) -> &'static str {
        "vellum-cpu-silu-and-mul"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, u: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (f32_slice(g, gl, "silu_and_mul")?, f32_slice(u, ul, "silu_and_mul")?);
        if gate.len() != up.len() {
            candle_core::bail!("silu_and_mul: {} gate values for {} up values", gate.len(), up.len());
        }
        let dim = gl.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; gate.len()];
        for_rows(&mut out, dim, gate.len() / dim, |r, dst| {
            let (g, u) = (&gate[r * dim..(r + 1) * dim], &up[r * dim..(r + 1) * dim]);
            silu_mul_row(g, u, dst);
        });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

/// `silu(g)·u`, with σ from the softmax's vectorised exp of −|g| (never overflows).
fn silu_mul_row(g: &[f32], u: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for are present.
        return unsafe { silu_mul_row_avx2(g, u, dst) };
    }
    silu_mul_row_portable(g, u, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn silu_mul_row_avx2(g: &[f32], u: &[f32], dst: &mut [f32]) {
    silu_mul_row_portable(g, u, dst)
}

#[inline(always)]
fn silu_mul_row_portable(g: &[f32], u: &[f32], dst: &mut [f32]) {
    for ((d, &g), &u) in dst.iter_mut().zip(g).zip(u) {
        let e = super::softmax::exp_nonpositive(-g.abs());
        let sigmoid = if g >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        *d = g * sigmoid * u;
    }
}

/// `silu(gate) · up` (see [`takes`]; same shapes, contiguous).
pub fn silu_and_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.apply_op2_no_bwd(up, &SiluMulOp)
}

struct RotaryOp {
    sign: f32,
}

impl CustomOp3 for RotaryOp {
    fn name(&self) -> &'static str {
        "vellum-cpu-rotary"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cos: &CpuStorage,
        cl: &Layout,
        sin: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, "rotary")?;
        let (cos, sin) = (f32_slice(cos, cl, "rotary cos")?, f32_slice(sin, sl, "rotary sin")?);
        let (tokens, heads, head_dim) = xl.shape().dims3()?;
        let table = cl.dims()[1];
        let half = head_dim / 2;
        let row = heads * head_dim;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, row, tokens, |t, dst| {
            let (c, s) = (&cos[t * table..t * table + half], &sin[t * table..t * table + half]);
            for h in 0..heads {
                let src = &x[t * row + h * head_dim..][..head_dim];
                let (x1, x2) = src.split_at(half);
                let (y1, y2) = dst[h * head_dim..(h + 1) * head_dim].split_at_mut(half);
                for i in 0..half {
                    let sn = self.sign * s[i];
                    y1[i] = x1[i] * c[i] - x2[i] * sn;
                    y2[i] = x2[i] * c[i] + x1[i] * sn;
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// The rotary embedding of `xs` (tokens, heads, head_dim) by tables (tokens, ≥ head_dim/2) of
/// which the first head_dim/2 columns are read (see [`takes`]); `sign` is the sine terms'
/// (`Rotation::sign` in `rotary`).
pub fn rotate(xs: &Tensor, cos: &Tensor, sin: &Tensor, sign: f32) -> Result<Tensor> {
    xs.contiguous()?
        .apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &RotaryOp { sign })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rotary::Rotation;
    use crate::ops::{norm, rotary};
    use candle_core::Device;

    #[test]
    fn fused_ops_match_their_plain_twins() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (37, 5, 16), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 16, &dev)?;
        let err = |a: &Tensor, b: &Tensor| -> Result<f32> { (a - b)?.abs()?.max_all()?.to_scalar::<f32>() };
        let (g, u) = (
            (Tensor::randn(0f32, 1.0, (37, 80), &dev)? * 6.0)?,
            Tensor::randn(0f32, 1.0, (37, 80), &dev)?,
        );
        let want = crate::ops::activation::silu_and_mul_reference(&g, &u)?;
        assert!(err(&silu_and_mul(&g, &u)?, &want)? < 1e-5);
        assert!(err(&rms_norm(&x, &w, 1e-6)?, &norm::rms_norm_reference(&x, Some(&w), 1e-6)?)? < 1e-5);
        let angles: Vec<f32> = (0..37 * 8).map(|i| i as f32 * 0.37).collect();
        let (cos, sin) = rotary::cos_sin(&angles, 37, &dev)?;
        for r in [Rotation::Theta, Rotation::NegTheta] {
            let want = rotary::rotate_reference(&x, &cos, &sin, r)?;
            assert!(err(&rotate(&x, &cos, &sin, r.sign())?, &want)? < 1e-6);
        }
        // A strided view (one of q/k/v out of a packed projection) and the rotate-half form.
        let qkv = Tensor::randn(0f32, 1.0, (37, 3, 5, 16), &dev)?;
        let k = qkv.narrow(1, 1, 1)?.squeeze(1)?;
        let want = rotary::rotate_reference(&k, &cos, &sin, Rotation::Theta)?;
        assert!(err(&rotate(&k, &cos, &sin, 1.0)?, &want)? < 1e-6);
        let half =
            (x.broadcast_mul(&cos.unsqueeze(1)?)? + rotary::rotate_half(&x)?.broadcast_mul(&sin.unsqueeze(1)?)?)?;
        assert!(err(&rotate(&x, &cos, &sin, 1.0)?, &half)? < 1e-6);
        Ok(())
    }
}
