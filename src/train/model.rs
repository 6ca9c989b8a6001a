//! What the trainer asks of a model: its parameter store and a view of it that tracks
//! gradients, training sequences from samples, the loss, and how a checkpoint is written. The
//! vision-tokenizer model and Qwen2.5-VL both answer it with their serving code.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use image::DynamicImage;

use super::data::{self, Encoder, Sample};
use super::TrainConfig;
use crate::models::{deepseek_ocr, lora, qwen2_5_vl, VisionLanguageModel};
use crate::weights::ParamStore;

/// Which parameters (by checkpoint name) take no gradient.
pub type Frozen = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub trait Trainable: VisionLanguageModel + Sized + 'static {
    type Example;

    fn params(&self) -> &ParamStore;
    /// Whether a parameter (by checkpoint name) belongs to the vision encoder: not the
    /// projector that adapts its features to the language model, nor the language model.
    fn is_encoder(name: &str) -> bool;
    /// The parameters `config` freezes (`--stage 2`, `--freeze vision`), or an error naming the
    /// option this model does not have.
    fn frozen(&self, config: &TrainConfig) -> Result<Frozen>;
    /// The same model over the same store, tracking gradients but for `frozen`.
    fn training_view(&self, frozen: Frozen) -> Result<Self>;
    /// A sample as a training sequence of at most `seq_len` inputs, and the tokens cut off.
    fn example(&self, sample: &Sample, image: &DynamicImage, seq_len: usize) -> Result<(Self::Example, usize)>;
    /// A text-only sequence (Stage 2's text steps).
    fn text_example(&self, text: &str, seq_len: usize) -> Result<Self::Example>;
    /// What an example costs a micro-batch's token budget.
    fn cost(&self, example: &Self::Example) -> usize;
    fn targets(example: &Self::Example) -> usize;
    fn loss_sum(&self, examples: &[&Self::Example]) -> Result<(Tensor, usize)>;
    /// [`Trainable::backward`] recomputing layers rather than keeping them.
    fn backward_checkpointed(
        &self,
        examples: &[&Self::Example],
        scale: f64,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64>;
    /// Backpropagates `scale` × the loss sum, handing each backward pass's gradients to `sink`;
    /// returns the unscaled loss sum. `checkpointed`: recompute layers rather than keep them.
    fn backward(
        &self,
        examples: &[&Self::Example],
        scale: f64,
        checkpointed: bool,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64> {
        if checkpointed {
            return self.backward_checkpointed(examples, scale, sink);
        }
        backward_whole(self, examples, scale, sink)
    }
    /// Writes a model directory `ocr run` loads: config, weights, tokenizer and the rest (a
    /// model with LoRA adapters: the adapter directory, or with `merged` the merged model).
    fn write_model(&self, dir: &Path, merged: bool) -> Result<()>;
}

/// One backward pass over the whole graph of the loss.
fn backward_whole<M: Trainable>(
    model: &M,
    examples: &[&M::Example],
    scale: f64,
    mut sink: impl FnMut(GradStore) -> Result<()>,
) -> Result<f64> {
    let (sum, _) = model.loss_sum(examples)?;
    let value = sum.to_scalar::<f32>()? as f64;
    sink((sum * scale)?.backward()?)?;
    Ok(value)
}

impl Trainable for deepseek_ocr::Model {
    type Example = deepseek_ocr::Example;

    fn params(&self) -> &ParamStore {
        deepseek_ocr::Model::params(self)
    }

    fn is_encoder(name: &str) -> bool {
        name.starts_with("sam_model.") || name.starts_with("vision_model.")
    }

    fn frozen(&self, config: &TrainConfig) -> Result<Frozen> {
        if config.lora.is_some() || config.merge_lora {
            bail!("--lora is for Qwen2-VL / Qwen2.5-VL models");
        }
        let (stage, vision) = (config.stage, config.freeze_vision);
        Ok(Arc::new(move |name: &str| {
            (stage == 2 || vision) && name.starts_with("sam_model.")
                || vision && (name.starts_with("vision_model.") || name.starts_with("projector."))
        }))
    }

    fn training_view(&self, frozen: Frozen) -> Result<Self> {
        deepseek_ocr::Model::training_view(self, move |n| frozen(n))
    }

    fn example(&self, sample: &Sample, image: &DynamicImage, seq_len: usize) -> Result<(Self::Example, usize)> {
        Encoder::new(self)?.example_from(sample, image, seq_len)
    }

    fn text_example(&self, text: &str, seq_len: usize) -> Result<Self::Example> {
        let bos = self
            .tokenizer
            .token_to_id("<|bos|>")
            .context("the tokenizer has no <|bos|>")?;
        let mut ids = vec![bos];
        ids.extend(Encoder::new(self)?.tokenize("", text, usize::MAX)?.input_ids);
        ids.truncate(seq_len + 1);
        Ok(deepseek_ocr::Example {
            input_ids: ids[..ids.len() - 1].to_vec(),
            targets: ids[1..].iter().map(|&t| t as i64).collect(),
            pixels: None,
        })
    }

    fn cost(&self, example: &Self::Example) -> usize {
        example.input_ids.len()
            + if example.pixels.is_some() {
                data::image_cost(self.config.base_size)
            } else {
                0
            }
    }

    fn targets(example: &Self::Example) -> usize {
        example.targets.iter().filter(|&&t| t >= 0).count()
    }

    fn loss_sum(&self, examples: &[&Self::Example]) -> Result<(Tensor, usize)> {
        deepseek_ocr::Model::loss_sum(self, examples)
    }

    fn backward_checkpointed(
        &self,
        examples: &[&Self::Example],
        scale: f64,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64> {
        deepseek_ocr::Model::backward_checkpointed(self, examples, scale, sink)
    }

    fn write_model(&self, dir: &Path, _: bool) -> Result<()> {
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&self.config)?)?;
        self.params().save(&dir.join("model.safetensors"))?;
        self.tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))
    }
}

impl Trainable for qwen2_5_vl::Model {
    type Example = qwen2_5_vl::training::Example;

    fn params(&self) -> &ParamStore {
        qwen2_5_vl::Model::params(self)
    }

    fn is_encoder(name: &str) -> bool {
        (name.starts_with("visual.") || name.contains(".visual.")) && !name.contains("visual.merger.")
    }

    fn frozen(&self, config: &TrainConfig) -> Result<Frozen> {
        if config.stage != 1 {
            bail!("--stage is the vision-tokenizer model's; a Qwen2.5-VL model freezes its tower with --freeze vision");
        }
        if config.text_ratio > 0.0 {
            bail!("--text-ratio (text-only steps) is the vision-tokenizer model's Stage 2 option");
        }
        let vision = config.freeze_vision;
        let adapters_only = self.lora().is_some();
        // Classic (`visual.*`) and transformers-5 (`model.visual.*`) checkpoint names.
        Ok(Arc::new(move |name: &str| {
            (adapters_only && !lora::is_adapter(name))
                || (vision && (name.starts_with("visual.") || name.starts_with("model.visual.")))
        }))
    }

    fn training_view(&self, frozen: Frozen) -> Result<Self> {
        qwen2_5_vl::Model::training_view(self, move |n| frozen(n))
    }

    fn example(&self, sample: &Sample, image: &DynamicImage, seq_len: usize) -> Result<(Self::Example, usize)> {
        self.training_example(image, &sample.instruction(), &sample.answer, seq_len)
    }

    fn text_example(&self, _: &str, _: usize) -> Result<Self::Example> {
        bail!("text-only steps are the vision-tokenizer model's")
    }

    fn cost(&self, example: &Self::Example) -> usize {
        // The tower's patch rows (4× the merged image tokens) weigh as much as sequence rows.
        example.input_ids.len() + example.grid_thw.iter().product::<usize>()
    }

    fn targets(example: &Self::Example) -> usize {
        example.targets.iter().filter(|&&t| t >= 0).count()
    }

    fn loss_sum(&self, examples: &[&Self::Example]) -> Result<(Tensor, usize)> {
        qwen2_5_vl::Model::loss_sum(self, examples)
    }

    fn backward_checkpointed(
        &self,
        examples: &[&Self::Example],
        scale: f64,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64> {
        qwen2_5_vl::Model::backward_checkpointed(self, examples, scale, sink)
    }

    fn write_model(&self, dir: &Path, merged: bool) -> Result<()> {
        self.write(dir, merged)
    }
}
