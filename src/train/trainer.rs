//! The training loop: draw a step's samples, run the model's own code forward and backward in
//! micro-batches under a token budget, clip, AdamW, then evaluate and checkpoint on schedule.
//! The model is a training view over the store the engine serves from; each optimizer step
//! writes the shared tensors in place, between engine steps, never during one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::checkpoint::{self, TrainerState};
use super::config::TrainConfig;
use super::data::{Cursor, Dataset, Order};
use super::eval::{self, Images};
use super::log::{EvalLog, EvalSample, StepLog};
use super::model::Trainable;
use super::optim::{clip_grad_norm, AdamW};
use crate::engine::Engine;
use crate::models::VisionLanguageModel;
use crate::ops::autocast;

pub struct Trainer<M: Trainable> {
    pub config: TrainConfig,
    /// The model the engine serves (views without gradients over the same store).
    serving: Arc<M>,
    model: M,
    opt: AdamW,
    train: Dataset,
    val: Option<Dataset>,
    texts: Vec<String>,
    order: Order,
    pub state: TrainerState,
    engine: Option<Engine>,
    log: Option<std::fs::File>,
}

impl<M: Trainable> Trainer<M> {
    /// A trainer over `serving`'s parameters. With `resume`, the optimizer and data position
    /// continue from that checkpoint (whose weights `serving` must have been loaded from).
    pub fn new(serving: Arc<M>, config: TrainConfig, resume: Option<(&Path, TrainerState)>) -> Result<Self> {
        if serving.info().dtype != DType::F32 {
            bail!(
                "training runs in f32 (the model was loaded as {:?}); bf16 compute with f32 master weights is not built yet",
                serving.info().dtype
            );
        }
        if config.stage != 1 && config.stage != 2 {
            bail!("--stage is 1 or 2, not {}", config.stage);
        }
        if config.batch_size == 0 || config.grad_accum == 0 || config.steps == 0 {
            bail!("--batch-size, --grad-accum and --steps must be positive");
        }
        let train = Dataset::open(&config.data, "train")?;
        // No val.json: no evaluation; a val.json that does not load is an error, not a silence.
        let val = match config.data.join("val.json").exists() {
            true => Some(Dataset::open(&config.data, "val")?),
            false => None,
        };
        let texts = match (&config.text_data, config.text_ratio > 0.0) {
            (Some(path), true) => read_texts(path)?,
            (None, true) => bail!("--text-ratio needs --text-data (a JSONL file of {{\"text\"}} lines)"),
            _ => Vec::new(),
        };
        let is_frozen = serving.frozen(&config)?;
        let model = serving.training_view(is_frozen.clone())?;
        let used = serving.params().requested();
        let params: Vec<_> = serving
            .params()
            .vars()
            .iter()
            .filter(|(name, var)| used.contains(*name) && !is_frozen(name) && var.dtype().is_float())
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut opt = AdamW::new(params, config.adamw)?;
        let encoder = config.vision_lr_scale;
        opt.set_lr_scales(|name| if M::is_encoder(name) { encoder } else { 1.0 });
        let mut state = TrainerState {
            step: 0,
            cursor: Cursor::default(),
            best_val_loss: None,
            evals_without_improvement: 0,
            truncated_samples: 0,
        };
        if let Some((dir, saved)) = resume {
            let moments = checkpoint::load_moments(dir, &serving.info().device)?;
            opt.load_state(saved.step as u64, |name| {
                moments
                    .get(name)
                    .cloned()
                    .with_context(|| format!("{} lacks {name}", dir.display()))
            })?;
            state = saved;
        }
        let order = Order::new(train.len(), config.shuffle, config.seed, state.cursor);
        let log = match &config.log_json {
            Some(path) => Some(open_log(path, state.step)?),
            None => None,
        };
        std::fs::create_dir_all(&config.out).with_context(|| format!("creating {}", config.out.display()))?;
        Ok(Self {
            config,
            serving,
            model,
            opt,
            train,
            val,
            texts,
            order,
            state,
            engine: None,
            log,
        })
    }

    pub fn trainable_parameters(&self) -> usize {
        self.opt.params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.config.steps
    }

    /// Whether step `step` trains on text alone: a draw that depends only on (seed, step).
    fn text_step(&self, step: usize) -> bool {
        self.config.text_ratio > 0.0
            && rand::rngs::StdRng::seed_from_u64(self.config.seed.wrapping_add(0x7E57 ^ step as u64)).random::<f64>()
                < self.config.text_ratio
    }

    fn examples(&mut self, step: usize) -> Result<Vec<M::Example>> {
        let n = self.config.batch_size * self.config.grad_accum;
        if self.text_step(step) {
            return (0..n)
                .map(|i| {
                    let text = &self.texts[(step * n + i) % self.texts.len()];
                    self.serving.text_example(text, self.config.seq_len)
                })
                .collect();
        }
        let picks = self.order.next(n)?;
        picks
            .into_iter()
            .map(|i| {
                let (ex, truncated) = self.example(&self.train, i)?;
                if truncated > 0 {
                    self.state.truncated_samples += 1;
                    tracing::warn!(sample = %self.train.samples[i].id, truncated, "sample cut at the sequence length");
                }
                Ok(ex)
            })
            .collect()
    }

    /// Sample `i` of `data` as a training sequence; one longer than the micro-batch budget
    /// alone is cut to fit it.
    fn example(&self, data: &Dataset, i: usize) -> Result<(M::Example, usize)> {
        let sample = &data.samples[i];
        let image = data.image(i)?;
        let make = |seq_len| {
            self.serving
                .example(sample, &image, seq_len)
                .with_context(|| format!("sample {i} ({})", sample.id))
        };
        let (ex, truncated) = make(self.config.seq_len)?;
        match self.config.batch_tokens {
            Some(budget) if self.serving.cost(&ex) > budget => {
                let over = self.serving.cost(&ex) - budget;
                make(self.config.seq_len.saturating_sub(over).max(1))
            }
            _ => Ok((ex, truncated)),
        }
    }

    /// One optimizer step.
    pub fn step(&mut self) -> Result<StepLog> {
        let step = self.state.step;
        let lr = self.config.schedule.lr(self.config.lr, step);
        let examples = {
            let _span = tracing::debug_span!("load_batch").entered();
            self.examples(step)?
        };
        let tokens: usize = examples.iter().map(M::targets).sum();
        if tokens == 0 {
            bail!("step {step}: no target tokens (every answer cut off by the sequence length?)");
        }
        let costs: Vec<usize> = examples.iter().map(|e| self.serving.cost(e)).collect();
        // One gradient per parameter, summed over micro-batches and backward passes. Only these
        // are kept: candle's backward also returns the gradient of every intermediate tensor,
        // which would hold a second copy of the activations until the store is dropped.
        let mut grads: Vec<Option<Tensor>> = vec![None; self.opt.params().len()];
        let mut loss = 0f64;
        for range in super::data::micro_batches(&costs, self.config.batch_size, self.config.batch_tokens) {
            let batch: Vec<&M::Example> = examples[range].iter().collect();
            let _span = tracing::debug_span!("forward_backward", samples = batch.len()).entered();
            let params = self.opt.params();
            // Each micro-batch's share of the step's mean: its sum over the step's token count.
            let sum = autocast::scope(self.autocast(), || {
                self.model.backward(
                    &batch,
                    1.0 / tokens as f64,
                    self.config.gradient_checkpointing,
                    |mut store| {
                        for ((_, var), acc) in params.iter().zip(grads.iter_mut()) {
                            if let Some(g) = store.remove(var.as_tensor()) {
                                *acc = Some(match acc.take() {
                                    Some(old) => (old + g)?,
                                    None => g,
                                });
                            }
                        }
                        Ok(())
                    },
                )
            })?;
            loss += sum / tokens as f64;
        }
        let grad_norm = clip_grad_norm(&mut grads, self.config.grad_clip)?;
        if !grad_norm.is_finite() || !loss.is_finite() {
            bail!("step {step}: the loss ({loss}) or gradient norm ({grad_norm}) is not finite");
        }
        {
            let _span = tracing::debug_span!("optimizer").entered();
            self.opt.step(&grads, lr)?;
        }
        self.serving.params().bump_version();
        self.state.step += 1;
        self.state.cursor = self.order.cursor;
        let entry = StepLog {
            step,
            loss,
            lr,
            grad_norm,
            tokens,
        };
        if let Some(f) = &mut self.log {
            writeln!(f, "{}", serde_json::to_string(&entry)?)?;
            f.flush()?;
        }
        Ok(entry)
    }

    /// Mean cross-entropy over the validation split's targets (the serving view: no graph).
    pub fn val_loss(&self) -> Result<Option<f64>> {
        let Some(val) = &self.val else { return Ok(None) };
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in (0..val.len()).collect::<Vec<_>>().chunks(self.config.batch_size) {
            let examples = chunk
                .iter()
                .map(|&i| Ok(self.example(val, i)?.0))
                .collect::<Result<Vec<_>>>()?;
            let (s, n) = autocast::scope(self.autocast(), || {
                self.serving.loss_sum(&examples.iter().collect::<Vec<_>>())
            })?;
            sum += s.to_scalar::<f32>()? as f64;
            count += n;
        }
        Ok((count > 0).then(|| sum / count as f64))
    }

    /// Validation loss, and with `eval_generate` > 0 generations through the engine on the live
    /// weights; keeps `best/` and counts evaluations without improvement.
    /// The dtype the linear layers compute in during forward and backward passes.
    fn autocast(&self) -> Option<DType> {
        self.config.autocast_bf16.then_some(DType::BF16)
    }

    pub fn evaluate(&mut self) -> Result<Option<EvalLog>> {
        let Some(val_loss) = self.val_loss()? else {
            return Ok(None);
        };
        let samples = self.generate_samples()?;
        let (cer, wer) = eval::means(&samples);
        if self.state.best_val_loss.is_none_or(|b| val_loss < b) {
            self.state.best_val_loss = Some(val_loss);
            self.state.evals_without_improvement = 0;
            checkpoint::save(&self.config.out, "best", self.serving.as_ref(), None, false)?;
        } else {
            self.state.evals_without_improvement += 1;
        }
        Ok(Some(EvalLog {
            step: self.state.step,
            val_loss,
            samples,
            cer,
            wer,
        }))
    }

    fn generate_samples(&mut self) -> Result<Vec<EvalSample>> {
        let Some(val) = &self.val else { return Ok(Vec::new()) };
        let k = self.config.eval_generate.min(val.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let max_new_tokens = self.config.seq_len.min(1024);
        let prompts = eval::prompts(self.serving.as_ref(), val, k, Images::Real)?;
        if self.engine.is_none() {
            let model: Arc<dyn VisionLanguageModel> = self.serving.clone();
            self.engine = Some(eval::engine_for(model, &prompts, max_new_tokens)?);
        }
        eval::generate(self.engine.as_ref().expect("just made"), val, prompts, max_new_tokens)
    }

    /// `step_N/` with the optimizer state, for `--resume`.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.config.out,
            &format!("step_{}", self.state.step),
            self.serving.as_ref(),
            Some((&self.state, self.opt.state())),
            false,
        )
    }

    pub fn save_final(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.config.out,
            "final",
            self.serving.as_ref(),
            None,
            self.config.merge_lora,
        )
    }

    /// Whether patience has run out.
    pub fn should_stop_early(&self) -> bool {
        self.config
            .patience
            .is_some_and(|p| self.state.evals_without_improvement >= p)
    }
}

fn read_texts(path: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Line {
        text: String,
    }
    let body = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let texts = body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Ok(serde_json::from_str::<Line>(l)
                .with_context(|| format!("{} line {}: not {{\"text\": ...}}", path.display(), i + 1))?
                .text)
        })
        .collect::<Result<Vec<_>>>()?;
    if texts.is_empty() {
        bail!("{} has no text lines", path.display());
    }
    Ok(texts)
}

/// The step log, cut to the steps before `step` (a resumed run rewrites what came after).
fn open_log(path: &Path, step: usize) -> Result<std::fs::File> {
    let kept: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<StepLog>(l).is_ok_and(|e| e.step < step))
        .map(str::to_string)
        .collect();
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for line in kept {
        writeln!(f, "{line}")?;
    }
    Ok(f)
}
