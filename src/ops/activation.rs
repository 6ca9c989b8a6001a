//! Fused activations: SiLU-and-mul (SwiGLU), relu² (nanochat's MLP), logit soft-capping.

use candle_core::{Module, Result, Tensor};
use candle_nn::Activation;

/// `act(gate) * up`, fused when the activation is SiLU (the checkpoints').
pub fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Silu => silu_and_mul(gate, up),
        act => act.forward(gate)? * up,
    }
}

/// `silu(gate) * up`.
pub fn silu_and_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[gate, up]) && gate.dtype() == up.dtype() && gate.dims() == up.dims() {
        return super::kernels::silu_and_mul(gate, up);
    }
    if super::cpu_fused::takes(&[gate, up]) && gate.dims() == up.dims() && gate.is_contiguous() && up.is_contiguous() {
        return super::cpu_fused::silu_and_mul(gate, up);
    }
    silu_and_mul_reference(gate, up)
}

/// The CPU twin of the SiLU-and-mul kernel.
pub fn silu_and_mul_reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// `relu(x)²`.
pub fn relu_squared(xs: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs]) {
        return super::kernels::relu_squared(xs);
    }
    relu_squared_reference(xs)
}

/// The CPU twin of the relu² kernel.
pub fn relu_squared_reference(xs: &Tensor) -> Result<Tensor> {
    xs.relu()?.sqr()
}

/// `cap · tanh(x / cap)`.
pub fn softcap(xs: &Tensor, cap: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[xs]) {
        return super::kernels::softcap(xs, cap as f32);
    }
    softcap_reference(xs, cap)
}

/// The CPU twin of the soft-capping kernel.
pub fn softcap_reference(xs: &Tensor, cap: f64) -> Result<Tensor> {
    (xs / cap)?.tanh()? * cap
}

/// Softmax over the last dimension. candle's fused op has no backward pass, so a tensor that
/// carries a gradient takes the same arithmetic in plain ops (max-shifted, as the fused one).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if super::softmax::takes(xs) {
        return super::softmax::softmax_last_dim(xs);
    }
    if !xs.track_op() {
        return candle_nn::ops::softmax_last_dim(xs);
    }
    let max = xs.max_keepdim(candle_core::D::Minus1)?.detach();
    let exp = xs.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(candle_core::D::Minus1)?)
}
