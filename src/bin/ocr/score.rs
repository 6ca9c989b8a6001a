//! `ocr score` and `ocr bench olmocr`: olmOCR-Bench candidates written and scored through
//! [`vellum::bench::olmocr`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use vellum::bench::olmocr;

use crate::args::{warning_flags, with_flags, DeviceArgs, EngineArgs};

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The benchmark folder: test *.jsonl files (and pdfs/).
    bench_dir: PathBuf,
    /// Folders of `<pdf stem>_pg<page>_repeat<k>.md` outputs, one per OCR system.
    #[arg(required = true)]
    candidates: Vec<PathBuf>,
    /// Also write the scores as JSON: {"candidates": {name: {overall, by_type, tests}}}.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the report into this folder: scores.png (a chart of the scores) and
    /// report.html (the table, the chart, and every failed test with what it expected and the
    /// nearest the output came).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum BenchSuite {
    /// olmOCR-Bench: write vellum's (and tesseract's) outputs for the PDFs of a benchmark folder,
    /// then score them beside the candidate folders the benchmark already has.
    Olmocr(BenchOlmocrArgs),
}

#[derive(clap::Args)]
pub struct BenchOlmocrArgs {
    /// The benchmark folder: test *.jsonl files, pdfs/, candidate folders.
    bench_dir: PathBuf,
    /// vellum with this model (a directory or hub id), run as `ocr run` runs it; its candidate
    /// folder is vellum_<card>.
    #[arg(long, required_unless_present = "text_layer_only")]
    model: Option<String>,
    /// The model card (default: by hub id, else by architecture).
    #[arg(long, requires = "model")]
    card: Option<String>,
    /// Per page (default: the card's, else what the context leaves).
    #[arg(long, requires = "model")]
    max_new_tokens: Option<usize>,
    /// Retries of a bad page before it falls back to its text layer.
    #[arg(long, default_value_t = 3)]
    max_retries: usize,
    /// vellum's text-layer route alone, no model (with --model it is scored too).
    #[arg(long, conflicts_with = "model")]
    text_layer_only: bool,
    #[command(flatten)]
    place: DeviceArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Also run tesseract on the pages (skipped, with a message, when it is not installed).
    #[arg(long)]
    tesseract: bool,
    /// Where the candidate folders are written (<out>/vellum_text_layer, <out>/tesseract), and
    /// the report on all candidates (<out>/scores.png, <out>/report.html, as `ocr score --report`).
    #[arg(long)]
    out: PathBuf,
    /// Also write the scores as JSON, as `ocr score --json` does.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds a page may take in the pdfium worker.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

fn load_suite(dir: &std::path::Path) -> Result<olmocr::Suite> {
    let suite = olmocr::Suite::load(dir)?;
    if suite.pdfs_from_tests {
        eprintln!(
            "{} has no pdfs/ folder: taking the PDFs the tests name ({})",
            dir.display(),
            suite.pdfs.len()
        );
    }
    Ok(suite)
}

/// Scores each candidate folder, prints its table, and writes the JSON and the report if asked.
fn score_candidates(
    suite: &olmocr::Suite,
    candidates: &[PathBuf],
    json: Option<&std::path::Path>,
    report: Option<&std::path::Path>,
) -> Result<()> {
    let mut reports: Vec<olmocr::Report> = Vec::new();
    for dir in candidates {
        let report = olmocr::score(suite, dir)?;
        if reports.iter().any(|r| r.name == report.name) {
            anyhow::bail!("two candidate folders are named {}", report.name);
        }
        print!("{}", report.table());
        reports.push(report);
    }
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(&olmocr::to_json(&reports))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = report {
        let written = olmocr::report::write(dir, suite, &reports)?;
        eprintln!("report: {}, {}", written.page.display(), written.chart.display());
    }
    Ok(())
}

pub fn score(args: ScoreArgs) -> Result<ExitCode> {
    let suite = load_suite(&args.bench_dir)?;
    score_candidates(&suite, &args.candidates, args.json.as_deref(), args.report.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes vellum's (and tesseract's) candidate folders, then scores them after the benchmark's
/// own candidate folders (every subfolder but pdfs/, as benchmark.py takes them).
pub fn bench_olmocr(args: BenchOlmocrArgs) -> Result<ExitCode> {
    use olmocr::candidates::{self, System};
    let suite = load_suite(&args.bench_dir)?;
    let mut systems = vec![System::TextLayer];
    if args.tesseract {
        if candidates::tesseract_available() {
            systems.push(System::Tesseract);
        } else {
            eprintln!("tesseract is not installed (apt-get install tesseract-ocr): skipping it");
        }
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&args.bench_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "pdfs"))
        .collect();
    folders.sort();
    let mut worker = crate::pdf::worker(args.timeout)?;
    if let Some(spec) = &args.model {
        let mut builder = args
            .engine
            .apply(args.place.builder(spec)?)
            .max_retries(args.max_retries);
        if let Some(card) = &args.card {
            builder = builder.card(card);
        }
        if let Some(n) = args.max_new_tokens {
            builder = builder.max_new_tokens(n);
        }
        let ocr = builder.open().map_err(with_flags)?;
        for w in ocr.warnings() {
            eprintln!("warning: {w}{}", warning_flags(w));
        }
        let card = ocr.card();
        let out = args.out.join(format!("vellum_{}", card.name));
        let started = Instant::now();
        let failed = candidates::write_vellum(&suite, |files, done| Ok(ocr.documents(files, done)?), &out)?;
        eprintln!(
            "vellum ({} card): {} pages in {:.1}s → {}",
            card.name,
            candidates::pages(&suite).len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
        for f in &failed {
            eprintln!("  {f}");
        }
        folders.push(out);
    }
    for system in systems {
        let out = args.out.join(system.name());
        let started = Instant::now();
        let failed = candidates::write(&suite, system, &mut worker, &out)?;
        eprintln!(
            "{}: {} pages in {:.1}s → {}",
            system.name(),
            candidates::pages(&suite).len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
        for f in &failed {
            eprintln!("  failed (scored as a blank page): {f}");
        }
        folders.push(out);
    }
    score_candidates(&suite, &folders, args.json.as_deref(), Some(&args.out))?;
    Ok(ExitCode::SUCCESS)
}
