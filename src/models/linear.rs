//! The models' linear layers: the weights in the model's dtype or, in the CPU fast modes,
//! quantised to int8 ([`crate::ops::int8`]) or rounded to bf16 ([`crate::ops::bf16_linear`]); an
//! unmerged LoRA adapter on top when the store has one ([`super::lora`]). Inside an [`crate::ops::autocast`] scope a dense layer computes in
//! the scope's dtype.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::bf16_linear::Bf16Linear;
use crate::ops::int8::Int8Linear;

/// Faster, less exact arithmetic for the linear layers, for serving on the CPU: activations stay
/// f32 between layers; each layer's weights are a converted copy, not the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quantization {
    /// 7-bit weights and activations with integer products (AVX2, AVX-512 VNNI or AMX). The
    /// README's Performance section gives its accuracy.
    Int8,
    /// Weights and each layer's input rounded to bf16, products summed in f32 (`vdpbf16ps`:
    /// CPUs with AVX-512 BF16), as a bf16 matmul rounds them; the rest of the model in f32.
    Bf16,
}

impl Quantization {
    /// As the command line and the errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Quantization::Int8 => "int8",
            Quantization::Bf16 => "bf16",
        }
    }

    /// Whether this CPU runs the mode's kernels.
    pub fn supported(self) -> bool {
        match self {
            Quantization::Int8 => crate::ops::int8::supported(),
            Quantization::Bf16 => crate::ops::bf16_linear::supported(),
        }
    }

    /// What the CPU lacks when it does not run the mode.
    pub fn needs(self) -> &'static str {
        match self {
            Quantization::Int8 => "AVX2 and FMA",
            Quantization::Bf16 => "AVX-512 BF16 (Intel Cooper Lake / Sapphire Rapids, AMD Zen 4 and later)",
        }
    }
}

/// How a model builds its linear layers (set at load, not read from config.json).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinearConfig {
    /// α/r of the LoRA adapters the model's store holds (none: no adapters are read).
    pub lora_scale: Option<f64>,
    /// Weights converted for a CPU fast mode (serving only: no gradient reaches the input).
    pub quantization: Option<Quantization>,
}

#[derive(Debug, Clone)]
enum Base {
    Dense(candle_nn::Linear),
    Int8(Arc<Int8Linear>),
    Bf16(Arc<Bf16Linear>),
}

/// A linear layer with an optional adapter.
#[derive(Debug, Clone)]
pub struct Linear {
    base: Base,
    adapter: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    /// `linear` as it is, or converted for `quantization`.
    pub fn new(linear: candle_nn::Linear, quantization: Option<Quantization>) -> candle_core::Result<Self> {
        let base = match quantization {
            None => Base::Dense(linear),
            Some(Quantization::Int8) => Base::Int8(Arc::new(Int8Linear::new(linear.weight(), linear.bias())?)),
            Some(Quantization::Bf16) => Base::Bf16(Arc::new(Bf16Linear::new(linear.weight(), linear.bias())?)),
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
            (Base::Bf16(linear), _) => linear.forward(xs)?,
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
        ..Linear::new(candle_nn::linear_b(in_dim, out_dim, bias, vb)?, config.quantization)?
    })
}
