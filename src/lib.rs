//! vellum: an embedded OCR inference engine. Vision-language OCR models (RolmOCR, a Qwen2.5-VL
//! fine-tune) run natively on candle inside the caller's process: no Python, no model server.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use vellum::engine::{Engine, EngineConfig};
//! let files = vellum::hub::resolve("reducto/RolmOCR")?;
//! let model = vellum::models::qwen2_5_vl::Model::load(&files, candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let engine = Engine::new(Arc::new(model), EngineConfig::default())?;
//! let page = image::open("page.png")?;
//! let out = engine.generate(&page, vellum::ROLMOCR_PROMPT, Default::default())?;
//! println!("{}", out.text);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Imports go one way, top to bottom (tests/layering.rs fails on any other):
//!
//! - `bin/ocr.rs`: the CLI, flags mapped to library calls.
//! - [`pipeline`]: corpus runs. `document` (route, render, OCR, retry, fall back, per document),
//!   `run` (the resumable run), `sources`, `shard`, `quality` (repetition checks), `writer`
//!   (chunked, exactly-once JSONL). [`train`]: the trainer of the nano DeepSeek-OCR model and
//!   of Qwen2.5-VL / Qwen2-VL (full, tower frozen, LoRA) (`model`: what it asks of a model,
//!   `data`, `optim`, `trainer`, `checkpoint`, `metrics`, `report`, `prepare`, `synth`).
//!   [`mod@bench`] (throughput, `fidelity` of a fast mode, and olmOCR-Bench scoring in
//!   `bench::olmocr`), [`selftest`]: the
//!   benchmark harness and the GPU self-test.
//! - [`engine`]: continuous batching over a paged KV cache. `block_pool` (blocks, prefix hashes),
//!   `kv_cache` (block tables), `scheduler` (what runs next, under a token budget),
//!   `encoder_cache` (vision outputs by image hash), `sampler`, `sequence`; one step is
//!   schedule → execute → update. [`pdf`]: pdfium in worker processes, rendering rules
//!   (FinePDFs, olmOCR, DPI), text layers, routing.
//! - [`models`]: the [`models::VisionLanguageModel`] interface and the two families, each as
//!   `config` / processor / towers / decoder in the reference's names: `qwen2_5_vl`
//!   (RolmOCR), `deepseek_ocr` (SAM, CLIP, nanochat GPT, `.pt` conversion, fresh init);
//!   `linear` (dense or int8 linear layers), `lora` (adapters).
//! - [`hub`] (model directories, HF cache, download), [`chat_template`].
//! - [`ops`] (attention, paged attention, rotary, norms, activations: CPU twins with backward
//!   passes, CUDA kernels; `int8`, the CPU fast mode's linear layer), [`imaging`] (reference-exact resampling, Python rounding),
//!   [`weights`] (mmap loading; the shared parameter store), [`device`].

pub mod bench;
pub mod chat_template;
pub mod device;
pub mod engine;
pub mod hub;
pub mod imaging;
pub mod models;
pub mod ops;
pub mod pdf;
pub mod pipeline;
pub mod selftest;
pub mod train;
pub mod weights;

/// The instruction FinePDFs and the olmOCR bench runner give RolmOCR (after the image).
pub const ROLMOCR_PROMPT: &str =
    "Return the plain text representation of this document as if you were reading it naturally.\n";
