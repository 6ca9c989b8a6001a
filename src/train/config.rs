//! What a training run is asked to do: data, output, stage, optimizer, schedule, evaluation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::optim::{AdamWConfig, Schedule};
use crate::models::lora::LoraConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    /// The vision-tokenizer model's stage: 1 trains everything, 2 freezes SAM.
    pub stage: u8,
    /// The image path takes no gradient: Qwen2.5-VL's tower and merger, the vision-tokenizer
    /// model's SAM, CLIP and projector.
    pub freeze_vision: bool,
    /// Keep only each decoder layer's input and recompute the layer in the backward pass.
    pub gradient_checkpointing: bool,
    /// f32 master weights with the linear layers computing in bf16 (`torch.autocast`).
    #[serde(default)]
    pub autocast_bf16: bool,
    /// Train fresh LoRA adapters of this shape (and nothing else) on a Qwen model.
    pub lora: Option<LoraConfig>,
    /// `final/` holds the model with the adapters merged, not the adapter directory.
    pub merge_lora: bool,
    pub steps: usize,
    /// Samples per micro-batch (the whole step's samples are `batch_size × grad_accum`).
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Token budget of a micro-batch (sequence tokens + each image's encoder cost).
    pub batch_tokens: Option<usize>,
    pub lr: f64,
    /// The vision encoder's learning rate as a fraction of `lr` (the projector's and the
    /// language model's).
    pub vision_lr_scale: f64,
    pub schedule: Schedule,
    pub adamw: AdamWConfig,
    /// Global gradient-norm limit (≤ 0: none).
    pub grad_clip: f64,
    pub seq_len: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Write `step_N/` every this many steps (0: only `final/`).
    pub save_every: usize,
    /// Validation loss every this many steps (0: never).
    pub eval_every: usize,
    /// Stop after this many evaluations without a better validation loss.
    pub patience: Option<usize>,
    /// Stop after the first step that ends this long after the run began, evaluating and
    /// saving as at the last step.
    pub max_time: Option<std::time::Duration>,
    /// Validation images generated through the engine at each evaluation (CER/WER).
    pub eval_generate: usize,
    /// Fraction of steps that train on text alone (Stage 2), from `text_data`.
    pub text_ratio: f64,
    pub text_data: Option<PathBuf>,
    pub log_json: Option<PathBuf>,
}

impl TrainConfig {
    /// Stage 1 as the fork's `vis_tok_train.py` runs it (lr 5e-5, warmup 10 then cosine to 0,
    /// AdamW without weight decay, clip 1.0, batch 10, sequences of 4,096), for `steps` steps.
    pub fn new(data: PathBuf, out: PathBuf, steps: usize) -> Self {
        Self {
            data,
            out,
            stage: 1,
            freeze_vision: false,
            gradient_checkpointing: false,
            autocast_bf16: false,
            lora: None,
            merge_lora: false,
            steps,
            batch_size: 10,
            grad_accum: 1,
            batch_tokens: None,
            lr: 5e-5,
            vision_lr_scale: 1.0,
            schedule: Schedule::Cosine { warmup: 10, steps },
            adamw: AdamWConfig::default(),
            grad_clip: 1.0,
            seq_len: 4096,
            seed: 0,
            shuffle: true,
            save_every: 0,
            eval_every: 50,
            patience: None,
            max_time: None,
            eval_generate: 0,
            text_ratio: 0.0,
            text_data: None,
            log_json: None,
        }
    }
}
