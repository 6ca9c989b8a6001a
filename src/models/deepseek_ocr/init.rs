//! Fresh weights for a new model, as the fork initialises what it does not load: nanochat's
//! GPT init (`GPT.init_weights`: linear weights N(0, 1/√fan_in · min(1, √(fan_out/fan_in))),
//! embeddings N(0, 1), lm_head and every c_proj zero), the encoders' linear and conv weights
//! N(0, 1/√fan_in) with zero biases, norms at identity, position tables N(0, 0.02), relative
//! positions zero, the image newline and separator N(0, 1/√n_embd) (`NanoDeepseekOCR.__init__`).

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use tokenizers::Tokenizer;

use super::{Config, Model};
use crate::weights::ParamStore;

pub(crate) fn normal(shape: &[usize], std: f64, rng: &mut rand::rngs::StdRng, device: &Device) -> Result<Tensor> {
    let dist = Normal::new(0.0, std)?;
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| dist.sample(rng) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// U(−bound, bound): PyTorch's default init of `nn.Linear` and `nn.Conv2d` weights and biases
/// (`kaiming_uniform_(a=√5)` gives bound = 1/√fan_in), which the fork's pretrained start keeps
/// for the layers it does not load.
pub(crate) fn uniform(shape: &[usize], bound: f64, rng: &mut rand::rngs::StdRng, device: &Device) -> Result<Tensor> {
    let dist = rand_distr::Uniform::new(-bound, bound)?;
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| dist.sample(rng) as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Every parameter of `config`'s model, by checkpoint name, freshly initialised from `seed`.
pub fn fresh(config: &Config, seed: u64, device: &Device) -> Result<ParamStore> {
    // The names and shapes: whatever the model code asks for.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let placeholder = ParamStore::from_tensors(BTreeMap::new())?;
    Model::new(
        config.clone(),
        Tokenizer::new(tokenizers::models::bpe::BPE::default()),
        placeholder,
        vb,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    let mut shapes: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .expect("the var map is never poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    drop(varmap);
    shapes.sort();
    for (name, dims) in shapes {
        let zeros = || Tensor::zeros(dims.as_slice(), DType::F32, device);
        let ones = || Tensor::ones(dims.as_slice(), DType::F32, device);
        let value = if name.ends_with("lm_head.weight") || name.ends_with("c_proj.weight") && name.starts_with("gpt.") {
            zeros()?
        } else if name == "gpt.transformer.wte.weight" {
            normal(&dims, 1.0, &mut rng, device)?
        } else if name.starts_with("gpt.") {
            let (fan_out, fan_in) = (dims[0] as f64, dims[1] as f64);
            normal(
                &dims,
                1.0 / fan_in.sqrt() * (fan_out / fan_in).sqrt().min(1.0),
                &mut rng,
                device,
            )?
        } else if name.contains("rel_pos") || name.ends_with(".bias") {
            zeros()?
        } else if name.contains("norm") && name.ends_with(".weight")
            || name.contains("layrnorm.weight")
            || name.starts_with("sam_model.neck.1")
            || name.starts_with("sam_model.neck.3")
        {
            ones()?
        } else if name.contains("pos_embed") || name.contains("position_embedding") || name.contains("class_embedding")
        {
            normal(&dims, 0.02, &mut rng, device)?
        } else if name == "image_newline" || name == "view_separator" {
            normal(&dims, 1.0 / (config.gpt.n_embd as f64).sqrt(), &mut rng, device)?
        } else {
            let fan_in: usize = dims[1..].iter().product();
            normal(&dims, 1.0 / (fan_in.max(1) as f64).sqrt(), &mut rng, device)?
        };
        out.insert(name, value);
    }
    ParamStore::from_tensors(out)
}
