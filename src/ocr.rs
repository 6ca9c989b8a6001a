//! Documents in, text out: route each document, take born-digital pages from the text layer,
//! render the others and run them through the engine, and hand back each document with its
//! pages in order as soon as they are all done.
//!
//! Rendering runs in a thread of its own (through the pdfium worker) and feeds pages through a
//! bounded channel, so it never runs more than a few pages ahead of the model; at most
//! `max_in_flight` pages wait in the engine at once.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

use image::{DynamicImage, RgbImage};
use serde::Serialize;

use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, FinishReason, RequestHandle};
use crate::pdf::route::{route_document, DocumentRoute, Router};
use crate::pdf::worker::{Worker, WorkerCommand};
use crate::pdf::{PdfError, RenderMode};

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
    pub generated_tokens: usize,
    /// Why this page has no OCR text (it then carries its text layer, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
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
}

/// The model side of OCR: an engine, or the reason there is none.
pub enum Recognizer {
    Engine(Arc<Engine>),
    Unavailable(String),
}

pub struct OcrOptions {
    pub instruction: String,
    pub params: SamplingParams,
    pub mode: RenderMode,
    /// Rendered pages waiting for the model, at most.
    pub render_ahead: usize,
    /// Pages submitted to the engine and not yet finished, at most.
    pub max_in_flight: usize,
    pub worker: WorkerCommand,
}

impl OcrOptions {
    pub fn new(worker: WorkerCommand) -> Self {
        Self {
            instruction: crate::ROLMOCR_PROMPT.to_string(),
            params: SamplingParams {
                repetition_penalty: 1.05,
                ..Default::default()
            },
            mode: RenderMode::Finepdfs,
            render_ahead: 4,
            max_in_flight: 64,
            worker,
        }
    }
}

/// What the rendering thread sends.
enum Item {
    Document {
        doc: usize,
        result: Result<(DocumentRoute, Vec<String>), PdfError>,
    },
    Page {
        doc: usize,
        page: usize,
        image: Result<RgbImage, PdfError>,
    },
}

enum Pending {
    Done(PageResult),
    Running {
        page: usize,
        text_layer: String,
        handle: RequestHandle,
        started: Instant,
    },
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

    /// Collects finished pages without blocking.
    fn poll(&mut self) {
        for slot in &mut self.pages {
            if let Pending::Running { handle, .. } = slot {
                if let Some(result) = handle.try_wait() {
                    let Pending::Running {
                        page,
                        text_layer,
                        started,
                        ..
                    } = std::mem::replace(slot, Pending::Done(placeholder()))
                    else {
                        unreachable!()
                    };
                    *slot = Pending::Done(page_result(page, text_layer, started, result));
                }
            }
        }
    }

    /// Waits for one page.
    fn settle(&mut self, page: usize) {
        let slot = &mut self.pages[page - 1];
        if !matches!(slot, Pending::Running { .. }) {
            return;
        }
        if let Pending::Running {
            page,
            text_layer,
            handle,
            started,
        } = std::mem::replace(slot, Pending::Done(placeholder()))
        {
            *slot = Pending::Done(page_result(page, text_layer, started, handle.wait()));
        }
    }

    fn into_result(mut self) -> DocumentResult {
        for p in 1..=self.pages.len() {
            self.settle(p);
        }
        self.result.pages = self
            .pages
            .into_iter()
            .map(|p| match p {
                Pending::Done(r) => r,
                Pending::Running { .. } => unreachable!("settled above"),
            })
            .collect();
        self.result
    }
}

fn placeholder() -> PageResult {
    PageResult {
        page: 0,
        route: PageSource::Ocr,
        text: String::new(),
        finish_reason: None,
        prompt_tokens: 0,
        generated_tokens: 0,
        error: None,
        seconds: 0.0,
    }
}

fn page_result(page: usize, text_layer: String, started: Instant, result: crate::engine::RequestResult) -> PageResult {
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(g) => PageResult {
            page,
            route: PageSource::Ocr,
            text: g.text,
            finish_reason: Some(g.finish_reason),
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.tokens.len(),
            error: None,
            seconds,
        },
        Err(e) => failed_page(page, text_layer, e.to_string(), seconds),
    }
}

fn failed_page(page: usize, text_layer: String, error: String, seconds: f64) -> PageResult {
    PageResult {
        page,
        text: text_layer,
        error: Some(error),
        seconds,
        ..placeholder()
    }
}

/// OCRs one page image.
pub fn ocr_image(
    engine: &Engine,
    image: &DynamicImage,
    options: &OcrOptions,
) -> anyhow::Result<crate::engine::Generation> {
    engine.generate(image, &options.instruction, options.params.clone())
}

/// OCRs `files` (PDFs or page images), calling `done` with each document, in input order, as
/// soon as all of its pages are finished.
pub fn ocr_documents(
    files: &[PathBuf],
    recognizer: &Recognizer,
    options: &OcrOptions,
    mut done: impl FnMut(DocumentResult),
) {
    let (tx, rx) = sync_channel::<Item>(options.render_ahead);
    let files_for_thread = files.to_vec();
    let (mode, worker_command) = (options.mode, options.worker.clone());
    let engine = match recognizer {
        Recognizer::Engine(e) => Some(e.clone()),
        Recognizer::Unavailable(_) => None,
    };
    let renders = engine.is_some();
    let producer = std::thread::spawn(move || {
        let mut worker = Worker::new(worker_command);
        for (doc, path) in files_for_thread.iter().enumerate() {
            let routed = route_document(&mut worker, &Router::Rules, path, None).map(|route| {
                // Every page's text layer: the output of text pages, the fallback of the others.
                let texts = (1..=route.info.pages)
                    .map(|p| worker.text(path, None, p).map(|t| t.text).unwrap_or_default())
                    .collect();
                (route, texts)
            });
            let ocr_pages = match &routed {
                Ok((route, _)) if route.decision.needs_ocr && renders => route.info.pages,
                _ => 0,
            };
            if tx.send(Item::Document { doc, result: routed }).is_err() {
                return;
            }
            for page in 1..=ocr_pages {
                let image = worker.render(path, None, page, mode);
                if tx.send(Item::Page { doc, page, image }).is_err() {
                    return;
                }
            }
        }
    });

    let mut docs: BTreeMap<usize, DocState> = BTreeMap::new();
    let mut next_out = 0;
    let mut in_flight: VecDeque<(usize, usize)> = VecDeque::new();
    for item in rx.iter() {
        match item {
            Item::Document { doc, result } => {
                docs.insert(doc, new_doc_state(files[doc].clone(), result, recognizer));
            }
            Item::Page { doc, page, image } => {
                let engine = engine.as_ref().expect("pages are rendered only with an engine");
                while in_flight.len() >= options.max_in_flight {
                    let (d, p) = in_flight.pop_front().expect("non-empty");
                    if let Some(state) = docs.get_mut(&d) {
                        state.settle(p);
                    }
                }
                let state = docs.get_mut(&doc).expect("a document is announced before its pages");
                let text_layer = match &state.pages[page - 1] {
                    Pending::Done(p) => p.text.clone(),
                    Pending::Running { .. } => unreachable!("each page is rendered once"),
                };
                let started = Instant::now();
                let submitted = image.map_err(|e| e.to_string()).and_then(|img| {
                    engine
                        .submit(
                            &DynamicImage::ImageRgb8(img),
                            &options.instruction,
                            options.params.clone(),
                        )
                        .map_err(|e| format!("{e:#}"))
                });
                state.pages[page - 1] = match submitted {
                    Ok(handle) => {
                        in_flight.push_back((doc, page));
                        Pending::Running {
                            page,
                            text_layer,
                            handle,
                            started,
                        }
                    }
                    Err(error) => Pending::Done(failed_page(page, text_layer, error, started.elapsed().as_secs_f64())),
                };
                state.rendered += 1;
            }
        }
        docs.values_mut().for_each(DocState::poll);
        while docs.get(&next_out).is_some_and(DocState::ready) {
            done(docs.remove(&next_out).expect("checked").into_result());
            next_out += 1;
        }
    }
    let _ = producer.join();
    for (_, state) in std::mem::take(&mut docs) {
        done(state.into_result());
    }
}

fn new_doc_state(
    source: PathBuf,
    routed: Result<(DocumentRoute, Vec<String>), PdfError>,
    recognizer: &Recognizer,
) -> DocState {
    let (route, texts) = match routed {
        Ok(r) => r,
        Err(error) => {
            let result = DocumentResult {
                source,
                route: None,
                pages: Vec::new(),
                error: Some(error),
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
        .enumerate()
        .map(|(i, text)| {
            let page = PageResult {
                page: i + 1,
                route: PageSource::TextLayer,
                text,
                ..placeholder()
            };
            Pending::Done(match (needs_ocr, recognizer) {
                (false, _) => page,
                (true, Recognizer::Unavailable(reason)) => PageResult {
                    route: PageSource::Ocr,
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
        },
        pages,
        to_render,
        rendered: 0,
    }
}
