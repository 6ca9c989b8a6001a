//! The in-process trainer of the vision-tokenizer model (nano DeepSeek-OCR), in step with the
//! nanochat fork's PyTorch scripts (`vis_tok_train.py` = Stage 1, `vis_mid_train.py` = Stage 2):
//! - [`data`]: the fork's sample format, tokenized as its dataloader does (plus an end token),
//!   the data order, token-budget micro-batches;
//! - [`optim`]: AdamW, gradient clipping and schedules with PyTorch's semantics;
//! - [`model`]: what the trainer asks of a model (the vision-tokenizer model, Qwen2.5-VL);
//! - [`config`]: what a run is asked to do;
//! - [`trainer`]: the loop over the engine's own parameter store;
//! - [`run`]: a whole run (open the model, train, evaluate, checkpoint, resume);
//! - [`log`]: the records of steps and evaluations;
//! - [`eval`]: validation pages generated through the engine and scored (CER, WER);
//! - `checkpoint`: model directories plus resumable trainer state;
//! - `metrics`: CER / WER of generated answers;
//! - [`report`]: the HTML report (curves, evaluated samples);
//! - [`prepare`]: olmOCR-mix pages into that format, as the fork's prepare_olmocr.py;
//! - [`synth`]: synthetic printed pages for a from-scratch run.

pub(crate) mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod log;
pub(crate) mod metrics;
pub mod model;
pub mod optim;
pub mod prepare;
pub mod report;
pub mod run;
pub mod synth;
pub mod trainer;

pub use config::TrainConfig;
pub use log::StepLog;
pub use trainer::Trainer;
