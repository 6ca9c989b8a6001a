//! Checkpoints: `<out>/step_N/`, `<out>/best/` and `<out>/final/` are model directories that
//! `ocr run` / `ocr generate` load as they are (config.json, model.safetensors under the input's
//! tensor names, tokenizer.json), plus the trainer's state (optimizer moments, step, data
//! position). Each is written beside its place and renamed into it, so a reader (or `--resume`
//! after a SIGKILL) never sees half of one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::data::Cursor;
use super::model::Trainable;

pub const STATE_FILE: &str = "trainer_state.json";
const MOMENTS_FILE: &str = "optimizer.safetensors";

/// Everything besides the weights and moments that an interrupted run needs to continue as if
/// it had not stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub cursor: Cursor,
    pub best_val_loss: Option<f64>,
    pub evals_without_improvement: usize,
    pub truncated_samples: usize,
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `model` (its config with `eos_token_ids` as given, its weights, its tokenizer) and,
/// with `state`, the trainer's state to `<out>/<name>`, replacing what was there.
pub fn save(
    out: &Path,
    name: &str,
    model: &impl Trainable,
    state: Option<(&TrainerState, Vec<(String, Tensor)>)>,
    merged: bool,
) -> Result<PathBuf> {
    let tmp = out.join(format!(".{name}.tmp"));
    let dest = out.join(name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    model.write_model(&tmp, merged)?;
    if let Some((state, moments)) = state {
        let moments: std::collections::HashMap<String, Tensor> = moments.into_iter().collect();
        candle_core::safetensors::save(&moments, tmp.join(MOMENTS_FILE))?;
        // The state file last: its presence marks a complete checkpoint.
        std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
    }
    for entry in std::fs::read_dir(&tmp)? {
        std::fs::File::open(entry?.path())?.sync_all()?;
    }
    sync_dir(&tmp)?;
    if dest.exists() {
        let old = out.join(format!(".{name}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&dest, &old)?;
        std::fs::rename(&tmp, &dest)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&tmp, &dest)?;
    }
    sync_dir(out)?;
    Ok(dest)
}

/// The newest complete `step_N` checkpoint under `out`.
pub fn latest(out: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(None);
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step_"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(step) = step {
            if path.join(STATE_FILE).exists() && best.as_ref().is_none_or(|(s, _)| step > *s) {
                best = Some((step, path));
            }
        }
    }
    match best {
        Some((_, path)) => {
            let file = path.join(STATE_FILE);
            let state = serde_json::from_str(&std::fs::read_to_string(&file)?)
                .with_context(|| format!("reading {}", file.display()))?;
            Ok(Some((path, state)))
        }
        None => Ok(None),
    }
}

/// The optimizer moments a checkpoint holds.
pub fn load_moments(dir: &Path, device: &candle_core::Device) -> Result<std::collections::HashMap<String, Tensor>> {
    let path = dir.join(MOMENTS_FILE);
    candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))
}
