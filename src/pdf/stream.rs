//! Documents for the engine, through a bounded channel: a thread routes each document, reads
//! its text layer and renders the pages of the documents selected for it. It blocks once `bound`
//! items wait unconsumed, so rendering never runs further ahead of the model than that.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::RgbImage;

use super::pages::PageRanges;
use super::route::{route_document, DocumentRoute, Router};
use super::worker::Worker;
use super::{PdfError, RenderMode};

/// A routed document with each selected page's number and text layer (or why that page's
/// could not be read).
pub type RoutedDocument = (DocumentRoute, Vec<(usize, Result<String, PdfError>)>);

pub enum StreamItem {
    /// Document `doc` (index into the input list) opened and routed, with each selected page's
    /// number and text layer (or why that page's could not be read); or why the document could
    /// not be.
    Document {
        doc: usize,
        result: Result<RoutedDocument, PdfError>,
    },
    /// The `index`-th selected page (number `page`, 1-based) of a document selected for
    /// rendering; follows its `Document`.
    Page {
        doc: usize,
        index: usize,
        page: usize,
        image: Result<RgbImage, PdfError>,
    },
}

pub struct DocumentStream {
    pub items: Receiver<StreamItem>,
    /// Pages rendered so far (consumed or waiting in the channel).
    pub rendered: Arc<AtomicUsize>,
    /// The worker comes back when the stream ends.
    pub thread: JoinHandle<Worker>,
}

/// Streams `files` in order, each with the pages `pages` selects (all without it). `render`
/// picks the routed documents whose pages are rendered in `mode`; with `stop` set, no further
/// document is started.
pub fn document_stream(
    mut worker: Worker,
    files: Vec<PathBuf>,
    pages: Option<PageRanges>,
    mode: RenderMode,
    bound: usize,
    render: impl Fn(&DocumentRoute) -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
) -> DocumentStream {
    let (tx, items) = sync_channel(bound);
    let rendered = Arc::new(AtomicUsize::new(0));
    let counter = rendered.clone();
    let thread = std::thread::spawn(move || {
        for (doc, path) in files.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let route_span = tracing::debug_span!("route", doc).entered();
            let result = route_document(&mut worker, &Router::Rules, path, None).map(|mut route| {
                let selected = match &pages {
                    Some(ranges) => ranges.select(route.info.pages),
                    None => (1..=route.info.pages).collect(),
                };
                let texts: Vec<_> = selected
                    .into_iter()
                    .map(|p| match route.sampled_texts.remove(&p) {
                        Some(text) => (p, Ok(text)),
                        None => (p, worker.text(path, None, p).map(|t| t.text)),
                    })
                    .collect();
                (route, texts)
            });
            drop(route_span);
            let to_render: Vec<usize> = match &result {
                Ok((route, texts)) if render(route) => texts.iter().map(|(p, _)| *p).collect(),
                _ => Vec::new(),
            };
            if tx.send(StreamItem::Document { doc, result }).is_err() {
                break;
            }
            for (index, page) in to_render.into_iter().enumerate() {
                let image = {
                    let _span = tracing::debug_span!("render", doc, page).entered();
                    worker.render(path, None, page, mode)
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if tx
                    .send(StreamItem::Page {
                        doc,
                        index,
                        page,
                        image,
                    })
                    .is_err()
                {
                    return worker;
                }
            }
        }
        worker
    });
    DocumentStream {
        items,
        rendered,
        thread,
    }
}
