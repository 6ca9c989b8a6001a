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
