//! Rendered pages for the engine, through a bounded channel: the rendering thread blocks once
//! `bound` pages wait unconsumed, so rendering never runs further ahead of the model than that.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::RgbImage;

use super::worker::Worker;
use super::{PdfError, RenderMode};

pub enum StreamItem {
    /// Page `page` (1-based) of `pages` of document `doc` (index into the input list).
    Page {
        doc: usize,
        page: usize,
        pages: usize,
        image: Result<RgbImage, PdfError>,
    },
    /// A document that could not be opened at all.
    Document { doc: usize, error: PdfError },
}

pub struct PageStream {
    pub items: Receiver<StreamItem>,
    /// Pages rendered so far (consumed or waiting in the channel).
    pub rendered: Arc<AtomicUsize>,
    pub thread: JoinHandle<Worker>,
}

/// Renders every page of `files` in order with `worker`, at most `bound` pages ahead of the
/// consumer. The worker comes back from the thread when the stream ends.
pub fn render_stream(mut worker: Worker, files: Vec<PathBuf>, mode: RenderMode, bound: usize) -> PageStream {
    let (tx, items) = sync_channel(bound);
    let rendered = Arc::new(AtomicUsize::new(0));
    let counter = rendered.clone();
    let thread = std::thread::spawn(move || {
        for (doc, path) in files.iter().enumerate() {
            let pages = match worker.info(path, None) {
                Ok(info) => info.pages,
                Err(error) => {
                    if tx.send(StreamItem::Document { doc, error }).is_err() {
                        break;
                    }
                    continue;
                }
            };
            for page in 1..=pages {
                let image = worker.render(path, None, page, mode);
                counter.fetch_add(1, Ordering::SeqCst);
                if tx
                    .send(StreamItem::Page {
                        doc,
                        page,
                        pages,
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
    PageStream {
        items,
        rendered,
        thread,
    }
}
