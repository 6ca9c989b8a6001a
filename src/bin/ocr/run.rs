//! `ocr run`: flags onto [`vellum::Ocr`] and a corpus run (or `--out -`), then the summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use vellum::pdf::RenderMode;
use vellum::pipeline::run::{Outcome, RunOptions};
use vellum::pipeline::shard::Shard;

use crate::args::{fraction, positive, temperature, warning_flags, with_flags, DeviceArgs, EngineArgs};
use crate::progress::Progress;
use crate::{exit_code, setup, EXIT_INTERRUPTED};

#[derive(clap::Args)]
pub struct RunArgs {
    /// PDFs and page images, folders of them (searched recursively), glob patterns, or manifests
    /// (.txt/.lst: one path per line; .jsonl: {"path": ...} per line).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// A model directory or hub id. A model that cannot be loaded stops the run before it
    /// starts (exit status 4), unless --allow-no-model.
    #[arg(long)]
    model: String,
    /// If the model cannot be had, take the text layers anyway: documents with pages that need
    /// OCR are left pending (listed in <out>/<rank>/pending.txt, not marked done, exit status 5),
    /// and a rerun with a model OCRs exactly those.
    #[arg(long)]
    allow_no_model: bool,
    /// Attempt again the documents whose latest attempt failed (they are in failed/).
    #[arg(long)]
    retry_failed: bool,
    /// The instruction pages are OCR'd with (default: the model card's).
    #[arg(long)]
    prompt: Option<String>,
    /// First attempt's temperature (default: the model card's; 0 is greedy); retries climb
    /// olmOCR's ladder.
    #[arg(long, value_parser = temperature)]
    temperature: Option<f64>,
    /// The model card (prompt, render size, sampling, answer format): rolmocr, olmocr-v0.1,
    /// olmocr-2 or nano-deepseek-ocr. Default: by hub id, else by architecture.
    #[arg(long)]
    card: Option<String>,
    /// Output: <out>/<rank:05>/<chunk:05>.jsonl[.gz], failed/, progress and stats; `-` prints
    /// each document's text to stdout instead (no folder, nothing to resume).
    #[arg(long)]
    out: PathBuf,
    /// Only these pages of each document: 1-based ranges such as 1-3,7,10-.
    #[arg(long)]
    pages: Option<vellum::pdf::pages::PageRanges>,
    /// This task's rank (default: from a Slurm array job, else 0).
    #[arg(long)]
    rank: Option<usize>,
    /// Tasks in the job (default: from a Slurm array job, else 1).
    #[arg(long)]
    world_size: Option<usize>,
    /// Per page; default: what the context leaves after the prompt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[command(flatten)]
    place: DeviceArgs,
    /// finepdfs, olmocr or dpi=N (default: the model card's).
    #[arg(long)]
    mode: Option<RenderMode>,
    /// Documents per output chunk.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    chunk_size: usize,
    /// Write .jsonl.gz chunks.
    #[arg(long)]
    gzip: bool,
    /// Also write <out>/markdown/<id>.md per document.
    #[arg(long)]
    markdown: bool,
    /// Retries of a bad page (olmOCR's temperature ladder) before it falls back to its text layer.
    #[arg(long, default_value_t = 3)]
    max_retries: usize,
    /// A document with a larger share of fallback OCR pages goes to failed/.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    max_bad_page_rate: f64,
    #[command(flatten)]
    engine: EngineArgs,
}

impl RunArgs {
    /// The facade's options as the flags set them.
    fn builder(&self) -> Result<vellum::OcrBuilder> {
        let mut b = self
            .engine
            .apply(self.place.builder(&self.model)?)
            .max_retries(self.max_retries)
            .max_bad_page_rate(self.max_bad_page_rate)
            .allow_missing_model(self.allow_no_model);
        if let Some(card) = &self.card {
            b = b.card(card);
        }
        if let Some(prompt) = &self.prompt {
            b = b.prompt(prompt);
        }
        if let Some(mode) = self.mode {
            b = b.render_mode(mode);
        }
        if let Some(t) = self.temperature {
            b = b.temperature(t);
        }
        if let Some(n) = self.max_new_tokens {
            b = b.max_new_tokens(n);
        }
        if let Some(pages) = &self.pages {
            b = b.pages(pages.clone());
        }
        Ok(b)
    }
}

pub fn run(args: RunArgs, quiet: bool) -> Result<ExitCode> {
    // Everything that can be wrong before the first document: the share, the inputs, the
    // output folder, libpdfium, the options and the model.
    let shard = Shard::resolve(args.rank, args.world_size).map_err(setup)?;
    let sources = vellum::inputs(&args.inputs).map_err(with_flags)?;
    shard.check_folder(&args.out).map_err(setup)?;
    vellum::check_inputs(&sources).map_err(with_flags)?;
    let ocr = args.builder()?.open().map_err(|e| match e {
        e @ (vellum::Error::ModelNotFound { .. } | vellum::Error::ModelLoad { .. }) => setup(anyhow::anyhow!(
            "{e}; the model is needed for scanned pages (--allow-no-model takes text layers and leaves those pending)"
        )),
        e => with_flags(e),
    })?;
    if let Some(reason) = ocr.model_unavailable() {
        eprintln!("warning: {reason}; --allow-no-model: pages that need OCR wait for a model");
    }
    for w in ocr.warnings() {
        eprintln!("warning: {w}{}", warning_flags(w));
    }
    // SIGINT/SIGTERM cancel the run: nothing new starts, pages in the engine are cancelled,
    // finished documents are committed, exit 3. A second one exits at once, which the chunk
    // ledger makes safe.
    let stop = ocr.cancel_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED as i32, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("\nstopping: committing the finished documents (interrupt again to exit now; a rerun continues)");
    });
    if args.out.as_os_str() == "-" {
        return print_documents(&sources, &ocr);
    }
    let options = RunOptions {
        sources,
        out: args.out,
        shard,
        model_name: args.model,
        chunk_size: args.chunk_size,
        gzip: args.gzip,
        markdown: args.markdown,
        max_bad_page_rate: args.max_bad_page_rate,
        retry_failed: args.retry_failed,
    };
    let (out, retry_failed) = (options.out.clone(), options.retry_failed);
    let mut progress = Progress::new(ocr.engine().cloned(), quiet);
    let stats = ocr.run(options, &mut progress)?;
    progress.finish();
    let f = &stats.folder;
    eprintln!(
        "rank {}: this run wrote {} documents ({} to failed/, {} pending), {} pages: {} text layer, {} OCR \
         ({} fell back, {} retried), {} tokens; {:.2} pages/s, {:.1} tokens/s",
        stats.rank,
        stats.documents_written,
        stats.documents_failed,
        stats.documents_pending,
        stats.pages,
        stats.pages_text_layer,
        stats.pages_ocr,
        stats.pages_fallback,
        stats.pages_retried,
        stats.generated_tokens,
        stats.pages_per_second,
        stats.tokens_per_second,
    );
    eprintln!(
        "{}: {} of {} documents done, {} failed{}, {} to do{}",
        out.join(format!("{:05}", stats.rank)).display(),
        f.done,
        f.documents,
        f.failed,
        if f.failed > 0 && !retry_failed {
            " (--retry-failed attempts them again)"
        } else {
            ""
        },
        f.remaining,
        match stats.outcome() {
            Outcome::Interrupted => "; stopped by a signal: rerun the same command to continue",
            _ if f.pending > 0 => "; pending documents wait for a model: rerun with one",
            _ => "",
        }
    );
    Ok(exit_code(stats.outcome()))
}

/// `run --out -`: each document's text on stdout (a form feed between documents), in input
/// order; problems on stderr.
fn print_documents(sources: &[vellum::Source], ocr: &vellum::Ocr) -> Result<ExitCode> {
    use std::io::Write;
    let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
    let (mut failed, mut pending, mut printed) = (0, 0, 0);
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    ocr.documents(&paths, |index, doc| {
        let id = &sources[index].id;
        if let Some(reason) = ocr.failure(&doc) {
            eprintln!("{id}: failed: {reason}");
            failed += 1;
        }
        if doc.awaits_model {
            eprintln!("{id}: pages need OCR and there is no model: their text layer is printed");
            pending += 1;
        }
        let separator = if printed > 0 { "\x0c\n" } else { "" };
        printed += 1;
        if let Err(e) = writeln!(stdout, "{separator}{}", doc.text()) {
            write_error.get_or_insert(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("writing to stdout"));
    }
    Ok(exit_code(Outcome::of(ocr.is_cancelled(), failed, pending)))
}
