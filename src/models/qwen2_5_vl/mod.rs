//! Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`), the architecture of RolmOCR.
//!
//! - vision tower: ViT with 2D rotary, window/full attention, patch merger ([`vision`])
//! - language model: Qwen2 decoder with GQA and M-RoPE ([`text`])
//! - image tokens: the merged patch embeddings replace the `<|image_pad|>` rows of the prompt
//!
//! Reference: transformers' `models/qwen2_5_vl/modeling_qwen2_5_vl.py`. Weights load by the
//! reference's names; checkpoints that nest them as `model.language_model.*` /
//! `model.visual.*` (transformers 5 exports) are mapped to the classic `model.*` / `visual.*`.

pub mod config;
pub mod processor;
pub mod text;
pub mod vision;

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::DynamicImage;
use tokenizers::Tokenizer;

use crate::chat_template::ChatTemplate;
use crate::hub::ModelFiles;
use crate::models::{ModelInfo, Positions, PreparedImage, PreparedPrompt, VisionLanguageModel};
use crate::ops::attention::AttentionCache;
pub use config::Config;
use processor::ImageProcessorConfig;

/// Qwen2-VL's chat template, for checkpoints that carry none.
pub const DEFAULT_CHAT_TEMPLATE: &str = include_str!("../../../models/rolmocr/chat_template.jinja");

pub struct Model {
    pub config: Config,
    pub image_processor: ImageProcessorConfig,
    pub tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    info: ModelInfo,
    visual: vision::VisionModel,
    text: text::TextModel,
    device: Device,
    dtype: DType,
}

/// Maps the classic tensor names the code asks for to the names this checkpoint uses.
fn checkpoint_renamer(names: &BTreeSet<String>) -> impl Fn(&str) -> String + Send + Sync + 'static {
    let nested_text = names.iter().any(|n| n.starts_with("model.language_model."));
    let nested_visual = names.iter().any(|n| n.starts_with("model.visual."));
    move |name: &str| {
        if let Some(rest) = name.strip_prefix("visual.") {
            if nested_visual {
                return format!("model.visual.{rest}");
            }
        } else if let Some(rest) = name.strip_prefix("model.") {
            if nested_text {
                return format!("model.language_model.{rest}");
            }
        }
        name.to_string()
    }
}

impl Model {
    pub fn load(files: &ModelFiles, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = files.path("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
        let root = serde_json::from_str(&config_text)
            .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
        Self::load_with_config(files, root, dtype, device)
    }

    /// As [`Model::load`], with config.json already parsed (by whoever read the architecture).
    pub fn load_with_config(
        files: &ModelFiles,
        root: serde_json::Value,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config_path = files.path("config.json");
        let config = Config::from_value(root).with_context(|| format!("in {}", config_path.display()))?;
        Self::load_config(files, config, dtype, device)
    }

    /// As [`Model::load`], with the configuration already read (Qwen2-VL's, say).
    pub fn load_config(files: &ModelFiles, config: Config, dtype: DType, device: &Device) -> Result<Self> {
        let image_processor = match files.optional("preprocessor_config.json") {
            Some(path) => ImageProcessorConfig::from_json(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("in {}", path.display()))?,
            None => ImageProcessorConfig::default(),
        };
        let tokenizer_path = files.path("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", tokenizer_path.display()))?;
        let chat_template = ChatTemplate::for_model(files, DEFAULT_CHAT_TEMPLATE)?;
        let stop_token_ids = stop_tokens(files, &config, &tokenizer)?;

        let weights = files.weights()?;
        let renamer = checkpoint_renamer(&weights.names().map(String::from).collect());
        let vb = weights.into_var_builder(dtype, device).rename_f(renamer);
        Self::from_parts(config, vb, image_processor, tokenizer, chat_template, stop_token_ids)
            .with_context(|| format!("loading the weights of {}", files.dir.display()))
    }

    fn from_parts(
        config: Config,
        vb: VarBuilder,
        image_processor: ImageProcessorConfig,
        tokenizer: Tokenizer,
        chat_template: ChatTemplate,
        stop_token_ids: Vec<u32>,
    ) -> Result<Self> {
        if config.vision.out_hidden_size != config.text.hidden_size {
            bail!(
                "vision out_hidden_size {} differs from the text hidden_size {}",
                config.vision.out_hidden_size,
                config.text.hidden_size
            );
        }
        let visual = vision::VisionModel::new(&config.vision, config.vision.rope_theta(), vb.pp("visual"))?;
        let text = text::TextModel::new(&config.text, vb.clone())?;
        let info = ModelInfo {
            architecture: config.architecture,
            num_layers: config.text.num_hidden_layers,
            num_kv_heads: config.text.num_key_value_heads,
            head_dim: config.text.head_dim(),
            vocab_size: config.text.vocab_size,
            stop_token_ids,
            image_token_id: config.image_token_id,
            masked_token_ids: Vec::new(),
            default_instruction: crate::ROLMOCR_PROMPT,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        };
        Ok(Self {
            device: vb.device().clone(),
            dtype: vb.dtype(),
            config,
            image_processor,
            tokenizer,
            chat_template,
            info,
            visual,
            text,
        })
    }

    /// The image bounds FinePDFs ran RolmOCR with (56 to 2048 merged tokens a page).
    pub fn with_finepdfs_bounds(mut self) -> Self {
        self.image_processor = self.image_processor.with_finepdfs_bounds();
        self
    }

    pub fn num_layers(&self) -> usize {
        self.text.num_layers()
    }

    /// Chat-templated prompt with the image first, tokenised, placeholders expanded.
    fn prepare_prompt(&self, image: &DynamicImage, instruction: &str) -> Result<PreparedPrompt> {
        let processed = self.image_processor.preprocess(image, &self.device)?;
        let text = self.chat_template.render_image_prompt(instruction)?;
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
        let image_token = self.config.image_token_id;
        let n_image = self.image_processor.num_image_tokens(processed.grid_thw);
        let mut input_ids = Vec::with_capacity(encoding.len() + n_image);
        let mut placeholders = 0;
        for &id in encoding.get_ids() {
            if id == image_token {
                placeholders += 1;
                input_ids.extend(std::iter::repeat_n(id, n_image));
            } else {
                input_ids.push(id);
            }
        }
        if placeholders != 1 {
            bail!("the chat template produced {placeholders} image placeholders (token id {image_token}); expected 1");
        }
        let (positions, rope_delta) = processor::mrope_positions(
            &input_ids,
            image_token,
            &[processed.grid_thw],
            self.image_processor.merge_size,
        )?;
        let image_start = input_ids
            .iter()
            .position(|&t| t == image_token)
            .expect("one placeholder was expanded");
        Ok(PreparedPrompt {
            input_ids,
            image: PreparedImage {
                pixel_values: processed.pixel_values,
                grid_thw: processed.grid_thw,
                hash: processed.hash,
                num_tokens: n_image,
            },
            image_start,
            positions: Positions::Mrope(positions),
            rope_delta,
        })
    }

    /// The vision tower over the patch rows of one or more images: one row per merged token.
    pub fn encode_patches(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        Ok(self.visual.forward(&pixel_values.to_dtype(self.dtype)?, grids)?)
    }
}

impl VisionLanguageModel for Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn prepare(&self, image: &DynamicImage, instruction: &str) -> Result<PreparedPrompt> {
        self.prepare_prompt(image, instruction)
    }

    fn encode_images(&self, images: &[&PreparedImage]) -> Result<Vec<Tensor>> {
        let pixels: Vec<&Tensor> = images.iter().map(|i| &i.pixel_values).collect();
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let all = self.encode_patches(&Tensor::cat(&pixels, 0)?, &grids)?;
        let mut offset = 0;
        images
            .iter()
            .map(|i| {
                let rows = all.narrow(0, offset, i.num_tokens)?;
                offset += i.num_tokens;
                Ok(rows)
            })
            .collect()
    }

    fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.text.embed(&Tensor::new(ids, &self.device)?)?)
    }

    fn forward(
        &self,
        embeds: &Tensor,
        positions: &Positions,
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor> {
        let Positions::Mrope(positions) = positions else {
            bail!("Qwen2.5-VL rotates by M-RoPE positions, not 1D ones");
        };
        Ok(self.text.forward(embeds, positions, cache, logit_rows)?)
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// generation_config.json's end tokens, then config.json's, then the tokenizer's eos_token.
fn stop_tokens(files: &ModelFiles, config: &Config, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    if let Some(gen) = files.read_json("generation_config.json")? {
        if let Some(v) = gen.get("eos_token_id").filter(|v| !v.is_null()) {
            let parsed: config::TokenIds =
                serde_json::from_value(v.clone()).context("generation_config.json eos_token_id")?;
            ids.extend(parsed.into_vec());
        }
    }
    ids.extend(&config.eos_token_ids);
    if ids.is_empty() {
        if let Some(tc) = files.read_json("tokenizer_config.json")? {
            let eos = tc
                .get("eos_token")
                .and_then(|e| e.as_str().or_else(|| e.get("content")?.as_str()));
            ids.extend(eos.and_then(|t| tokenizer.token_to_id(t)));
        }
    }
    let mut seen = BTreeSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_checkpoint_names_map_to_classic_ones() {
        let names: BTreeSet<String> = [
            "model.language_model.embed_tokens.weight",
            "model.visual.merger.ln_q.weight",
            "lm_head.weight",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let f = checkpoint_renamer(&names);
        assert_eq!(
            f("model.layers.0.mlp.up_proj.weight"),
            "model.language_model.layers.0.mlp.up_proj.weight"
        );
        assert_eq!(
            f("visual.blocks.3.attn.qkv.bias"),
            "model.visual.blocks.3.attn.qkv.bias"
        );
        assert_eq!(f("lm_head.weight"), "lm_head.weight");
        let classic: BTreeSet<String> = ["model.embed_tokens.weight".to_string()].into();
        assert_eq!(
            checkpoint_renamer(&classic)("visual.merger.mlp.0.weight"),
            "visual.merger.mlp.0.weight"
        );
    }
}
