//! The models' linear layers: the weights in the model's dtype or, in the CPU fast mode,
//! quantised to int8 ([`crate::ops::int8`]); an unmerged LoRA adapter on top when the store has
//! one ([`super::lora`]). Inside an [`crate::ops::autocast`] scope a dense layer computes in
//! the scope's dtype.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::int8::Int8Linear;

/// How a model builds its linear layers (set at load, not read from config.json).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinearConfig {
    /// α/r of the LoRA adapters the model's store holds (none: no adapters are read).
    pub lora_scale: Option<f64>,
    /// Weights quantised to int8 (serving on AVX2 CPUs and up; no gradient reaches the input).
    pub int8: bool,
}

#[derive(Debug, Clone)]
enum Base {
    Dense(candle_nn::Linear),
    Int8(Arc<Int8Linear>),
}

/// A linear layer with an optional adapter.
#[derive(Debug, Clone)]
pub struct Linear {
    base: Base,
    adapter: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    /// `linear` as it is, or quantised when `int8`.
    pub fn new(linear: candle_nn::Linear, int8: bool) -> candle_core::Result<Self> {
        let base = if int8 {
            Base::Int8(Arc::new(Int8Linear::new(linear.weight(), linear.bias())?))
        } else {
            Base::Dense(linear)
        };
        Ok(Self { base, adapter: None })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let out = match (&self.base, crate::ops::autocast::dtype()) {
            (Base::Dense(linear), Some(dtype)) if dtype != xs.dtype() => {
                let cast = |t: &Tensor| t.to_dtype(dtype);
                let rounded = candle_nn::Linear::new(cast(linear.weight())?, linear.bias().map(cast).transpose()?);
                rounded.forward(&cast(xs)?)?.to_dtype(xs.dtype())?
            }
            (Base::Dense(linear), _) => crate::ops::skinny::linear(linear, xs)?,
            (Base::Int8(linear), _) => linear.forward(xs)?,
        };
        match &self.adapter {
            Some((a, b, scale)) => out + (xs.matmul(&a.t()?)?.matmul(&b.t()?)? * *scale)?,
            None => Ok(out),
        }
    }
}

/// `candle_nn::linear_b` built as `config` says, with the adapter the store holds for this
/// module when the model carries adapters.
pub fn linear_b(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    vb: VarBuilder,
    config: LinearConfig,
) -> candle_core::Result<Linear> {
    let adapter = match config.lora_scale {
        Some(scale) if vb.contains_tensor("lora_A.weight") => Some((
            vb.pp("lora_A").get_unchecked("weight")?,
            vb.pp("lora_B").get_unchecked("weight")?,
            scale,
        )),
        _ => None,
    };
    Ok(Linear {
        adapter,
        ..Linear::new(candle_nn::linear_b(in_dim, out_dim, bias, vb)?, config.int8)?
    })
}
