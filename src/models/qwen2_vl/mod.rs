//! Qwen2-VL (`Qwen2VLForConditionalGeneration`), the architecture of olmOCR-7B-0225-preview.
//!
//! Qwen2.5-VL grew out of it and differs only in the vision tower, so the model is
//! [`super::qwen2_5_vl::Model`] with Qwen2-VL's tower ([`Tower::Qwen2`]: LayerNorm, fc1 → QuickGELU →
//! fc2, full attention in every block, a LayerNorm in the merger). The text decoder, M-RoPE, the
//! image processor, the chat template and weight loading are shared. What is Qwen2-VL's own is
//! its config.json layout, read here: the tower's width is `embed_dim` and its MLP width
//! `embed_dim × mlp_ratio`, while `vision_config.hidden_size` is the text width the merger
//! projects to.
//!
//! Reference: transformers' `models/qwen2_vl/modeling_qwen2_vl.py` and
//! `configuration_qwen2_vl.py`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::Deserialize;
use serde_json::Value;

use super::qwen2_5_vl::config::{Config, Tower, ARCHITECTURE as QWEN2_5_VL};
use super::qwen2_5_vl::Model;
use crate::hub::ModelFiles;

pub const ARCHITECTURE: &str = "Qwen2VLForConditionalGeneration";

/// `Qwen2VLVisionConfig`, every field defaulting to the class's default (Qwen2-VL-7B's tower).
#[derive(Debug, Deserialize)]
struct VisionConfig {
    #[serde(default = "depth")]
    depth: usize,
    #[serde(default = "embed_dim")]
    embed_dim: usize,
    /// The text model's width: what the merger projects to.
    #[serde(default = "text_width")]
    hidden_size: usize,
    #[serde(default = "mlp_ratio")]
    mlp_ratio: f64,
    #[serde(default = "num_heads")]
    num_heads: usize,
    in_chans: Option<usize>,
    in_channels: Option<usize>,
    #[serde(default = "patch_size")]
    patch_size: usize,
    #[serde(default = "merge")]
    spatial_merge_size: usize,
    #[serde(default = "temporal")]
    temporal_patch_size: usize,
    #[serde(default = "act")]
    hidden_act: String,
    rope_parameters: Option<Value>,
}

fn depth() -> usize {
    32
}
fn embed_dim() -> usize {
    1280
}
fn text_width() -> usize {
    3584
}
fn mlp_ratio() -> f64 {
    4.0
}
fn num_heads() -> usize {
    16
}
fn patch_size() -> usize {
    14
}
fn merge() -> usize {
    2
}
fn temporal() -> usize {
    2
}
fn act() -> String {
    "quick_gelu".into()
}

/// Reads a Qwen2-VL config.json (transformers 4.x and 5.x layouts) into the shared [`Config`].
pub fn config_from_value(mut root: Value) -> Result<Config> {
    let arch = root
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .unwrap_or(ARCHITECTURE);
    if arch != ARCHITECTURE {
        bail!("config.json describes {arch}, not {ARCHITECTURE}");
    }
    let raw: VisionConfig = serde_json::from_value(
        root.get("vision_config")
            .cloned()
            .context("config.json has no vision_config")?,
    )
    .context("vision_config")?;
    let in_chans = match (raw.in_chans, raw.in_channels) {
        (Some(a), Some(b)) if a != b => bail!("vision_config: in_chans = {a} but in_channels = {b}"),
        (a, b) => a.or(b).unwrap_or(3),
    };
    if raw.hidden_act != "quick_gelu" {
        bail!(
            "vision_config.hidden_act {:?}: Qwen2-VL's tower is built with quick_gelu",
            raw.hidden_act
        );
    }
    // The same tower in Qwen2.5-VL's terms: no windows (every block attends to its whole image).
    let mut vision = serde_json::json!({
        "depth": raw.depth,
        "hidden_size": raw.embed_dim,
        "intermediate_size": (raw.embed_dim as f64 * raw.mlp_ratio) as usize,
        "num_heads": raw.num_heads,
        "in_chans": in_chans,
        "patch_size": raw.patch_size,
        "spatial_merge_size": raw.spatial_merge_size,
        "temporal_patch_size": raw.temporal_patch_size,
        "fullatt_block_indexes": (0..raw.depth).collect::<Vec<_>>(),
        "out_hidden_size": raw.hidden_size,
    });
    if let Some(rope) = raw.rope_parameters {
        vision["rope_parameters"] = rope;
    }
    root["vision_config"] = vision;
    root["architectures"] = serde_json::json!([QWEN2_5_VL]);
    if let Some(map) = root.as_object_mut() {
        map.remove("model_type");
    }
    let mut config = Config::from_value(root)?;
    config.architecture = ARCHITECTURE;
    config.vision.tower = Tower::Qwen2;
    Ok(config)
}

pub fn load(files: &ModelFiles, root: Value, dtype: DType, device: &Device) -> Result<Model> {
    let config_path = files.path("config.json");
    let config = config_from_value(root).with_context(|| format!("in {}", config_path.display()))?;
    Model::load_config(files, config, dtype, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// olmOCR-7B-0225-preview's config.json as transformers 4.x wrote it (abridged to what is read).
    const OLMOCR_V1: &str = r#"{"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "image_token_id": 151655,
        "vision_start_token_id": 151652, "eos_token_id": 151645,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
        "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}}"#;

    #[test]
    fn reads_the_tower_in_its_own_terms() {
        let c = config_from_value(serde_json::from_str(OLMOCR_V1).unwrap()).unwrap();
        assert_eq!(c.architecture, ARCHITECTURE);
        assert_eq!(c.vision.tower, Tower::Qwen2);
        assert_eq!((c.vision.hidden_size, c.vision.intermediate_size), (1280, 5120));
        assert_eq!(c.vision.out_hidden_size, 3584);
        assert_eq!(c.vision.fullatt_block_indexes.len(), 32);
        assert_eq!(c.text.mrope_section, vec![16, 24, 24]);
        let rolm = OLMOCR_V1.replace("Qwen2VLForConditionalGeneration", QWEN2_5_VL);
        assert!(config_from_value(serde_json::from_str(&rolm).unwrap()).is_err());
    }
}
