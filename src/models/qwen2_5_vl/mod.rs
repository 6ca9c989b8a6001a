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
pub mod training;
pub mod vision;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::DynamicImage;
use tokenizers::Tokenizer;

use crate::chat_template::ChatTemplate;
use crate::hub::ModelFiles;
use crate::models::linear::Quantization;
use crate::models::lora::{self, LoraConfig};
use crate::models::{ModelInfo, Positions, PreparedImage, PreparedPrompt, VisionLanguageModel};
use crate::ops::attention::AttentionCache;
use crate::weights::ParamStore;
pub use config::Config;
use processor::ImageProcessorConfig;

/// Qwen2-VL's chat template, for checkpoints that carry none.
pub const DEFAULT_CHAT_TEMPLATE: &str = include_str!("../../../models/rolmocr/chat_template.jinja");

pub struct Model {
    pub config: Config,
    /// The parameters, shared with every other view of this model (a trainer's included).
    params: ParamStore,
    /// config.json, the tokenizer's and processor's files, the chat template: what a checkpoint
    /// of this model copies beside its weights.
    side_files: Vec<PathBuf>,
    /// The LoRA adapters its store holds beside the weights.
    lora: Option<LoraConfig>,
    pub image_processor: ImageProcessorConfig,
    pub tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    info: ModelInfo,
    visual: vision::VisionModel,
    text: text::TextModel,
    device: Device,
    dtype: DType,
}

/// What a model is made of besides its weights.
struct Parts {
    config: Config,
    image_processor: ImageProcessorConfig,
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
    stop_token_ids: Vec<u32>,
    side_files: Vec<PathBuf>,
    lora: Option<LoraConfig>,
}

/// A view of `params` that answers the classic tensor names under the checkpoint's own.
fn view(params: &ParamStore, vb: VarBuilder<'static>) -> VarBuilder<'static> {
    vb.rename_f(checkpoint_renamer(&params.vars().keys().cloned().collect()))
}

/// A module's classic name from transformers ≥ 4.52's nested one (`model.language_model.*`,
/// `model.visual.*`); classic names pass through.
fn classic_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        name.to_string()
    }
}

/// A classic module name as transformers ≥ 4.52 nests it (what peft writes with it).
fn peft_name(classic: &str) -> String {
    if let Some(rest) = classic.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if let Some(rest) = classic.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        classic.to_string()
    }
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

        let params = ParamStore::load(&files.weights()?, dtype, device)
            .with_context(|| format!("loading the weights of {}", files.dir.display()))?;
        let side_files = std::fs::read_dir(&files.dir)
            .with_context(|| format!("listing {}", files.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.is_file() && !name.contains(".safetensors") && (name.ends_with(".json") || name.ends_with(".jinja"))
            })
            .collect();
        let parts = Parts {
            config,
            image_processor,
            tokenizer,
            chat_template,
            stop_token_ids,
            side_files,
            lora: None,
        };
        let vb = view(&params, params.serving(dtype, device));
        Self::from_parts(parts, params, vb).with_context(|| format!("loading the weights of {}", files.dir.display()))
    }

    /// The same model over the same parameter storage, its tensors tracking gradients, except
    /// those whose (checkpoint) names `frozen` accepts: nothing upstream of a frozen tensor is
    /// differentiated, so a frozen tower costs no backward pass.
    pub fn training_view(&self, frozen: impl Fn(&str) -> bool + Send + Sync + 'static) -> Result<Self> {
        self.dense("training")?;
        let vb = view(&self.params, self.params.training(self.dtype, &self.device, frozen));
        Self::from_parts(self.parts(), self.params.clone(), vb)
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Copies the model's side files (config, tokenizer, processor, template) into `dir`.
    pub fn write_side_files(&self, dir: &std::path::Path) -> Result<()> {
        for path in &self.side_files {
            let name = path.file_name().expect("listed files have names");
            std::fs::copy(path, dir.join(name)).with_context(|| format!("copying {}", path.display()))?;
        }
        Ok(())
    }

    fn parts(&self) -> Parts {
        Parts {
            config: self.config.clone(),
            image_processor: self.image_processor.clone(),
            tokenizer: self.tokenizer.clone(),
            chat_template: self.chat_template.clone(),
            stop_token_ids: self.info.stop_token_ids.clone(),
            side_files: self.side_files.clone(),
            lora: self.lora.clone(),
        }
    }

    /// The LoRA adapters the model carries, if any.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// This model with `adapters` (store names, [`lora::fresh`] or [`Model::read_adapter`])
    /// beside its weights: a new store sharing the weights' storage.
    pub fn with_lora(&self, config: LoraConfig, adapters: BTreeMap<String, Tensor>) -> Result<Self> {
        self.dense("adding adapters")?;
        let params = self.params.extended(adapters)?;
        let mut parts = self.parts();
        parts.lora = Some(config);
        let vb = view(&params, params.serving(self.dtype, &self.device));
        Self::from_parts(parts, params, vb)
    }

    /// Fresh adapters for this model's target weights (peft's initialisation, seeded).
    pub fn fresh_adapters(&self, config: &LoraConfig, seed: u64) -> Result<BTreeMap<String, Tensor>> {
        self.dense("making adapters")?;
        let shapes = self
            .params
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect();
        lora::fresh(config, &shapes, seed, &self.device)
    }

    /// A peft adapter directory's tensors under this model's store names.
    pub fn read_adapter(&self, dir: &Path) -> Result<BTreeMap<String, Tensor>> {
        self.dense("reading adapters")?;
        let renamer = checkpoint_renamer(&self.params.vars().keys().cloned().collect());
        let adapters = lora::read(dir, |module| renamer(&classic_name(module)), &self.device)?;
        for name in adapters.keys() {
            let base = format!(
                "{}.weight",
                name.rsplit_once(".lora_").map_or(name.as_str(), |(m, _)| m)
            );
            if !self.params.vars().contains_key(&base) {
                bail!(
                    "{}: the adapter {name} adapts {base}, which the model does not have",
                    dir.display()
                );
            }
        }
        Ok(adapters)
    }

    /// Writes the model as `ocr run` loads it: with adapters, the adapter directory alone
    /// (`merged`: the weights with the adapters folded in, a plain model directory).
    pub fn write(&self, dir: &Path, merged: bool) -> Result<()> {
        self.dense("writing the model")?;
        let tensors: BTreeMap<String, Tensor> = self
            .params
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        match (&self.lora, merged) {
            (Some(config), false) => {
                let adapters = tensors.into_iter().filter(|(n, _)| lora::is_adapter(n)).collect();
                lora::write(dir, config, &adapters, |module| peft_name(&classic_name(module)))
            }
            (lora, _) => {
                self.write_side_files(dir)?;
                let tensors = match lora {
                    Some(config) => lora::merged(&tensors, config.scale())?,
                    None => tensors,
                };
                candle_core::safetensors::save(&tensors.into_iter().collect(), dir.join("model.safetensors"))
                    .with_context(|| format!("writing {}", dir.join("model.safetensors").display()))
            }
        }
    }

    fn from_parts(parts: Parts, params: ParamStore, vb: VarBuilder) -> Result<Self> {
        let Parts {
            mut config,
            image_processor,
            tokenizer,
            chat_template,
            stop_token_ids,
            side_files,
            lora,
        } = parts;
        let scale = lora.as_ref().map(LoraConfig::scale);
        (config.text.linear.lora_scale, config.vision.linear.lora_scale) = (scale, scale);
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
            params,
            side_files,
            lora,
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

    /// The same model with its linear layers (decoder, LM head, tower, merger) converted for a
    /// CPU fast mode ([`crate::ops::int8`], [`crate::ops::bf16_linear`]); embeddings, norms and
    /// attention stay in f32. It keeps no parameter store: dropping `self` frees the f32 linear
    /// weights.
    pub fn quantized(&self, quantization: Quantization) -> Result<Self> {
        self.dense("quantizing")?;
        let mut parts = self.parts();
        parts.config.text.linear.quantization = Some(quantization);
        parts.config.vision.linear.quantization = Some(quantization);
        let vb = view(&self.params, self.params.serving(self.dtype, &self.device));
        let mut model = Self::from_parts(parts, self.params.clone(), vb)?;
        // The layers hold what they still read (norms, embeddings, the patch embedding, the
        // converted copies); with an empty store the f32 weights go with the model they came from.
        model.params = ParamStore::from_tensors(BTreeMap::new())?;
        Ok(model)
    }

    /// What needs the parameter store (training, adapters, writing) needs the f32 model.
    fn dense(&self, what: &str) -> Result<()> {
        if let Some(q) = self.config.text.linear.quantization {
            bail!(
                "{what}: a {} model holds its converted layers only; use the f32 model it came from",
                q.name()
            );
        }
        Ok(())
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
