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
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainerState};
use super::data::{Cursor, Dataset, Order};
use super::eval::{self, Images};
use super::log::{EvalLog, EvalSample, StepLog};
use super::model::Trainable;
use super::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use super::report::History;
use crate::engine::Engine;
use crate::models::lora::{self, LoraConfig};
use crate::models::{deepseek_ocr, qwen2_5_vl, qwen2_vl, VisionLanguageModel};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    /// The vision-tokenizer model's stage: 1 trains everything, 2 freezes SAM.
    pub stage: u8,
    /// Qwen2.5-VL: the vision tower and merger take no gradient.
    pub freeze_vision: bool,
    /// Keep only each decoder layer's input and recompute the layer in the backward pass.
    pub gradient_checkpointing: bool,
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
        if config.vision_lr_scale != 1.0 {
            let scale = config.vision_lr_scale;
            opt.set_lr_scales(|name| if M::is_encoder(name) { scale } else { 1.0 });
        }
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
            let sum = self.model.backward(
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
            )?;
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
            let (s, n) = self.serving.loss_sum(&examples.iter().collect::<Vec<_>>())?;
            sum += s.to_scalar::<f32>()? as f64;
            count += n;
        }
        Ok((count > 0).then(|| sum / count as f64))
    }

    /// Validation loss, and with `eval_generate` > 0 generations through the engine on the live
    /// weights; keeps `best/` and counts evaluations without improvement.
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

/// What a run starts from.
pub enum Start {
    /// A model directory.
    Model(PathBuf),
    /// Fresh weights for the config.json at this path (tokenizer.json beside it).
    Fresh { config: PathBuf, seed: u64 },
}

/// What a run reports as it goes.
pub enum Event<'a> {
    /// `--resume` was asked for: the checkpoint and step it continues from, or None when
    /// there was none and the run starts from the beginning.
    Resumed {
        from: Option<(&'a Path, usize)>,
    },
    Step(&'a StepLog),
    Eval(&'a EvalLog),
    Saved(&'a Path),
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub final_dir: PathBuf,
    pub best_val_loss: Option<f64>,
    pub stopped_early: bool,
    /// Stopped by `max_time`.
    pub out_of_time: bool,
    pub truncated_samples: usize,
    pub evals: Vec<EvalLog>,
}

/// A whole run: load the model (or, with `resume`, the newest checkpoint under the output
/// directory), train to `config.steps` with evaluations and checkpoints on schedule, write
/// `final/`. The architecture is the one config.json names.
pub fn run(
    start: &Start,
    device: &candle_core::Device,
    config: TrainConfig,
    resume: bool,
    on_event: impl FnMut(Event),
) -> Result<Summary> {
    let checkpoint = if resume { checkpoint::latest(&config.out)? } else { None };
    let dir = match (&checkpoint, start) {
        (Some((dir, _)), _) | (None, Start::Model(dir)) => dir,
        (None, Start::Fresh { config: path, seed }) => {
            let cfg = serde_json::from_str(
                &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a nano DeepSeek-OCR config", path.display()))?;
            let tok_path = path.with_file_name("tokenizer.json");
            let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
                anyhow::anyhow!(
                    "loading {} (a fresh model takes the tokenizer beside its config): {e}",
                    tok_path.display()
                )
            })?;
            let model = deepseek_ocr::Model::fresh(cfg, tokenizer, *seed, device)?;
            return run_model(model, config, checkpoint, resume, on_event);
        }
    };
    if let Some(adapter) = lora::adapter_dir(dir) {
        if config.lora.is_some() && checkpoint.is_none() {
            bail!(
                "{} is a LoRA adapter: it trains as it is, without --lora",
                adapter.display()
            );
        }
        let model = crate::models::load_adapter(&adapter, DType::F32, device)?;
        return run_model(model, config, checkpoint, resume, on_event);
    }
    let files = crate::hub::ModelFiles::from_dir(dir)?;
    let root = files
        .read_json("config.json")?
        .with_context(|| format!("{} has no config.json", dir.display()))?;
    if root.get("quantization_config").is_some() {
        bail!(
            "{} is a quantized checkpoint; fine-tune from its unquantized weights",
            dir.display()
        );
    }
    match crate::models::architecture(&root).as_str() {
        deepseek_ocr::ARCHITECTURE => {
            let model = deepseek_ocr::Model::load(&files, DType::F32, device)?;
            run_model(model, config, checkpoint, resume, on_event)
        }
        qwen2_5_vl::config::ARCHITECTURE | qwen2_vl::ARCHITECTURE => {
            let model = crate::models::load_qwen(&files, root, DType::F32, device)?;
            run_model(
                with_fresh_adapters(model, &config, dir)?,
                config,
                checkpoint,
                resume,
                on_event,
            )
        }
        other => bail!(
            "{}: the trainer takes {}, {} and {} models, not {other}",
            dir.display(),
            deepseek_ocr::ARCHITECTURE,
            qwen2_5_vl::config::ARCHITECTURE,
            qwen2_vl::ARCHITECTURE,
        ),
    }
}

/// With `--lora`, the model with fresh adapters (recording `dir` as their base model).
fn with_fresh_adapters(model: qwen2_5_vl::Model, config: &TrainConfig, dir: &Path) -> Result<qwen2_5_vl::Model> {
    let Some(lora) = &config.lora else {
        if config.merge_lora {
            bail!("--merge-lora merges the adapters --lora trains");
        }
        return Ok(model);
    };
    let base = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let lora = LoraConfig {
        base_model_name_or_path: Some(base.display().to_string()),
        ..lora.clone()
    };
    let adapters = model.fresh_adapters(&lora, config.seed)?;
    model.with_lora(lora, adapters)
}

fn run_model<M: Trainable>(
    model: M,
    config: TrainConfig,
    checkpoint: Option<(PathBuf, TrainerState)>,
    resume: bool,
    mut on_event: impl FnMut(Event),
) -> Result<Summary> {
    let model = Arc::new(model);
    let from = checkpoint.as_ref().map(|(p, s)| (p.as_path(), s.step));
    let history = match &checkpoint {
        Some((dir, state)) => History::load(dir, state.step)?,
        None => History::default(),
    };
    let mut trainer = Trainer::new(
        model,
        config,
        checkpoint.as_ref().map(|(p, s)| (p.as_path(), s.clone())),
    )?;
    if resume {
        on_event(Event::Resumed { from });
    }
    let History { mut steps, mut evals } = history;
    let (mut stopped_early, mut out_of_time) = (false, false);
    let started = std::time::Instant::now();
    while !trainer.done() {
        let entry = trainer.step()?;
        on_event(Event::Step(&entry));
        steps.push(entry);
        let step = trainer.state.step;
        let c = &trainer.config;
        out_of_time = c.max_time.is_some_and(|t| started.elapsed() >= t);
        if c.eval_every > 0 && (step % c.eval_every == 0 || step == c.steps || out_of_time) {
            if let Some(e) = trainer.evaluate()? {
                on_event(Event::Eval(&e));
                evals.push(e);
                super::report::write(&trainer.config.out, &steps, &evals)?;
            }
        }
        if trainer.config.save_every > 0 && step % trainer.config.save_every == 0 {
            let dir = trainer.save_checkpoint()?;
            History {
                steps: steps.clone(),
                evals: evals.clone(),
            }
            .save(&dir)?;
            on_event(Event::Saved(&dir));
        }
        if trainer.should_stop_early() {
            stopped_early = true;
            break;
        }
        if out_of_time {
            break;
        }
    }
    let final_dir = trainer.save_final()?;
    on_event(Event::Saved(&final_dir));
    super::report::write(&trainer.config.out, &steps, &evals)?;
    Ok(Summary {
        steps: trainer.state.step,
        final_dir,
        best_val_loss: trainer.state.best_val_loss,
        stopped_early,
        out_of_time,
        truncated_samples: trainer.state.truncated_samples,
        evals,
    })
}
