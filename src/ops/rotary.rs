//! Rotary position embeddings in the rotate-half layout (the Qwen convention): the cos/sin
//! tables are built on the host in f32 and applied with plain tensor ops.

use candle_core::{Device, Result, Tensor, D};

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

/// `x * cos + rotate_half(x) * sin`, with cos/sin of shape (tokens, head_dim) broadcast over
/// the heads of `x` (tokens, heads, head_dim).
pub fn apply(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let cos = cos.unsqueeze(1)?;
    let sin = sin.unsqueeze(1)?;
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
