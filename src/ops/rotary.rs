//! Rotary position embeddings in the rotate-half layout: the cos/sin tables are built on the
//! host in f32 (they carry the geometry: M-RoPE, 2D vision, 1D), then applied by one kernel or
//! its twins. Qwen rotates by θ; nanochat by −θ.

use candle_core::{DType, Device, Result, Tensor, D};

/// Inverse frequencies `1 / theta^(2i/dim)` for `i < dim/2`, in f32 as the reference computes them.
pub fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// `[-x2, x1]` for `x = [x1, x2]` split in halves along the last dimension.
pub fn rotate_half(xs: &Tensor) -> Result<Tensor> {
    let half = xs.dim(D::Minus1)? / 2;
    let x1 = xs.narrow(D::Minus1, 0, half)?;
    let x2 = xs.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Which way the pairs turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Qwen: `y1 = x1·cos − x2·sin, y2 = x2·cos + x1·sin`.
    Theta,
    /// nanochat: `y1 = x1·cos + x2·sin, y2 = x2·cos − x1·sin`.
    NegTheta,
}

impl Rotation {
    /// The sign of the sine terms' angle, as the fused kernels take it.
    pub fn sign(self) -> f32 {
        match self {
            Rotation::Theta => 1.0,
            Rotation::NegTheta => -1.0,
        }
    }
}

/// Rotates `x` (tokens, heads, head_dim) by per-token angles whose cos/sin tables are
/// (tokens, ≥ head_dim/2) (only the first head_dim/2 columns are read), in f32, the result in
/// x's dtype.
pub fn rotate(xs: &Tensor, cos: &Tensor, sin: &Tensor, rotation: Rotation) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs]) && !cos.track_op() && !sin.track_op() {
        return super::kernels::rotary(xs, cos, sin, rotation.sign());
    }
    if super::cpu_fused::takes(&[xs, cos, sin]) {
        return super::cpu_fused::rotate(xs, cos, sin, rotation.sign());
    }
    rotate_reference(xs, cos, sin, rotation)
}

/// The CPU twin of the rotary kernel.
pub fn rotate_reference(xs: &Tensor, cos: &Tensor, sin: &Tensor, rotation: Rotation) -> Result<Tensor> {
    let dtype = xs.dtype();
    let x = xs.to_dtype(DType::F32)?;
    let d = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, d)?, x.narrow(D::Minus1, d, d)?);
    let table = |t: &Tensor| t.narrow(1, 0, d)?.to_dtype(DType::F32)?.unsqueeze(1);
    let (cos, sin) = (table(cos)?, table(sin)?);
    let sin = match rotation {
        Rotation::Theta => sin,
        Rotation::NegTheta => sin.neg()?,
    };
    let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let y2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Tensor::cat(&[&y1, &y2], D::Minus1)?.to_dtype(dtype)
}

/// `x * cos + rotate_half(x) * sin` in x's dtype (the f32 tables cast to it), as Qwen's text
/// model computes it, with cos/sin of shape (tokens, head_dim) broadcast over the heads of `x`
/// (tokens, heads, head_dim). On the kernels the arithmetic is f32 (one rounding instead of
/// three in bf16).
pub fn apply(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs]) && !cos.track_op() && !sin.track_op() {
        return super::kernels::rotary(xs, cos, sin, 1.0);
    }
    if super::cpu_fused::takes(&[xs, cos, sin]) {
        return super::cpu_fused::rotate(xs, cos, sin, Rotation::Theta.sign());
    }
    let cos = cos.to_dtype(xs.dtype())?.unsqueeze(1)?;
    let sin = sin.to_dtype(xs.dtype())?.unsqueeze(1)?;
    xs.broadcast_mul(&cos)? + rotate_half(xs)?.broadcast_mul(&sin)?
}

/// cos and sin tables (tokens, 2·half) from per-token angles (tokens × half, row-major),
/// duplicated to the full head dimension as the rotate-half layout wants.
pub fn cos_sin(angles: &[f32], tokens: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = angles.len() / tokens.max(1);
    let table = |f: fn(f32) -> f32| -> Result<Tensor> {
        let mut out = Vec::with_capacity(tokens * half * 2);
        for row in angles.chunks(half) {
            let values: Vec<f32> = row.iter().map(|&a| f(a)).collect();
            out.extend_from_slice(&values);
            out.extend_from_slice(&values);
        }
        Tensor::from_vec(out, (tokens, half * 2), device)
    };
    Ok((table(f32::cos)?, table(f32::sin)?))
}
