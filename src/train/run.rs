//! A whole run from the command line's point of view: open the model a config.json names (or
//! the newest checkpoint), train it with evaluations and checkpoints on schedule, keep the
//! report's history across `--resume`, write `final/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;

use super::checkpoint::{self, TrainerState};
use super::config::TrainConfig;
use super::log::{EvalLog, StepLog};
use super::model::Trainable;
use super::report::History;
use super::trainer::Trainer;
use crate::models::lora::{self, LoraConfig};
use crate::models::{deepseek_ocr, qwen2_5_vl, Loaded};

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
    match crate::models::load_typed(&files, DType::F32, device)? {
        Loaded::VisionTokenizer(model) => run_model(*model, config, checkpoint, resume, on_event),
        Loaded::Qwen(model) => run_model(
            with_fresh_adapters(*model, &config, dir)?,
            config,
            checkpoint,
            resume,
            on_event,
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
