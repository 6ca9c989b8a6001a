//! The facade: open a model once, then OCR images, PDFs and whole corpora with it, exactly as
//! `ocr run` does (the `ocr` binary is built on this module, so the two cannot drift).
//!
//! [`Ocr::builder`] takes a hub id or a model directory and the options (device, dtype,
//! quantization, model card, sampling, engine limits); [`OcrBuilder::open`] loads the model and
//! applies its [model card](crate::pipeline::card): the prompt, how pages are rendered, the
//! sampling defaults and how answers are parsed. Options set on the builder win over the card.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use candle_core::{DType, Device};
use image::DynamicImage;

use crate::engine::kv_cache::CacheBudget;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, EngineConfig, Generation, RequestHandle};
use crate::error::{Error, Result};
use crate::models::VisionLanguageModel;
use crate::pdf::document::{sniff, InputKind};
use crate::pdf::pages::PageRanges;
use crate::pdf::worker::{Worker, WorkerCommand};
use crate::pdf::RenderMode;
use crate::pipeline::card::{Card, CardOverrides};
use crate::pipeline::document::{ocr_documents, ocr_image, DocumentResult, OcrOptions, PageResult, Recognizer};
use crate::pipeline::run::{document_record, RunObserver, RunOptions, RunStats};
use crate::pipeline::sources::{self, Source};

pub use crate::models::linear::Quantization;

/// How to open a model: see [`Ocr::builder`].
#[derive(Debug, Clone)]
pub struct OcrBuilder {
    model: String,
    device: Device,
    dtype: Option<DType>,
    quantization: Option<Quantization>,
    finepdfs_bounds: bool,
    card: Option<String>,
    overrides: CardOverrides,
    max_retries: usize,
    pages: Option<PageRanges>,
    max_bad_page_rate: f64,
    engine: EngineConfig,
    allow_missing_model: bool,
}

impl OcrBuilder {
    /// `cpu` by default; `Device::new_cuda(n)` with the `cuda` feature.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Default: f32 on the CPU, bf16 on a GPU.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Faster, less exact linear layers (see [`Quantization`]).
    pub fn quantization(mut self, quantization: Quantization) -> Self {
        self.quantization = Some(quantization);
        self
    }

    /// Bound a Qwen-VL model's images as FinePDFs ran RolmOCR (at most 2048 merged tokens).
    pub fn finepdfs_bounds(mut self, on: bool) -> Self {
        self.finepdfs_bounds = on;
        self
    }

    /// The model card by name (`rolmocr`, `olmocr-v0.1`, `olmocr-2`, `nano-deepseek-ocr`),
    /// instead of the one chosen by hub id or architecture.
    pub fn card(mut self, name: impl Into<String>) -> Self {
        self.card = Some(name.into());
        self
    }

    /// The instruction every page is given, instead of the card's.
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.overrides.prompt = Some(prompt.into());
        self
    }

    /// How PDF pages become images, instead of the card's rule.
    pub fn render_mode(mut self, mode: RenderMode) -> Self {
        self.overrides.mode = Some(mode);
        self
    }

    /// Sampling temperature of a page's first attempt (0: greedy), instead of the card's.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.overrides.temperature = Some(temperature);
        self
    }

    /// Most tokens generated for a page (default: the card's cap, else the context's room).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.overrides.max_new_tokens = Some(n);
        self
    }

    /// Retries of a bad page with olmOCR's temperature ladder (default 3).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// Only these pages of each document.
    pub fn pages(mut self, pages: PageRanges) -> Self {
        self.pages = Some(pages);
        self
    }

    /// A document with more than this share of its OCR pages fallen back counts as failed
    /// (default 0.5).
    pub fn max_bad_page_rate(mut self, rate: f64) -> Self {
        self.max_bad_page_rate = rate;
        self
    }

    /// Longest prompt plus output, in tokens (default 8096).
    pub fn max_context(mut self, tokens: usize) -> Self {
        self.engine.max_context = tokens;
        self
    }

    /// Sequences decoding at once (default 64).
    pub fn max_num_seqs(mut self, n: usize) -> Self {
        self.engine.scheduler.max_num_seqs = n;
        self
    }

    /// The KV cache's size, reserved at open (default: what `max_num_seqs` full-context
    /// sequences can use, at most a quarter of the available memory).
    pub fn kv_cache_bytes(mut self, bytes: u64) -> Self {
        self.engine.cache = CacheBudget::Bytes(bytes);
        self
    }

    /// A model that cannot be found or loaded does not fail [`OcrBuilder::open`]: documents
    /// with good text layers are still done, and pages that need OCR are marked
    /// [`DocumentResult::awaits_model`]. Bad options still fail.
    pub fn allow_missing_model(mut self, allow: bool) -> Self {
        self.allow_missing_model = allow;
        self
    }

    /// Checks the options, loads the model, starts the engine and applies the model card.
    pub fn open(self) -> Result<Ocr> {
        if let Some(name) = &self.card {
            crate::pipeline::card::for_model("", "", Some(name)).map_err(|e| Error::Unsupported(format!("{e:#}")))?;
        }
        let max_context = self.engine.max_context;
        if let Some(n) = self.overrides.max_new_tokens {
            if n >= max_context {
                return Err(Error::InvalidOptions(format!(
                    "max_new_tokens {n} leaves no room for the prompt in the {max_context}-token context"
                )));
            }
        }
        if let Some(q) = self.quantization {
            let dtype = self.dtype.unwrap_or_else(|| crate::device::default_dtype(&self.device));
            crate::models::check_quantization(q, &self.model, &self.device, dtype)
                .map_err(|e| Error::Unsupported(format!("{e:#}")))?;
        }
        let engine = self.load().and_then(|model| {
            let engine =
                Engine::new(model, self.engine.clone()).map_err(|e| Error::InvalidOptions(format!("{e:#}")))?;
            // Fewer tokens than one full-context sequence: long pages would fail one by one.
            if engine.cache_tokens() < max_context {
                return Err(Error::InvalidOptions(format!(
                    "the KV cache holds {} tokens, less than one {max_context}-token sequence: give it more memory \
                     or lower the context",
                    engine.cache_tokens()
                )));
            }
            Ok(engine)
        });
        let recognizer = match engine {
            Ok(engine) => Recognizer::Engine(Arc::new(engine)),
            Err(e @ (Error::ModelNotFound { .. } | Error::ModelLoad { .. })) if self.allow_missing_model => {
                Recognizer::Unavailable(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let architecture = match &recognizer {
            Recognizer::Engine(e) => e.model().info().architecture,
            Recognizer::Unavailable(_) => "",
        };
        let (card, warning) = crate::pipeline::card::for_model(&self.model, architecture, self.card.as_deref())
            .map_err(|e| Error::Unsupported(format!("{e:#}")))?;
        let warnings = warning.into_iter().chain(self.cpu_dtype_warning()).collect();
        let worker = WorkerCommand::locate();
        let mut options = OcrOptions::new(worker.clone().unwrap_or(WorkerCommand {
            program: PathBuf::new(),
        }));
        options.apply_card(&card, &self.overrides, max_context);
        options.pages = self.pages;
        options.max_retries = self.max_retries;
        Ok(Ocr {
            model: self.model,
            recognizer,
            card,
            warnings,
            options,
            worker: worker.err(),
            max_bad_page_rate: self.max_bad_page_rate,
        })
    }

    /// A half dtype on the CPU runs every activation through candle's ops, which widen to f32 on
    /// each call: measured at a quarter of f32's speed, where bf16 weights with f32 activations
    /// ([`Quantization::Bf16`]) match or beat f32.
    fn cpu_dtype_warning(&self) -> Option<String> {
        let dtype = self.dtype?;
        (self.device.is_cpu() && matches!(dtype, DType::BF16 | DType::F16) && self.quantization.is_none()).then(|| {
            format!(
                "{dtype:?} on the CPU computes every activation in {dtype:?} through widening ops, about a quarter of \
                 f32's speed (0.23–0.28× on the bench model); f32 is faster, and bf16 quantization (bf16 weights, \
                 f32 activations) keeps bf16's rounding at f32's speed or better"
            )
        })
    }

    fn load(&self) -> Result<Arc<dyn VisionLanguageModel>> {
        let spec = &self.model;
        let adapter = crate::models::lora::adapter_dir(Path::new(spec)).is_some();
        if !adapter {
            crate::hub::resolve(spec).map_err(|e| Error::ModelNotFound {
                model: spec.clone(),
                reason: format!("{e:#}"),
            })?;
        }
        let options = crate::models::OpenOptions {
            dtype: self.dtype,
            quantization: self.quantization,
            finepdfs_bounds: self.finepdfs_bounds,
        };
        crate::models::open(spec, &self.device, options).map_err(|e| Error::ModelLoad {
            model: spec.clone(),
            reason: format!("{e:#}"),
        })
    }
}

/// A model opened for OCR, with its card applied. Cheap to share between threads (`&Ocr` is
/// `Sync`); every method may be called from several at once.
pub struct Ocr {
    model: String,
    recognizer: Recognizer,
    card: Card,
    warnings: Vec<String>,
    options: OcrOptions,
    /// Why no pdfium worker can be started, if none can.
    worker: Option<String>,
    max_bad_page_rate: f64,
}

impl Ocr {
    /// Options for the model a directory or hub id (`org/name[@revision]`) holds: local
    /// directory, else the HF cache, else a download (`HF_HUB_OFFLINE=1` forbids it).
    ///
    /// ```no_run
    /// # fn main() -> vellum::Result<()> {
    /// vellum::init();
    /// let ocr = vellum::Ocr::builder("reducto/RolmOCR").max_new_tokens(2048).open()?;
    /// let doc = ocr.document("paper.pdf")?;
    /// println!("{}", doc.text());
    /// # Ok(()) }
    /// ```
    pub fn builder(model: impl Into<String>) -> OcrBuilder {
        OcrBuilder {
            model: model.into(),
            device: Device::Cpu,
            dtype: None,
            quantization: None,
            finepdfs_bounds: false,
            card: None,
            overrides: CardOverrides::default(),
            max_retries: 3,
            pages: None,
            max_bad_page_rate: 0.5,
            engine: EngineConfig::default(),
            allow_missing_model: false,
        }
    }

    /// The model as it was given (hub id or directory).
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// The model card in force.
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// Things worth telling a user, such as a card chosen by guess.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The engine, for raw requests and its statistics; None without a model.
    pub fn engine(&self) -> Option<&Arc<Engine>> {
        match &self.recognizer {
            Recognizer::Engine(e) => Some(e),
            Recognizer::Unavailable(_) => None,
        }
    }

    /// Why there is no model, when [`OcrBuilder::allow_missing_model`] let it open without one.
    pub fn model_unavailable(&self) -> Option<&str> {
        match &self.recognizer {
            Recognizer::Engine(_) => None,
            Recognizer::Unavailable(reason) => Some(reason),
        }
    }

    fn engine_or_missing(&self) -> Result<&Arc<Engine>> {
        self.engine().ok_or_else(|| Error::ModelNotFound {
            model: self.model.clone(),
            reason: self.model_unavailable().unwrap_or_default().to_string(),
        })
    }

    /// Stops everything in progress: pages in the engine end at its next step, calls that were
    /// OCRing return [`Error::Cancelled`] (or, for [`Ocr::documents`], stop reporting). It
    /// stays cancelled; open another `Ocr` to go on.
    pub fn cancel(&self) {
        self.options.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Ocr::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.options.stop.load(Ordering::Relaxed)
    }

    /// The flag [`Ocr::cancel`] sets, for a signal handler.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.options.stop.clone()
    }

    /// OCRs one page image: the card's prompt, sampling, retries and answer format.
    pub fn image(&self, image: &DynamicImage) -> Result<PageResult> {
        let engine = self.engine_or_missing()?;
        ocr_image(engine, image.to_rgb8(), &self.options).ok_or(Error::Cancelled)
    }

    /// OCRs one document (a PDF or a page image): its pages in order, each with how it got its
    /// text. A file that cannot be read is not an `Err`: its [`DocumentResult::error`] says why,
    /// naming the file and page, as a corpus run records it.
    pub fn document(&self, path: impl AsRef<Path>) -> Result<DocumentResult> {
        let mut out = None;
        self.documents(&[path.as_ref().to_path_buf()], |_, doc| out = Some(doc))?;
        out.ok_or(Error::Cancelled)
    }

    /// OCRs many documents at once (their pages share the engine's batches), calling `done`
    /// with each document's index in `paths` as soon as it is finished, in input order. Once
    /// cancelled, unfinished documents are not reported.
    pub fn documents(&self, paths: &[PathBuf], done: impl FnMut(usize, DocumentResult)) -> Result<()> {
        if let Some(reason) = &self.worker {
            return Err(Error::Pdfium(reason.clone()));
        }
        ocr_documents(paths, &self.recognizer, &self.options, done);
        Ok(())
    }

    /// The line `ocr run` writes for a document (a DataTrove document: id, text, metadata).
    pub fn record(&self, source: &Source, doc: &DocumentResult) -> serde_json::Value {
        document_record(source, doc, &self.model, &doc.failure(self.max_bad_page_rate))
    }

    /// Why `doc` counts as failed: unreadable, or too many of its pages fell back.
    pub fn failure(&self, doc: &DocumentResult) -> Option<String> {
        doc.failure(self.max_bad_page_rate)
    }

    /// A corpus run into `options.out`, resumable after any kill (see [`crate::pipeline::run`]);
    /// the model name and bad-page rate are this `Ocr`'s.
    pub fn run(&self, mut options: RunOptions, observer: &mut dyn RunObserver) -> Result<RunStats> {
        if let Some(reason) = &self.worker {
            return Err(Error::Pdfium(reason.clone()));
        }
        options.model_name = self.model.clone();
        options.max_bad_page_rate = self.max_bad_page_rate;
        crate::pipeline::run::run(&options, &self.recognizer, &self.options, observer).map_err(|e| {
            // What fails a run is its output folder; bad inputs are recorded, not raised.
            match e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
                Some(io) => Error::Io {
                    path: options.out.clone(),
                    source: std::io::Error::new(io.kind(), format!("{e:#}")),
                },
                None => Error::Other(e),
            }
        })
    }

    /// A page's text as the model writes it, piece by piece: the card's prompt and sampling,
    /// one attempt, the answer as generated (not parsed).
    pub fn stream(&self, image: &DynamicImage) -> Result<TokenStream> {
        let engine = self.engine_or_missing()?.clone();
        let instruction = match &self.options.prompt {
            crate::pipeline::document::PagePrompt::Fixed(Some(p)) => p.clone(),
            _ => engine.model().info().default_instruction.to_string(),
        };
        let (handle, tokens) = engine.submit_streaming(image, &instruction, self.options.params.clone())?;
        Ok(TokenStream {
            engine,
            handle,
            tokens,
            output: Vec::new(),
            emitted: String::new(),
            stop: self.options.stop.clone(),
            finished: None,
        })
    }

    /// One raw request: `instruction` (the model's default when None) and `params` as given,
    /// no card, no retries.
    pub fn generate(
        &self,
        image: &DynamicImage,
        instruction: Option<&str>,
        params: SamplingParams,
    ) -> Result<Generation> {
        let engine = self.engine_or_missing()?;
        let instruction = instruction.unwrap_or(engine.model().info().default_instruction);
        Ok(engine.submit(image, instruction, params)?.wait()?)
    }
}

/// The text of one page as it is generated ([`Ocr::stream`]): each item is the text the newest
/// tokens added. After the last, [`TokenStream::generation`] has the whole result.
pub struct TokenStream {
    engine: Arc<Engine>,
    handle: RequestHandle,
    tokens: Receiver<u32>,
    output: Vec<u32>,
    emitted: String,
    stop: Arc<AtomicBool>,
    finished: Option<Generation>,
}

impl TokenStream {
    /// Stops generating at the next engine step.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// The finished request, once the stream has ended.
    pub fn generation(&self) -> Option<&Generation> {
        self.finished.as_ref()
    }

    /// The text not yet handed out, from `text` (the decoding of everything so far). Held back
    /// while it ends inside a character that the next token completes.
    fn fresh(&mut self, text: String) -> Option<String> {
        let piece = text.strip_prefix(self.emitted.as_str())?.to_string();
        if piece.is_empty() || piece.ends_with('\u{FFFD}') {
            return None;
        }
        self.emitted = text;
        Some(piece)
    }
}

impl Iterator for TokenStream {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.finished.is_some() {
            return None;
        }
        loop {
            if self.stop.load(Ordering::Relaxed) {
                self.handle.cancel();
            }
            match self.tokens.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(token) => {
                    self.output.push(token);
                    let text = match self.engine.model().decode(&self.output) {
                        Ok(text) => text,
                        Err(e) => return Some(Err(Error::Other(e))),
                    };
                    if let Some(piece) = self.fresh(text) {
                        return Some(Ok(piece));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let generation = match self.handle.wait() {
            Ok(g) if g.finish_reason == crate::engine::FinishReason::Cancelled => return Some(Err(Error::Cancelled)),
            Ok(g) => g,
            Err(e) => return Some(Err(e.into())),
        };
        let rest = generation.text.strip_prefix(self.emitted.as_str()).map(str::to_string);
        self.finished = Some(generation);
        rest.filter(|r| !r.is_empty()).map(Ok)
    }
}

/// The documents `inputs` name (files, folders, globs, manifests; see
/// [`crate::pipeline::sources`]), each with its stable id; none is an error.
pub fn inputs(inputs: &[String]) -> Result<Vec<Source>> {
    let found = sources::collect(inputs).map_err(|e| Error::InvalidOptions(format!("{e:#}")))?;
    if found.is_empty() {
        return Err(Error::NoInputs {
            inputs: inputs.join(", "),
            extensions: sources::DOCUMENT_EXTENSIONS.join(", "),
        });
    }
    Ok(found)
}

/// What must hold before the first document: a pdfium worker can be started and, if any
/// input is a PDF (by its first bytes, not its name), libpdfium loads in it.
pub fn check_inputs(sources: &[Source]) -> Result<()> {
    let worker = WorkerCommand::locate().map_err(Error::Pdfium)?;
    let any_pdf = sources
        .iter()
        .any(|s| matches!(sniff(&s.path.display().to_string(), &s.path), Ok(InputKind::Pdf)));
    if any_pdf {
        Worker::new(worker)
            .check()
            .map_err(|e| Error::Pdfium(format!("PDFs need libpdfium: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_dtype_on_the_cpu_is_warned_about_unless_quantised() {
        let warning = |b: OcrBuilder| b.cpu_dtype_warning();
        assert!(warning(Ocr::builder("m")).is_none(), "the default dtype, f32");
        assert!(warning(Ocr::builder("m").dtype(DType::F32)).is_none());
        let bf16 = warning(Ocr::builder("m").dtype(DType::BF16)).expect("bf16 on the CPU");
        assert!(bf16.contains("quantization"), "{bf16}");
        assert!(warning(Ocr::builder("m").dtype(DType::F16)).is_some());
        // bf16 weights with f32 activations is what the warning points to; an f16 model with a
        // quantization is refused before loading, not warned about.
        assert!(warning(Ocr::builder("m").dtype(DType::BF16).quantization(Quantization::Bf16)).is_none());
    }
}
