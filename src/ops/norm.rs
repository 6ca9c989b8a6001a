//! RMSNorm as the references compute it: statistics in f32, the normalised row cast back to the
//! input dtype before the learned scale (Qwen); nanochat's has no scale. LayerNorm (SAM, CLIP).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    /// `(xs + residual, norm(xs + residual))`: the residual add fused with the norm after it.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        add_rms_norm(xs, residual, Some(&self.weight), self.eps)
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        rms_norm(xs, Some(&self.weight), self.eps)
    }
}

/// RMSNorm over the last dimension, scaled by `weight` when there is one.
pub fn rms_norm(xs: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs]) && weight.is_none_or(|w| super::on_kernels(&[w]) && w.dtype() == xs.dtype()) {
        return Ok(super::kernels::rms_norm(xs, None, weight, eps)?.0);
    }
    if let Some(w) = weight.filter(|w| super::cpu_fused::takes(&[xs, w]) && xs.is_contiguous()) {
        return super::cpu_fused::rms_norm(xs, w, eps);
    }
    rms_norm_reference(xs, weight, eps)
}

/// `(xs + residual, rms_norm(xs + residual))`.
pub fn add_rms_norm(xs: &Tensor, residual: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs, residual])
        && residual.dtype() == xs.dtype()
        && residual.dims() == xs.dims()
        && weight.is_none_or(|w| super::on_kernels(&[w]) && w.dtype() == xs.dtype())
    {
        let (normed, sum) = super::kernels::rms_norm(xs, Some(residual), weight, eps)?;
        return Ok((sum.expect("the kernel returns the sum it was asked for"), normed));
    }
    let sum = (xs + residual)?;
    let normed = rms_norm(&sum, weight, eps)?;
    Ok((sum, normed))
}

/// The CPU twin of the RMSNorm kernel.
pub fn rms_norm_reference(xs: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?;
    let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xs.broadcast_div(&(variance + eps)?.sqrt()?)?.to_dtype(dtype)?;
    match weight {
        Some(w) => normed.broadcast_mul(w),
        None => Ok(normed),
    }
}

/// LayerNorm over the last dimension with a learned scale and shift (PyTorch's `nn.LayerNorm`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    /// candle's fused layer norm has no backward pass: tensors that carry a gradient take the
    /// same arithmetic in plain ops.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.is_contiguous() && !xs.track_op() && !self.weight.track_op() {
            return candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps as f32);
        }
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let centered = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered
            .broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}
