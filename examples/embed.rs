//! OCR images and PDFs in-process through the facade, printing one JSON line per document:
//! the line `ocr run` writes for it (same schema, same text).
//!
//! ```sh
//! cargo run --release --example embed -- [--max-new-tokens N] MODEL INPUT...
//! ```
//!
//! Only public `vellum::` paths: this file builds unchanged as another crate's `main.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: embed [--max-new-tokens N] MODEL INPUT...");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // First: when vellum re-runs this executable as its pdfium worker, it serves and exits here.
    vellum::init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut max_new_tokens = None;
    if args.first().map(String::as_str) == Some("--max-new-tokens") {
        match args.get(1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => max_new_tokens = Some(n),
            None => return usage(),
        }
        args.drain(..2);
    }
    if args.len() < 2 {
        return usage();
    }
    let model = args.remove(0);
    match embed(&model, &args, max_new_tokens) {
        Ok(failed) if failed > 0 => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_setup() { 4 } else { 1 })
        }
    }
}

/// Returns how many documents failed.
fn embed(model: &str, inputs: &[String], max_new_tokens: Option<usize>) -> vellum::Result<usize> {
    let sources = vellum::inputs(inputs)?;
    vellum::check_inputs(&sources)?;
    let mut builder = vellum::Ocr::builder(model);
    if let Some(n) = max_new_tokens {
        builder = builder.max_new_tokens(n);
    }
    let ocr = builder.open()?;
    for warning in ocr.warnings() {
        eprintln!("warning: {warning}");
    }
    let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
    let mut failed = 0;
    ocr.documents(&paths, |index, doc| {
        if ocr.failure(&doc).is_some() {
            failed += 1;
        }
        println!("{}", ocr.record(&sources[index], &doc));
    })?;
    Ok(failed)
}
