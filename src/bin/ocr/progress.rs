//! `ocr run`'s progress on stderr: a bar on a terminal, one line per document otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vellum::engine::Engine;
use vellum::pipeline::run::{RunObserver, RunStats};
use vellum::DocumentResult;

/// A progress bar on a terminal (documents with an ETA; pages and tokens, live from the
/// engine), one line per document otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    engine: Option<Arc<Engine>>,
    quiet: bool,
    started: Instant,
    pages: Arc<std::sync::atomic::AtomicUsize>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn new(engine: Option<Arc<Engine>>, quiet: bool) -> Self {
        Self {
            bar: None,
            engine,
            quiet,
            started: Instant::now(),
            pages: Default::default(),
            ticker: None,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The bar's message: pages finished, tokens generated so far (retries included) and the rate.
fn rates(pages: usize, tokens: u64, secs: f64) -> String {
    format!(
        "{pages} pages, {tokens} tokens ({:.2} pages/s, {:.1} tokens/s)",
        pages as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9)
    )
}

impl RunObserver for Progress {
    fn started(&mut self, stats: &RunStats) {
        let todo = stats.documents_in_shard - stats.documents_already_done;
        if self.quiet {
            return;
        }
        eprintln!(
            "rank {}/{}: {} documents, {} done by an earlier run, {todo} to do",
            stats.rank, stats.world_size, stats.documents_in_shard, stats.documents_already_done
        );
        self.started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(todo as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} documents, {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        // Pages spend minutes in the engine: keep the token count moving meanwhile.
        if let Some(engine) = self.engine.clone() {
            let (bar, pages, started) = (bar.clone(), self.pages.clone(), self.started);
            self.ticker = Some(std::thread::spawn(move || {
                while !bar.is_finished() {
                    let pages = pages.load(std::sync::atomic::Ordering::Relaxed);
                    bar.set_message(rates(
                        pages,
                        engine.stats().generated_tokens,
                        started.elapsed().as_secs_f64(),
                    ));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }));
        }
        self.bar = Some(bar);
    }

    fn document(&mut self, doc: &DocumentResult) {
        let pages = self
            .pages
            .fetch_add(doc.pages.len(), std::sync::atomic::Ordering::Relaxed)
            + doc.pages.len();
        if self.quiet {
            return;
        }
        let tokens = self.engine.as_ref().map_or(0, |e| e.stats().generated_tokens);
        match &self.bar {
            Some(bar) => {
                bar.set_message(rates(pages, tokens, self.started.elapsed().as_secs_f64()));
                bar.inc(1);
            }
            None => {
                // This document's own numbers: its pages' model time, every attempt's tokens.
                let seconds: f64 = doc.pages.iter().map(|p| p.seconds).sum();
                let doc_tokens: usize = doc.pages.iter().map(|p| p.total_generated_tokens).sum();
                let status = match (&doc.error, doc.awaits_model) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => format!("{} pages, pending: needs a model", doc.pages.len()),
                    (None, false) if doc_tokens == 0 => format!("{} pages, text layer", doc.pages.len()),
                    (None, false) => format!("{} pages, {doc_tokens} tokens in {seconds:.1}s", doc.pages.len()),
                };
                eprintln!("{}: {status}", doc.source.display());
            }
        }
    }
}
