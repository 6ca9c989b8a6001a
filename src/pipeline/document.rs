//! Documents in, text out: route each document, take born-digital pages from the text layer,
//! render the others and run them through the engine, and hand back each document with its
//! pages in order as soon as they are all done.
//!
//! A page whose output is bad (it hit the token limit, or repeats itself by FinePDFs' rules) is
//! retried with a rising temperature (olmOCR's ladder; the engine's prefix and vision caches
//! make a retry cheap), then falls back to its text layer. A document with too many such pages
//! is marked failed, with the reason.
//!
//! When `stop` is set, nothing new starts, pages in the engine are cancelled, and only the
//! documents already complete are handed back (in whatever order they completed); a resumed
//! run does the others again.
//!
//! Rendering runs in a thread of its own (through the pdfium worker) and feeds pages through a
//! bounded channel, so it never runs more than a few pages ahead of the model; at most
//! `max_in_flight` pages wait in the engine at once.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{DynamicImage, RgbImage};
use serde::Serialize;

use super::answer::{self, AnswerFormat, PageFacts};
use super::card::{finetuning_prompt, Card, CardOverrides, Prompt};
use super::quality::find_repetition;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, FinishReason, RequestHandle, RequestResult};
use crate::pdf::pages::PageRanges;
use crate::pdf::route::DocumentRoute;
use crate::pdf::stream::{document_stream, RoutedDocument, StreamItem};
use crate::pdf::worker::{Worker, WorkerCommand};
use crate::pdf::{PdfError, RenderMode};

/// olmOCR's temperatures for successive attempts at a bad page.
pub const TEMPERATURE_LADDER: [f64; 8] = [0.1, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0];

/// How one page got its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageSource {
    TextLayer,
    Ocr,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageResult {
    /// 1-based.
    pub page: usize,
    pub route: PageSource,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    pub prompt_tokens: usize,
    /// Tokens of the attempt whose text this is.
    pub generated_tokens: usize,
    /// Tokens of every attempt, retries included: the work the page took.
    pub total_generated_tokens: usize,
    /// Model runs for this page (1 + retries).
    pub attempts: usize,
    /// The page's OCR was bad or failed, and its text is the text layer's.
    pub fallback: bool,
    /// Why: "length", "line", "sentence", "char", an answer that does not parse, or an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
    /// Degrees the page image was turned for the answer kept (olmOCR's rotation correction).
    #[serde(skip_serializing_if = "is_zero")]
    pub rotation: u32,
    /// olmOCR's page fields (primary_language, is_rotation_valid, rotation_correction,
    /// is_table, is_diagram), for models that answer with them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub facts: Option<PageFacts>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentResult {
    pub source: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<DocumentRoute>,
    pub pages: Vec<PageResult>,
    /// Why the document could not be read at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PdfError>,
    /// Pages of it need OCR and there is no model: it is not finished.
    #[serde(skip)]
    pub awaits_model: bool,
}

impl DocumentResult {
    /// The document's text: its pages joined by blank lines.
    pub fn text(&self) -> String {
        self.pages
            .iter()
            .map(|p| p.text.trim_end())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Why the document belongs in the failed output: unreadable, or more than `max_bad_rate`
    /// of its OCR pages fell back.
    pub fn failure(&self, max_bad_rate: f64) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.to_string());
        }
        let ocr = self.pages.iter().filter(|p| p.route == PageSource::Ocr).count();
        let bad = self.pages.iter().filter(|p| p.fallback).count();
        (ocr > 0 && bad as f64 / ocr as f64 > max_bad_rate).then(|| {
            format!(
                "{bad} of {ocr} OCR pages fell back to the text layer (more than {:.0}%)",
                max_bad_rate * 100.0
            )
        })
    }
}

/// The model side of OCR: an engine, or the reason there is none.
pub(crate) enum Recognizer {
    Engine(Arc<Engine>),
    Unavailable(String),
}

/// The instruction of each page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PagePrompt {
    /// This one (None: the model's own default).
    Fixed(Option<String>),
    /// olmOCR v0.1's: the page's anchor text (at most `max_length` characters) inside
    /// olmocr's fine-tuning prompt.
    Anchored { max_length: usize },
}

pub(crate) struct OcrOptions {
    /// What pages are asked.
    pub prompt: PagePrompt,
    /// How the model answers.
    pub answer: AnswerFormat,
    pub params: SamplingParams,
    pub mode: RenderMode,
    /// Only these pages of each document (all without it).
    pub pages: Option<PageRanges>,
    /// Retries of a bad page (temperatures from [`TEMPERATURE_LADDER`]).
    pub max_retries: usize,
    /// Rendered pages waiting for the model, at most.
    pub render_ahead: usize,
    /// Pages submitted to the engine and not yet finished, at most.
    pub max_in_flight: usize,
    pub worker: WorkerCommand,
    /// Set to stop after the documents already started.
    pub stop: Arc<AtomicBool>,
}

impl OcrOptions {
    pub fn new(worker: WorkerCommand) -> Self {
        Self {
            prompt: PagePrompt::Fixed(None),
            answer: AnswerFormat::Plain,
            params: SamplingParams {
                repetition_penalty: 1.05,
                ..Default::default()
            },
            mode: RenderMode::Finepdfs,
            pages: None,
            max_retries: 3,
            render_ahead: 4,
            max_in_flight: 32,
            worker,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl OcrOptions {
    /// The card's prompt, render size, sampling and answer format, where `overrides` say
    /// nothing.
    pub fn apply_card(&mut self, card: &Card, overrides: &CardOverrides, max_context: usize) {
        self.mode = overrides.mode.unwrap_or(card.render);
        self.prompt = match (&overrides.prompt, &card.prompt) {
            (Some(p), _) => PagePrompt::Fixed(Some(p.clone())),
            (None, Prompt::Fixed(p)) => PagePrompt::Fixed(Some(p.clone())),
            (None, Prompt::OlmocrAnchored { target_length }) => PagePrompt::Anchored {
                max_length: *target_length,
            },
        };
        self.answer = card.answer;
        // A card's cap that leaves the prompt too little of the context gives way to what is left.
        let card_cap = card.sampling.max_new_tokens.filter(|&n| n <= max_context / 2);
        self.params.max_new_tokens = overrides.max_new_tokens.or(card_cap);
        self.params.temperature = overrides.temperature.unwrap_or(card.sampling.temperature);
        self.params.repetition_penalty = card.sampling.repetition_penalty;
    }
}

struct Running {
    page: usize,
    text_layer: String,
    /// The page as rendered; attempts see it turned by `rotation`.
    image: Arc<RgbImage>,
    instruction: String,
    handle: RequestHandle,
    attempt: usize,
    /// Degrees the page is turned by (olmOCR's cumulative rotation correction).
    rotation: u32,
    /// Tokens of the attempts before this one.
    spent_tokens: usize,
    /// A well-formed answer from an attempt that said the page was rotated: kept in case no
    /// rotation satisfies the model (olmocr keeps it too).
    rotated_answer: Option<PageResult>,
    started: Instant,
}

impl Running {
    /// Waits for the run; once `stop` is set, cancels it (it then ends within a step).
    fn wait(&self, stop: &AtomicBool) -> RequestResult {
        loop {
            if let Some(result) = self.handle.wait_timeout(Duration::from_millis(100)) {
                return result;
            }
            if stop.load(Ordering::Relaxed) {
                self.handle.cancel();
            }
        }
    }
}

enum Pending {
    Done(PageResult),
    Running(Running),
    /// Cancelled by a stop: the document is not finished.
    Abandoned,
}

/// `image` turned as olmocr turns a page it was told needs `rotation` degrees: PIL's
/// ROTATE_90 / 180 / 270, which are counter-clockwise.
fn rotate(image: &RgbImage, rotation: u32) -> RgbImage {
    match rotation {
        90 => image::imageops::rotate270(image),
        180 => image::imageops::rotate180(image),
        270 => image::imageops::rotate90(image),
        _ => image.clone(),
    }
}

/// The engine and settings pages are submitted with.
struct Submitter<'a> {
    engine: Option<Arc<Engine>>,
    options: &'a OcrOptions,
}

impl Submitter<'_> {
    /// The instruction for a page whose anchor text (when the prompt wants one) is `anchor`.
    fn instruction(&self, anchor: Option<&str>) -> Result<String, String> {
        let engine = self.engine.as_ref().ok_or("no engine")?;
        Ok(match (&self.options.prompt, anchor) {
            (PagePrompt::Anchored { .. }, Some(anchor)) => finetuning_prompt(anchor),
            (PagePrompt::Anchored { .. }, None) => return Err("the prompt needs the page's anchor text".into()),
            (PagePrompt::Fixed(Some(i)), _) => i.clone(),
            (PagePrompt::Fixed(None), _) => engine.model().info().default_instruction.to_string(),
        })
    }

    fn submit(
        &self,
        image: &RgbImage,
        instruction: &str,
        attempt: usize,
        rotation: u32,
    ) -> Result<RequestHandle, String> {
        let engine = self.engine.as_ref().ok_or("no engine")?;
        let mut params = self.options.params.clone();
        if attempt > 0 {
            params.temperature = TEMPERATURE_LADDER[(attempt - 1).min(TEMPERATURE_LADDER.len() - 1)];
            params.seed = params.seed.wrapping_add(attempt as u64);
        }
        engine
            .submit(&DynamicImage::ImageRgb8(rotate(image, rotation)), instruction, params)
            .map_err(|e| format!("{e:#}"))
    }

    /// A finished run of a page: done, or submitted again (bad, or rotated by the model's
    /// judgement) while retries are left.
    fn judge(&self, run: Running, result: RequestResult) -> Pending {
        let seconds = run.started.elapsed().as_secs_f64();
        let generation = match result {
            Ok(g) => g,
            Err(e) => {
                let mut page = fallback(run.page, run.text_layer, e.to_string(), run.attempt + 1, seconds);
                page.total_generated_tokens = run.spent_tokens;
                return Pending::Done(page);
            }
        };
        let spent_tokens = run.spent_tokens + generation.tokens.len();
        if generation.finish_reason == FinishReason::Cancelled {
            return Pending::Abandoned;
        }
        let bad = match generation.finish_reason {
            FinishReason::Length | FinishReason::Repetition => Err("length".to_string()),
            _ => match find_repetition(&generation.text) {
                Some(r) => Err(r.as_str().to_string()),
                None => answer::parse(self.options.answer, &generation.text)
                    .map_err(|e| format!("the answer does not parse: {e}")),
            },
        };
        let mut rotated_answer = run.rotated_answer;
        let (reason, rotation) = match bad {
            Ok(answer) => {
                let page = PageResult {
                    page: run.page,
                    route: PageSource::Ocr,
                    text: answer.text,
                    finish_reason: Some(generation.finish_reason),
                    prompt_tokens: generation.prompt_tokens,
                    generated_tokens: generation.tokens.len(),
                    total_generated_tokens: spent_tokens,
                    attempts: run.attempt + 1,
                    fallback: false,
                    error: None,
                    seconds,
                    rotation: run.rotation,
                    facts: answer.facts.clone(),
                };
                match answer.facts {
                    Some(f) if !f.is_rotation_valid => {
                        rotated_answer = Some(page);
                        (
                            format!("the model says the page needs {}° more", f.rotation_correction),
                            (run.rotation + f.rotation_correction) % 360,
                        )
                    }
                    _ => return Pending::Done(page),
                }
            }
            Err(reason) => (reason, run.rotation),
        };
        if run.attempt < self.options.max_retries {
            match self.submit(&run.image, &run.instruction, run.attempt + 1, rotation) {
                Ok(handle) => {
                    return Pending::Running(Running {
                        handle,
                        attempt: run.attempt + 1,
                        rotation,
                        spent_tokens,
                        rotated_answer,
                        ..run
                    })
                }
                Err(e) => {
                    let mut page = fallback(
                        run.page,
                        run.text_layer,
                        format!("{reason}; retry failed: {e}"),
                        run.attempt + 1,
                        seconds,
                    );
                    page.total_generated_tokens = spent_tokens;
                    return Pending::Done(page);
                }
            }
        }
        if let Some(mut page) = rotated_answer {
            // No rotation satisfied the model: its last well-formed answer stands, as in olmocr.
            page.attempts = run.attempt + 1;
            page.total_generated_tokens = spent_tokens;
            return Pending::Done(page);
        }
        let mut page = fallback(run.page, run.text_layer, reason, run.attempt + 1, seconds);
        page.finish_reason = Some(generation.finish_reason);
        page.generated_tokens = generation.tokens.len();
        page.total_generated_tokens = spent_tokens;
        page.prompt_tokens = generation.prompt_tokens;
        Pending::Done(page)
    }
}

fn fallback(page: usize, text_layer: String, error: String, attempts: usize, seconds: f64) -> PageResult {
    PageResult {
        page,
        route: PageSource::Ocr,
        text: text_layer,
        finish_reason: None,
        prompt_tokens: 0,
        generated_tokens: 0,
        total_generated_tokens: 0,
        attempts,
        fallback: true,
        error: Some(error),
        seconds,
        rotation: 0,
        facts: None,
    }
}

struct DocState {
    result: DocumentResult,
    pages: Vec<Pending>,
    /// Pages the rendering thread will send for this document, and how many it has sent.
    to_render: usize,
    rendered: usize,
}

impl DocState {
    fn ready(&self) -> bool {
        self.rendered == self.to_render && self.pages.iter().all(|p| matches!(p, Pending::Done(_)))
    }

    /// Collects finished runs without blocking (and resubmits bad pages).
    fn poll(&mut self, submitter: &Submitter) {
        for slot in &mut self.pages {
            let Pending::Running(run) = slot else { continue };
            let Some(result) = run.handle.try_wait() else { continue };
            let Pending::Running(run) =
                std::mem::replace(slot, Pending::Done(fallback(0, String::new(), String::new(), 0, 0.0)))
            else {
                unreachable!("matched above")
            };
            *slot = submitter.judge(run, result);
        }
    }

    /// Waits until the `index`-th page is done (through its retries), or abandoned by a stop.
    fn settle(&mut self, index: usize, submitter: &Submitter) {
        let slot = &mut self.pages[index];
        while matches!(slot, Pending::Running(_)) {
            let Pending::Running(run) = std::mem::replace(slot, Pending::Abandoned) else {
                unreachable!("checked by the loop")
            };
            let result = run.wait(&submitter.options.stop);
            *slot = submitter.judge(run, result);
        }
    }

    /// The finished document; None if a stop abandoned any of its pages.
    fn into_result(mut self, submitter: &Submitter) -> Option<DocumentResult> {
        for index in 0..self.pages.len() {
            self.settle(index, submitter);
        }
        let pages: Option<Vec<PageResult>> = self
            .pages
            .into_iter()
            .map(|p| match p {
                Pending::Done(r) => Some(r),
                Pending::Abandoned => None,
                Pending::Running(_) => unreachable!("settled above"),
            })
            .collect();
        self.result.pages = pages?;
        Some(self.result)
    }
}

/// OCRs one page image held in memory, as a page of a document is done (the prompt, sampling,
/// retries and answer format of `options`; an image has no text layer, so a page that stays
/// bad ends with empty text and `fallback`). None if `options.stop` cancelled it.
pub(crate) fn ocr_image(engine: &Arc<Engine>, image: RgbImage, options: &OcrOptions) -> Option<PageResult> {
    let submitter = Submitter {
        engine: Some(engine.clone()),
        options,
    };
    let started = Instant::now();
    let anchor = match options.prompt {
        PagePrompt::Anchored { max_length } => Some(crate::pdf::anchor::linearize(
            &crate::pdf::anchor::PageReport {
                width: image.width() as f32,
                height: image.height() as f32,
                texts: Vec::new(),
                images: Vec::new(),
            },
            max_length,
        )),
        PagePrompt::Fixed(_) => None,
    };
    let image = Arc::new(image);
    let submitted = submitter.instruction(anchor.as_deref()).and_then(|instruction| {
        submitter
            .submit(&image, &instruction, 0, 0)
            .map(|handle| (instruction, handle))
    });
    let mut pending = match submitted {
        Ok((instruction, handle)) => Pending::Running(Running {
            page: 1,
            text_layer: String::new(),
            image,
            instruction,
            handle,
            attempt: 0,
            rotation: 0,
            spent_tokens: 0,
            rotated_answer: None,
            started,
        }),
        Err(error) => Pending::Done(fallback(1, String::new(), error, 0, started.elapsed().as_secs_f64())),
    };
    while let Pending::Running(run) = pending {
        let result = run.wait(&options.stop);
        pending = submitter.judge(run, result);
    }
    match pending {
        Pending::Done(page) => Some(page),
        _ => None,
    }
}

/// OCRs `files` (PDFs or page images), calling `done` with each document's index in `files`
/// and its result, in input order, as soon as all of its pages are finished. Once
/// `options.stop` is set, unfinished documents are abandoned (and not reported).
pub(crate) fn ocr_documents(
    files: &[PathBuf],
    recognizer: &Recognizer,
    options: &OcrOptions,
    mut done: impl FnMut(usize, DocumentResult),
) {
    let submitter = Submitter {
        engine: match recognizer {
            Recognizer::Engine(e) => Some(e.clone()),
            Recognizer::Unavailable(_) => None,
        },
        options,
    };
    let renders = submitter.engine.is_some();
    let stream = document_stream(
        Worker::new(options.worker.clone()),
        files.to_vec(),
        options.pages.clone(),
        options.mode,
        match options.prompt {
            PagePrompt::Anchored { max_length } => Some(max_length),
            PagePrompt::Fixed(_) => None,
        },
        options.render_ahead,
        move |route| renders && route.decision.needs_ocr,
        options.stop.clone(),
    );
    let mut docs: BTreeMap<usize, DocState> = BTreeMap::new();
    let mut next_out = 0;
    let mut in_flight: VecDeque<(usize, usize)> = VecDeque::new();
    for item in stream.items.iter() {
        match item {
            StreamItem::Document { doc, result } => {
                docs.insert(doc, new_doc_state(files[doc].clone(), result, recognizer));
            }
            StreamItem::Page {
                doc,
                index,
                page,
                image,
                anchor,
            } => {
                while in_flight.len() >= options.max_in_flight {
                    let (d, p) = in_flight.pop_front().expect("non-empty");
                    if let Some(state) = docs.get_mut(&d) {
                        state.settle(p, &submitter);
                    }
                }
                let state = docs.get_mut(&doc).expect("a document is announced before its pages");
                let text_layer = match &state.pages[index] {
                    Pending::Done(p) => p.text.clone(),
                    _ => unreachable!("each page is rendered once"),
                };
                let started = Instant::now();
                let submitted = image.map_err(|e| e.to_string()).and_then(|img| {
                    if options.stop.load(Ordering::Relaxed) {
                        return Err("stopped".to_string());
                    }
                    let anchor = anchor.transpose().map_err(|e| format!("anchor text: {e}"))?;
                    let instruction = submitter.instruction(anchor.as_deref())?;
                    let image = Arc::new(img);
                    submitter
                        .submit(&image, &instruction, 0, 0)
                        .map(|handle| (image, instruction, handle))
                });
                state.pages[index] = match submitted {
                    Ok((image, instruction, handle)) => {
                        in_flight.push_back((doc, index));
                        Pending::Running(Running {
                            page,
                            text_layer,
                            image,
                            instruction,
                            handle,
                            attempt: 0,
                            rotation: 0,
                            spent_tokens: 0,
                            rotated_answer: None,
                            started,
                        })
                    }
                    Err(_) if options.stop.load(Ordering::Relaxed) => Pending::Abandoned,
                    Err(error) => Pending::Done(fallback(page, text_layer, error, 0, started.elapsed().as_secs_f64())),
                };
                state.rendered += 1;
            }
        }
        docs.values_mut().for_each(|d| d.poll(&submitter));
        while docs.get(&next_out).is_some_and(DocState::ready) {
            if let Some(result) = docs.remove(&next_out).expect("checked").into_result(&submitter) {
                done(next_out, result);
            }
            next_out += 1;
        }
        if options.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let stopped = options.stop.load(Ordering::Relaxed);
    if stopped {
        // Cancel everything in the engine at once rather than one page at a time.
        for state in docs.values() {
            for page in &state.pages {
                if let Pending::Running(run) = page {
                    run.handle.cancel();
                }
            }
        }
    }
    drop(stream.items);
    let _ = stream.thread.join();
    for (index, state) in std::mem::take(&mut docs) {
        // A document cut short by a stop (not all its pages rendered, or some cancelled) was
        // never finished: it is dropped, and a resumed run does it again.
        if state.rendered == state.to_render && (!stopped || state.ready()) {
            if let Some(result) = state.into_result(&submitter) {
                done(index, result);
            }
        }
    }
}

fn new_doc_state(source: PathBuf, routed: Result<RoutedDocument, PdfError>, recognizer: &Recognizer) -> DocState {
    let (route, texts) = match routed {
        Ok(r) => r,
        Err(error) => {
            let result = DocumentResult {
                source,
                route: None,
                pages: Vec::new(),
                error: Some(error),
                awaits_model: false,
            };
            return DocState {
                result,
                pages: Vec::new(),
                to_render: 0,
                rendered: 0,
            };
        }
    };
    let needs_ocr = route.decision.needs_ocr;
    let pages: Vec<Pending> = texts
        .into_iter()
        .map(|(number, text)| {
            // A page whose text layer cannot be read says so (OCR may still replace it).
            let (text, error) = match text {
                Ok(text) => (text, None),
                Err(e) => (String::new(), Some(format!("text layer: {e}"))),
            };
            let page = PageResult {
                page: number,
                route: PageSource::TextLayer,
                text,
                finish_reason: None,
                prompt_tokens: 0,
                generated_tokens: 0,
                total_generated_tokens: 0,
                attempts: 0,
                fallback: false,
                error,
                seconds: 0.0,
                rotation: 0,
                facts: None,
            };
            Pending::Done(match (needs_ocr, recognizer) {
                (false, _) => page,
                (true, Recognizer::Unavailable(reason)) => PageResult {
                    route: PageSource::Ocr,
                    fallback: true,
                    error: Some(format!("needs OCR, but no model is available: {reason}")),
                    ..page
                },
                // Replaced when the page is rendered and submitted.
                (true, Recognizer::Engine(_)) => PageResult {
                    route: PageSource::Ocr,
                    ..page
                },
            })
        })
        .collect();
    let to_render = if needs_ocr && matches!(recognizer, Recognizer::Engine(_)) {
        pages.len()
    } else {
        0
    };
    DocState {
        result: DocumentResult {
            source,
            route: Some(route),
            pages: Vec::new(),
            error: None,
            awaits_model: needs_ocr && matches!(recognizer, Recognizer::Unavailable(_)),
        },
        pages,
        to_render,
        rendered: 0,
    }
}
