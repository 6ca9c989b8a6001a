//! What training records: each optimizer step and each evaluation, as `--log-json`, the
//! checkpoints and the report keep them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One optimizer step, as `--log-json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    /// Mean cross-entropy over the step's target tokens.
    pub loss: f64,
    pub lr: f64,
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    pub tokens: usize,
}

/// An evaluation's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    pub step: usize,
    pub val_loss: f64,
    pub samples: Vec<EvalSample>,
    pub cer: Option<f64>,
    pub wer: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    pub image: PathBuf,
    pub reference: String,
    pub output: String,
    pub cer: f64,
    pub wer: f64,
}
