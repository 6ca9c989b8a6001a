//! vellum: an embedded OCR inference engine. Vision-language OCR models (RolmOCR, a Qwen2.5-VL
//! fine-tune, and a nano DeepSeek-OCR) run natively on candle inside the caller's process: no
//! Python, no model server.
//!
//! [`Ocr`] is the front door: it opens a model by hub id or directory, applies its model card
//! (prompt, page rendering, sampling, answer format) and OCRs images, PDFs and corpora exactly
//! as the `ocr` binary does, which is built on it.
//!
//! ```no_run
//! fn main() -> vellum::Result<()> {
//!     vellum::init(); // first in main: PDFs render in this executable, re-run as a worker
//!     let ocr = vellum::Ocr::builder("reducto/RolmOCR").open()?;
//!     let doc = ocr.document("scan.pdf")?;
//!     for page in &doc.pages {
//!         println!("page {} ({:?}): {}", page.page, page.route, page.text);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! PDFs are read by pdfium in worker processes that can be killed and replaced, so a page that
//! crashes pdfium costs that page, not the host. The worker is the host executable itself,
//! re-run with a hidden argument: [`init`] must be the first call in `main` (before threads
//! start) so that such a run serves pdfium and exits instead of running the host's own code.
//! `VELLUM_WORKER` may name another executable that does the same (the `ocr` binary does).
//!
//! # Layout
//!
//! Imports go one way, top to bottom (tests/layering.rs fails on any other):
//!
//! - `bin/ocr/`: the CLI, flags mapped to library calls, one file per subcommand.
//! - [`Ocr`] (module `ocr`) and [`Error`]: the facade embedders use.
//! - [`pipeline`]: corpus runs. `document` (route, render, OCR, retry, fall back, per document),
//!   `run` (the resumable run), `sources`, `shard`, `quality` (repetition checks), `writer`
//!   (chunked, exactly-once JSONL). `train` (feature `train`): the trainer of the nano DeepSeek-OCR model and
//!   of Qwen2.5-VL / Qwen2-VL (full, tower frozen, LoRA) (`model`: what it asks of a model,
//!   `data`, `optim`, `trainer`, `checkpoint`, `metrics`, `report`, `prepare`, `synth`).
//!   `bench` (feature `bench`: throughput, `fidelity` of a fast mode, and olmOCR-Bench scoring in
//!   `bench::olmocr`), `selftest`: the
//!   benchmark harness and the GPU self-test.
//! - [`engine`]: continuous batching over a paged KV cache. `block_pool` (blocks, prefix hashes),
//!   `kv_cache` (block tables), `scheduler` (what runs next, under a token budget),
//!   `encoder_cache` (vision outputs by image hash), `sampler`, `sequence`; one step is
//!   schedule → execute → update. [`pdf`]: pdfium in worker processes, rendering rules
//!   (FinePDFs, olmOCR, DPI), text layers, routing.
//! - [`models`]: the [`models::VisionLanguageModel`] interface and the two families, each as
//!   `config` / processor / towers / decoder in the reference's names: `qwen2_5_vl`
//!   (RolmOCR), `deepseek_ocr` (SAM, CLIP, nanochat GPT, `.pt` conversion, fresh init);
//!   `linear` (dense, int8 or bf16 linear layers), `lora` (adapters), `checkpoint` (gradient
//!   checkpointing over a model's chain of layers).
//! - [`hub`] (model directories, HF cache, download), [`chat_template`].
//! - [`ops`] (attention, paged attention, rotary, norms, activations: CPU twins with backward
//!   passes, CUDA kernels; `blockwise_attention` for training, `gemm_avx512`, `int8` and
//!   `bf16_linear`, the CPU fast modes' linear layers, `autocast`), [`imaging`] (reference-exact resampling, Python
//!   rounding), [`weights`] (mmap loading; the shared parameter store), [`device`].

#[cfg(feature = "bench")]
pub mod bench;
pub mod chat_template;
pub mod device;
pub mod engine;
mod error;
pub mod hub;
pub mod imaging;
pub mod models;
mod ocr;
pub mod ops;
pub mod pdf;
pub mod pipeline;
#[cfg(feature = "bench")]
pub mod selftest;
#[cfg(feature = "train")]
pub mod train;
pub mod weights;

pub use candle_core::{DType, Device};
pub use error::{Error, Result};
pub use image::{self, DynamicImage};
pub use ocr::{check_inputs, inputs, Ocr, OcrBuilder, Quantization, TokenStream};
pub use pdf::{PdfError, RenderMode};
pub use pipeline::document::{DocumentResult, PageResult, PageSource};
pub use pipeline::sources::Source;

/// Call first in `main`, before any thread starts. If this process was started as a pdfium
/// worker (vellum re-runs the host executable for that), it serves and exits here; otherwise
/// it returns at once, and PDF workers are this executable from then on.
///
/// The alternative, a separate worker binary, would have to be installed beside every host;
/// the price of this one is the call, and that a host which skips it gets
/// [`Error::Pdfium`] when it first reads a document (unless `VELLUM_WORKER` names a worker).
pub fn init() {
    pdf::worker::run_if_worker();
}

/// Tunes glibc's allocator for tensor work; call early in `main`, before threads start.
///
/// glibc hands every large buffer back to the kernel when it is freed, and candle allocates a
/// fresh output for every op: on a CPU run a quarter of the vision tower's time went to page
/// faults and zeroing new pages (1.57 s → 1.05–1.13 s a page on the bench model). With this,
/// freed memory up to 1 GiB is kept for reuse, buffers up to 32 MiB come from the heap, and
/// every thread allocates from one heap. It changes the whole process's allocator, so it is
/// the host's choice, not a default; elsewhere than Linux/glibc it does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The instruction FinePDFs and the olmOCR bench runner give RolmOCR (after the image).
pub const ROLMOCR_PROMPT: &str =
    "Return the plain text representation of this document as if you were reading it naturally.\n";
