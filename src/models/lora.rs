//! LoRA adapters as peft defines them: a target linear layer computes
//! `x Wᵀ + b + (α/r)·(x Aᵀ) Bᵀ` with A (r, in) and B (out, r); a module is a target when the last
//! component of its name is in `target_modules` (so `gate_proj` adapts the vision tower's MLPs
//! as well as the decoder's, as in peft).
//!
//! The adapters live in the model's parameter store beside the weights they adapt, under
//! `<module>.lora_A.weight` / `<module>.lora_B.weight` (the module's checkpoint name); a layer
//! picks its adapter up when the store has one, so serving an unmerged adapter and training one
//! run the same code (`super::linear::Linear`). On disk they are peft's `adapter_config.json` and
//! `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PEFT_PREFIX: &str = "base_model.model.";

/// The fields of peft's `LoraConfig` that change the arithmetic (the rest are written as
/// peft's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    /// The model the adapter was trained on: a directory or a hub id.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Whether the module named `module` (a weight's name without `.weight`) is a target.
    pub fn targets(&self, module: &str) -> bool {
        let last = module.rsplit('.').next().unwrap_or(module);
        self.target_modules.iter().any(|t| t == last)
    }

    /// Reads `adapter_config.json`, refusing what vellum does not compute.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        if raw["peft_type"].as_str().is_some_and(|t| t != "LORA") {
            bail!("{}: peft_type {} is not LORA", path.display(), raw["peft_type"]);
        }
        for flag in ["use_dora", "use_rslora", "fan_in_fan_out"] {
            if raw[flag].as_bool() == Some(true) {
                bail!("{}: {flag} adapters are not supported", path.display());
            }
        }
        if raw["bias"].as_str().is_some_and(|b| b != "none") {
            bail!(
                "{}: adapters with trained biases (bias {}) are not supported",
                path.display(),
                raw["bias"]
            );
        }
        if raw["rank_pattern"].as_object().is_some_and(|m| !m.is_empty())
            || raw["alpha_pattern"].as_object().is_some_and(|m| !m.is_empty())
        {
            bail!("{}: per-module ranks or alphas are not supported", path.display());
        }
        serde_json::from_value(raw).with_context(|| format!("{} is not a LoRA adapter config", path.display()))
    }

    /// The base model's directory: as written, else relative to the adapter's directory.
    pub fn base_model(&self, adapter_dir: &Path) -> Result<String> {
        let base = self.base_model_name_or_path.as_deref().with_context(|| {
            format!(
                "{} names no base_model_name_or_path",
                adapter_dir.join(CONFIG_FILE).display()
            )
        })?;
        let relative = adapter_dir.join(base);
        Ok(if !Path::new(base).exists() && relative.exists() {
            relative.display().to_string()
        } else {
            base.to_string()
        })
    }
}

/// An adapter tensor's name in the store → the module it adapts and which half it is.
fn split(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".weight")?;
    let (module, half) = stem.rsplit_once('.')?;
    matches!(half, "lora_A" | "lora_B").then_some((module, half))
}

pub fn is_adapter(name: &str) -> bool {
    split(name).is_some()
}

/// Fresh adapters for every target weight among `weights` (name → shape), as peft initialises
/// them: A from kaiming_uniform(a=√5), i.e. U(−1/√in, 1/√in), B zero.
pub fn fresh(
    config: &LoraConfig,
    weights: &BTreeMap<String, Vec<usize>>,
    seed: u64,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for (name, shape) in weights {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        if shape.len() != 2 || !config.targets(module) {
            continue;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let bound = 1.0 / (cols as f64).sqrt();
        let a: Vec<f32> = (0..config.r * cols)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        out.insert(
            format!("{module}.lora_A.weight"),
            Tensor::from_vec(a, (config.r, cols), device)?,
        );
        out.insert(
            format!("{module}.lora_B.weight"),
            Tensor::zeros((rows, config.r), DType::F32, device)?,
        );
    }
    if out.is_empty() {
        bail!(
            "no weight of the model is a LoRA target ({})",
            config.target_modules.join(", ")
        );
    }
    Ok(out)
}

/// An adapter directory's tensors under the store's names: `to_store` maps peft's module path
/// (after `base_model.model.`) to the store's name of that module.
pub fn read(dir: &Path, to_store: impl Fn(&str) -> String, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let path = dir.join(WEIGHTS_FILE);
    let tensors =
        candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let stem = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name);
            // peft in memory names the adapter ("lora_A.default.weight"); on disk it does not.
            let stem = stem.replace(".default.weight", ".weight");
            let Some((module, half)) = split(&stem) else {
                bail!("{}: {name} is not a LoRA tensor", path.display());
            };
            Ok((format!("{}.{half}.weight", to_store(module)), t.to_dtype(DType::F32)?))
        })
        .collect()
}

/// Writes `adapters` (store names) as a peft adapter directory; `to_peft` maps the store's
/// module name to peft's module path.
pub fn write(
    dir: &Path,
    config: &LoraConfig,
    adapters: &BTreeMap<String, Tensor>,
    to_peft: impl Fn(&str) -> String,
) -> Result<()> {
    let mut tensors = std::collections::HashMap::new();
    for (name, t) in adapters {
        let (module, half) = split(name).with_context(|| format!("{name} is not a LoRA tensor"))?;
        tensors.insert(format!("{PEFT_PREFIX}{}.{half}.weight", to_peft(module)), t.detach());
    }
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))?;
    let peft = serde_json::json!({
        "peft_type": "LORA",
        "task_type": null,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": true,
        "base_model_name_or_path": config.base_model_name_or_path,
    });
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string_pretty(&peft)?)?;
    Ok(())
}

/// `W + scale · B A` for every adapted weight of `params` (store names, adapters included):
/// peft's `merge_and_unload`, the adapters dropped.
pub fn merged(params: &BTreeMap<String, Tensor>, scale: f64) -> Result<BTreeMap<String, Tensor>> {
    params
        .iter()
        .filter(|(name, _)| !is_adapter(name))
        .map(|(name, w)| {
            let module = name.strip_suffix(".weight").unwrap_or(name);
            let w = match (
                params.get(&format!("{module}.lora_A.weight")),
                params.get(&format!("{module}.lora_B.weight")),
            ) {
                (Some(a), Some(b)) => (w + (b.matmul(a)? * scale)?.to_dtype(w.dtype())?)?,
                _ => w.clone(),
            };
            Ok((name.clone(), w))
        })
        .collect()
}

/// Where a model directory's adapter is: the directory itself when it holds one.
pub fn adapter_dir(dir: &Path) -> Option<PathBuf> {
    dir.join(CONFIG_FILE).is_file().then(|| dir.to_path_buf())
}
