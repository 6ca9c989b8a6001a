//! One rank's corpus run: its share of the inputs, minus what earlier runs committed, through
//! routing, rendering and the model, into chunked output, with a stats record at the end.
//!
//! Documents are written in the DataTrove Document shape: `{"id", "text", "media": [],
//! "metadata": {"source", "model", "num_pages", "route", "pages", "finish_reasons",
//! "token_counts", "seconds", "error", "failure"}}`; those with a failure go to failed/.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::document::{ocr_documents, DocumentResult, OcrOptions, PageSource, Recognizer};
use super::shard::Shard;
use super::sources::Source;
use super::writer::{ChunkWriter, Work};

pub struct RunOptions {
    /// The documents of the run, all ranks' (see [`super::sources::collect`]).
    pub sources: Vec<Source>,
    pub out: PathBuf,
    pub shard: Shard,
    /// Recorded in every document's metadata.
    pub model_name: String,
    pub chunk_size: usize,
    pub gzip: bool,
    /// Also write `<out>/markdown/<id>.md`.
    pub markdown: bool,
    /// A document with a larger share of fallback OCR pages goes to failed/.
    pub max_bad_page_rate: f64,
    /// Attempt again the documents whose latest outcome is a failure.
    pub retry_failed: bool,
}

/// The rank's output folder after a run, all runs together: what a requeue loop checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FolderState {
    /// Documents in this rank's share.
    pub documents: usize,
    /// Written, not failed.
    pub done: usize,
    /// Their latest attempt failed (in failed/; `--retry-failed` attempts them again).
    pub failed: usize,
    /// Not done yet: they wait for a model (listed in `pending.txt`) or the run was stopped.
    pub remaining: usize,
    /// Waiting for a model.
    pub pending: usize,
    /// The work of every run (retries and re-attempts included).
    pub work: Work,
}

/// What a run did; also written to `<out>/<rank:05>/stats.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub rank: usize,
    pub world_size: usize,
    pub model: String,
    pub documents_in_shard: usize,
    pub documents_already_done: usize,
    /// This run's documents (written and failed) and work.
    pub documents_written: usize,
    pub documents_failed: usize,
    /// Not written: pages of them need OCR and there is no model.
    pub documents_pending: usize,
    pub pages: usize,
    pub pages_text_layer: usize,
    pub pages_ocr: usize,
    pub pages_fallback: usize,
    pub pages_retried: usize,
    /// Every attempt's tokens, retries included.
    pub generated_tokens: usize,
    pub seconds: f64,
    pub pages_per_second: f64,
    pub tokens_per_second: f64,
    /// This process's peak resident memory (VmHWM); the pdfium worker is a process of its own.
    pub peak_rss_bytes: u64,
    /// Stopped through `OcrOptions::stop` before the share was done.
    pub interrupted: bool,
    pub folder: FolderState,
}

/// How a run ended, worst first: what its exit status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by [`crate::Ocr::cancel`] (a signal): rerun to continue.
    Interrupted,
    /// Documents failed (they are in `failed/`).
    Failed,
    /// Documents are left to do: pages wait for a model.
    Pending,
    Done,
}

impl Outcome {
    pub fn of(interrupted: bool, failed: usize, remaining: usize) -> Self {
        if interrupted {
            Outcome::Interrupted
        } else if failed > 0 {
            Outcome::Failed
        } else if remaining > 0 {
            Outcome::Pending
        } else {
            Outcome::Done
        }
    }
}

impl RunStats {
    /// The run's outcome, from the whole share's state (earlier runs included).
    pub fn outcome(&self) -> Outcome {
        Outcome::of(self.interrupted, self.folder.failed, self.folder.remaining)
    }
}

/// Hears about a run as it goes (a progress bar, logs).
pub trait RunObserver {
    /// The share is known: `stats` holds the shard and document counts.
    fn started(&mut self, stats: &RunStats);
    fn document(&mut self, doc: &DocumentResult);
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `<out>/markdown/<id>.md`, keeping only the id's plain path components.
fn markdown_path(out: &Path, id: &str) -> PathBuf {
    let rel: PathBuf = Path::new(id)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    out.join("markdown").join(format!("{}.md", rel.display()))
}

/// The line a document gets in the output: a DataTrove document (id, text, media, metadata).
pub fn document_record(
    source: &Source,
    doc: &DocumentResult,
    model: &str,
    failure: &Option<String>,
) -> serde_json::Value {
    serde_json::json!({
        "id": source.id,
        "text": doc.text(),
        "media": [],
        "metadata": {
            "source": source.path,
            "model": model,
            "num_pages": doc.pages.len(),
            "route": doc.route.as_ref().map(|r| &r.decision),
            "pages": doc.pages,
            "finish_reasons": doc.pages.iter().map(|p| p.finish_reason).collect::<Vec<_>>(),
            "token_counts": {
                "prompt": doc.pages.iter().map(|p| p.prompt_tokens).sum::<usize>(),
                "generated": doc.pages.iter().map(|p| p.generated_tokens).sum::<usize>(),
            },
            "seconds": doc.pages.iter().map(|p| p.seconds).sum::<f64>(),
            "error": doc.error,
            "failure": failure,
        },
    })
}

fn work(doc: &DocumentResult) -> Work {
    Work {
        pages: doc.pages.len(),
        pages_ocr: doc.pages.iter().filter(|p| p.route == PageSource::Ocr).count(),
        pages_fallback: doc.pages.iter().filter(|p| p.fallback).count(),
        pages_retried: doc.pages.iter().filter(|p| p.attempts > 1).count(),
        generated_tokens: doc.pages.iter().map(|p| p.total_generated_tokens).sum(),
    }
}

/// Runs this rank's share. Killed or stopped, the same call later continues where it ended.
pub(crate) fn run(
    options: &RunOptions,
    recognizer: &Recognizer,
    ocr: &OcrOptions,
    observer: &mut dyn RunObserver,
) -> Result<RunStats> {
    let started = Instant::now();
    let mine: Vec<&Source> = options.sources.iter().filter(|s| options.shard.owns(&s.id)).collect();
    options.shard.record(&options.out)?;
    let (mut writer, ledger) = ChunkWriter::open(
        &options.out,
        options.shard.rank,
        options.chunk_size,
        options.gzip,
        options.retry_failed,
    )?;
    let todo: Vec<&Source> = mine.iter().copied().filter(|s| !ledger.done.contains(&s.id)).collect();
    let mut stats = RunStats {
        rank: options.shard.rank,
        world_size: options.shard.world_size,
        model: options.model_name.clone(),
        documents_in_shard: mine.len(),
        documents_already_done: mine.len() - todo.len(),
        ..Default::default()
    };
    observer.started(&stats);
    let paths: Vec<PathBuf> = todo.iter().map(|s| s.path.clone()).collect();
    let mut this_run = Work::default();
    // id → failed, for what this run committed.
    let mut outcomes: Vec<(String, bool)> = Vec::new();
    let mut pending: Vec<&str> = Vec::new();
    let mut write_error = None;
    ocr_documents(&paths, recognizer, ocr, |index, doc| {
        let source = todo[index];
        if write_error.is_some() {
            return;
        }
        observer.document(&doc);
        if doc.awaits_model {
            pending.push(&source.id);
            return;
        }
        let work = work(&doc);
        this_run += work;
        let failure = doc.failure(options.max_bad_page_rate);
        let line = document_record(source, &doc, &options.model_name, &failure);
        let written = writer
            .write(&source.id, &line.to_string(), failure.is_some(), work)
            .and_then(|()| {
                if options.markdown && failure.is_none() {
                    let path = markdown_path(&options.out, &source.id);
                    std::fs::create_dir_all(path.parent().expect("under <out>/markdown"))?;
                    std::fs::write(&path, doc.text())?;
                }
                Ok(())
            });
        match written {
            Ok(()) => outcomes.push((source.id.clone(), failure.is_some())),
            Err(e) => write_error = Some(e),
        }
    });
    if let Some(e) = write_error {
        return Err(e.context(format!("writing the output under {}", options.out.display())));
    }
    writer.commit()?;
    stats.interrupted = ocr.stop.load(Ordering::Relaxed);
    stats.documents_written = outcomes.len();
    stats.documents_failed = outcomes.iter().filter(|(_, f)| *f).count();
    stats.documents_pending = pending.len();
    stats.pages = this_run.pages;
    stats.pages_ocr = this_run.pages_ocr;
    stats.pages_text_layer = this_run.pages - this_run.pages_ocr;
    stats.pages_fallback = this_run.pages_fallback;
    stats.pages_retried = this_run.pages_retried;
    stats.generated_tokens = this_run.generated_tokens;
    stats.seconds = started.elapsed().as_secs_f64();
    stats.pages_per_second = stats.pages as f64 / stats.seconds.max(1e-9);
    stats.tokens_per_second = stats.generated_tokens as f64 / stats.seconds.max(1e-9);
    stats.peak_rss_bytes = peak_rss_bytes();
    stats.folder = folder_state(&mine, ledger, &outcomes, pending.len(), this_run);
    let pending_list = writer.rank_dir().join("pending.txt");
    if pending.is_empty() {
        let _ = std::fs::remove_file(&pending_list);
    } else {
        std::fs::write(&pending_list, pending.join("\n") + "\n")?;
    }
    std::fs::write(
        writer.rank_dir().join("stats.json"),
        serde_json::to_string_pretty(&stats)?,
    )?;
    Ok(stats)
}

/// The share's state: earlier runs' outcomes, overridden by this run's.
fn folder_state(
    mine: &[&Source],
    mut ledger: super::writer::Ledger,
    outcomes: &[(String, bool)],
    pending: usize,
    this_run: Work,
) -> FolderState {
    let ids: std::collections::HashSet<&str> = mine.iter().map(|s| s.id.as_str()).collect();
    for (id, failed) in outcomes {
        ledger.done.insert(id.clone());
        if *failed {
            ledger.failed.insert(id.clone());
        } else {
            ledger.failed.remove(id);
        }
    }
    let failed = ledger.failed.iter().filter(|id| ids.contains(id.as_str())).count();
    let finished = ledger
        .done
        .iter()
        .chain(&ledger.failed)
        .filter(|id| ids.contains(id.as_str()))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut work = ledger.totals;
    work += this_run;
    FolderState {
        documents: mine.len(),
        done: finished - failed,
        failed,
        remaining: mine.len() - finished,
        pending,
        work,
    }
}
