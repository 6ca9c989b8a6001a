//! Qwen2.5-VL's config.json, in both layouts the hub carries.
//!
//! transformers 4.x writes the text model's fields at the top level with
//! `rope_scaling: {type: mrope, mrope_section}`; 5.x nests them under `text_config` with
//! `rope_parameters` (holding `mrope_section` and `rope_theta`). Both parse to [`Config`].

use anyhow::{bail, Context, Result};
use candle_nn::Activation;
use serde::Deserialize;
use serde_json::Value;

use crate::models::linear::LinearConfig;

/// `Qwen2_5_VLVisionConfig`. Every field defaults to the class's default, because transformers
/// 4.45–4.49 saved only the fields that differ from it (a 7B checkpoint's vision_config can be
/// `{"hidden_size": 1280}` alone).
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "default_depth")]
    pub depth: usize,
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_vision_heads")]
    pub num_heads: usize,
    #[serde(alias = "in_channels", default = "default_in_chans")]
    pub in_chans: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
    #[serde(default = "default_spatial_merge_size")]
    pub spatial_merge_size: usize,
    #[serde(default = "default_window_size")]
    pub window_size: usize,
    #[serde(default = "default_fullatt")]
    pub fullatt_block_indexes: Vec<usize>,
    #[serde(default = "default_vision_hidden")]
    pub out_hidden_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    /// transformers ≥ 5.24 writes the tower's rotary base here.
    #[serde(default)]
    rope_parameters: Option<RawRope>,
    /// Which generation of the tower this is; Qwen2-VL's configs are read by
    /// [`crate::models::qwen2_vl`].
    #[serde(skip)]
    pub tower: Tower,
    /// How the linear layers are built (adapters, int8).
    #[serde(skip)]
    pub linear: LinearConfig,
}

/// Qwen2-VL's tower (LayerNorm, fc1 → QuickGELU → fc2, full attention in every block, a
/// LayerNorm in the merger) or Qwen2.5-VL's (RMSNorm, gated MLP, windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tower {
    Qwen2,
    #[default]
    Qwen25,
}

impl VisionConfig {
    /// The 2D rotary base, when config.json names one (else the model's default, 10,000).
    pub fn rope_theta(&self) -> Option<f64> {
        self.rope_parameters.as_ref().and_then(|r| r.rope_theta)
    }
}

fn default_depth() -> usize {
    32
}
fn default_vision_hidden() -> usize {
    3584
}
fn default_vision_intermediate() -> usize {
    3420
}
fn default_vision_heads() -> usize {
    16
}
fn default_patch_size() -> usize {
    14
}
fn default_window_size() -> usize {
    112
}
fn default_fullatt() -> Vec<usize> {
    vec![7, 15, 23, 31]
}

fn default_act() -> Activation {
    Activation::Silu
}

fn default_in_chans() -> usize {
    3
}
fn default_temporal_patch_size() -> usize {
    2
}
fn default_spatial_merge_size() -> usize {
    2
}

#[derive(Debug, Clone)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// How the rotary frequencies are split across the (t, h, w) axes; sums to head_dim / 2.
    pub mrope_section: Vec<usize>,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    /// How the linear layers are built (adapters, int8).
    pub linear: LinearConfig,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The architecture name Qwen2.5-VL checkpoints carry.
pub const ARCHITECTURE: &str = "Qwen2_5_VLForConditionalGeneration";

#[derive(Debug, Clone)]
pub struct Config {
    /// `architectures[0]`: this model's, or Qwen2-VL's.
    pub architecture: &'static str,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    /// End tokens named by config.json (generation_config.json may add more).
    pub eos_token_ids: Vec<u32>,
}

/// The text fields as either layout spells them; every field optional so the two can be merged.
#[derive(Debug, Default, Deserialize)]
struct RawText {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<Activation>,
    eos_token_id: Option<TokenIds>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRope {
    mrope_section: Option<Vec<usize>>,
    rope_theta: Option<f64>,
}

/// `eos_token_id` is one id or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

impl Config {
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(serde_json::from_str(text).context("config.json is not valid JSON")?)
    }

    pub fn from_value(root: Value) -> Result<Self> {
        let arch = root
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arch.is_empty() && arch != ARCHITECTURE {
            bail!("config.json describes {arch}, not {ARCHITECTURE}");
        }
        // Files saved without `architectures` still name their model type.
        match root.get("model_type").and_then(Value::as_str) {
            None => {}
            Some(t) if t.starts_with("qwen2_5_vl") => {}
            Some(other) => bail!("config.json describes a {other} model, not qwen2_5_vl (Qwen2.5-VL)"),
        }
        let top: RawText = serde_json::from_value(root.clone())?;
        let nested: RawText = match root.get("text_config") {
            Some(v) => serde_json::from_value(v.clone()).context("text_config")?,
            None => RawText::default(),
        };
        let rope = |r: &RawText| {
            [&r.rope_parameters, &r.rope_scaling]
                .into_iter()
                .flatten()
                .find_map(|p| p.mrope_section.clone())
        };
        let rope_theta = |r: &RawText| {
            r.rope_theta
                .or_else(|| r.rope_parameters.as_ref().and_then(|p| p.rope_theta))
        };
        macro_rules! field {
            ($name:ident) => {
                nested
                    .$name
                    .or(top.$name)
                    .with_context(|| format!("config.json has no {}", stringify!($name)))?
            };
        }
        let num_attention_heads = field!(num_attention_heads);
        let text = TextConfig {
            vocab_size: field!(vocab_size),
            hidden_size: field!(hidden_size),
            intermediate_size: field!(intermediate_size),
            num_hidden_layers: field!(num_hidden_layers),
            num_attention_heads,
            num_key_value_heads: nested
                .num_key_value_heads
                .or(top.num_key_value_heads)
                .unwrap_or(num_attention_heads),
            rms_norm_eps: nested.rms_norm_eps.or(top.rms_norm_eps).unwrap_or(1e-6),
            rope_theta: rope_theta(&nested).or(rope_theta(&top)).unwrap_or(1_000_000.0),
            mrope_section: rope(&nested)
                .or(rope(&top))
                .context("config.json has no mrope_section (rope_scaling or rope_parameters)")?,
            tie_word_embeddings: top.tie_word_embeddings.or(nested.tie_word_embeddings).unwrap_or(false),
            max_position_embeddings: nested
                .max_position_embeddings
                .or(top.max_position_embeddings)
                .unwrap_or(128_000),
            hidden_act: nested.hidden_act.or(top.hidden_act).unwrap_or(Activation::Silu),
            linear: LinearConfig::default(),
        };
        if text.mrope_section.iter().sum::<usize>() * 2 != text.head_dim() {
            bail!(
                "mrope_section {:?} does not cover head_dim {} (its sum must be head_dim/2)",
                text.mrope_section,
                text.head_dim()
            );
        }
        let mut vision = root
            .get("vision_config")
            .cloned()
            .context("config.json has no vision_config")?;
        fold_aliases(&mut vision, "vision_config", &[("in_chans", "in_channels")])?;
        let vision: VisionConfig = serde_json::from_value(vision).context("vision_config")?;
        let id = |name: &str| -> Result<u32> {
            root.get(name)
                .or_else(|| root.get("text_config").and_then(|t| t.get(name)))
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .with_context(|| format!("config.json has no {name}"))
        };
        Ok(Config {
            architecture: ARCHITECTURE,
            image_token_id: id("image_token_id")?,
            eos_token_ids: top
                .eos_token_id
                .or(nested.eos_token_id)
                .map(TokenIds::into_vec)
                .unwrap_or_default(),
            text,
            vision,
        })
    }
}

/// transformers ≥ 4.50 writes some fields under both names (`in_chans` and `in_channels`),
/// which serde's `alias` rejects as a duplicate: keep the first name, after checking that the
/// two agree.
fn fold_aliases(section: &mut Value, what: &str, pairs: &[(&str, &str)]) -> Result<()> {
    let Some(map) = section.as_object_mut() else {
        bail!("{what} is not an object");
    };
    for &(name, alias) in pairs {
        if let (Some(a), Some(b)) = (map.get(name), map.get(alias)) {
            if a != b {
                bail!("{what}: {name} = {a} but {alias} = {b}");
            }
            map.remove(alias);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISION: &str = r#""vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420,
        "num_heads": 16, "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "out_hidden_size": 3584, "hidden_act": "silu"}"#;

    fn check_rolmocr(c: &Config) {
        assert_eq!(c.text.hidden_size, 3584);
        assert_eq!(c.text.num_hidden_layers, 28);
        assert_eq!(c.text.num_key_value_heads, 4);
        assert_eq!(c.text.head_dim(), 128);
        assert_eq!(c.text.mrope_section, vec![16, 24, 24]);
        assert_eq!(c.text.rope_theta, 1e6);
        assert_eq!(c.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(c.image_token_id, 151655);
    }

    #[test]
    fn parses_transformers_4_layout() {
        let json = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "vocab_size": 152064,
            "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "rope_scaling": {{"type": "mrope", "mrope_section": [16, 24, 24]}},
            "tie_word_embeddings": false, "image_token_id": 151655, "vision_start_token_id": 151652,
            "eos_token_id": 151645, {VISION}}}"#
        );
        let c = Config::from_json(&json).unwrap();
        check_rolmocr(&c);
        assert_eq!(c.eos_token_ids, vec![151645]);
    }

    #[test]
    fn parses_transformers_5_layout() {
        let json = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "image_token_id": 151655,
            "vision_start_token_id": 151652, "tie_word_embeddings": false,
            "text_config": {{"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
            "rms_norm_eps": 1e-06, "eos_token_id": [151645, 151643],
            "rope_parameters": {{"rope_type": "default", "mrope_section": [16, 24, 24],
            "rope_theta": 1000000.0}}}}, {VISION}}}"#
        );
        let c = Config::from_json(&json).unwrap();
        check_rolmocr(&c);
        assert_eq!(c.eos_token_ids, vec![151645, 151643]);
    }

    #[test]
    fn accepts_aliases_side_by_side() {
        let json = format!(
            r#"{{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "vocab_size": 152064,
            "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "rope_scaling": {{"type": "mrope", "mrope_section": [16, 24, 24]}},
            "image_token_id": 151655, "vision_start_token_id": 151652, {}}}"#,
            VISION.replace(r#""in_chans": 3,"#, r#""in_chans": 3, "in_channels": 3,"#)
        );
        check_rolmocr(&Config::from_json(&json).unwrap());
        let clash = json.replace(r#""in_channels": 3"#, r#""in_channels": 4"#);
        let err = Config::from_json(&clash).unwrap_err();
        assert!(format!("{err:#}").contains("in_channels = 4"), "{err:#}");
    }

    #[test]
    fn rejects_other_architectures() {
        let err = Config::from_json(r#"{"architectures": ["LlamaForCausalLM"]}"#).unwrap_err();
        assert!(err.to_string().contains("LlamaForCausalLM"), "{err}");
    }
}
