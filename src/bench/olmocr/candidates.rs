//! Candidate folders written for a benchmark by systems run here, in olmocr's layout
//! (`<pdf stem>_pg<page>_repeat1.md` for every page a test names): vellum with a model, as
//! `ocr run` runs it (routing, the model card's prompt and render size, retries), vellum's
//! text-layer route, which costs no model, and tesseract, the classic CPU OCR, as a subprocess.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::suite::Suite;
use crate::pdf::worker::Worker;
use crate::pdf::RenderMode;
use crate::pipeline::document::DocumentResult;

#[derive(Clone, Copy)]
pub enum System {
    /// The PDF's own text layer, as `ocr run` keeps it for pages that need no OCR.
    TextLayer,
    /// `tesseract <page.png> stdout` on the page rendered with its longest side at 3300 pixels
    /// (US Letter at 300 DPI; a fixed DPI would make poster-sized pages too large to render).
    Tesseract,
}

impl System {
    /// The candidate folder's name, which `ocr score` reports it under.
    pub fn name(self) -> &'static str {
        match self {
            System::TextLayer => "vellum_text_layer",
            System::Tesseract => "tesseract",
        }
    }
}

/// Whether a `tesseract` binary runs.
pub fn tesseract_available() -> bool {
    Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The (PDF, page) pairs the suite's tests name, each once.
pub fn pages(suite: &Suite) -> Vec<(String, u32)> {
    let mut pages: Vec<(String, u32)> = suite.tests.iter().map(|t| (t.pdf.clone(), t.page)).collect();
    pages.sort();
    pages.dedup();
    pages
}

/// Runs vellum with a model over the suite's PDFs (every document through one engine, so pages
/// batch) and writes each page a test names into `out`; returns the pages that failed or fell
/// back to their text layer, with why.
/// `ocr_documents` OCRs the files it is given as `ocr run` does (the caller's
/// [`crate::Ocr::documents`]), calling back with each document.
pub fn write_vellum(
    suite: &Suite,
    ocr_documents: impl FnOnce(&[std::path::PathBuf], &mut dyn FnMut(usize, DocumentResult)) -> Result<()>,
    out: &Path,
) -> Result<Vec<String>> {
    if suite.pdfs_from_tests {
        bail!(
            "{} has no pdfs/ folder: there is nothing to run OCR on",
            suite.dir.display()
        );
    }
    let wanted = pages(suite);
    let mut pdfs: Vec<String> = wanted.iter().map(|(pdf, _)| pdf.clone()).collect();
    pdfs.dedup();
    let files: Vec<std::path::PathBuf> = pdfs.iter().map(|p| suite.dir.join("pdfs").join(p)).collect();
    let mut texts = std::collections::HashMap::new();
    let mut failed = Vec::new();
    ocr_documents(&files, &mut |index, doc| {
        if let Some(e) = &doc.error {
            failed.push(format!("{}: {e}", pdfs[index]));
        }
        for page in doc.pages {
            if page.fallback {
                failed.push(format!(
                    "{} page {}: fell back to its text layer ({})",
                    pdfs[index],
                    page.page,
                    page.error.as_deref().unwrap_or("")
                ));
            }
            texts.insert((pdfs[index].clone(), page.page as u32), page.text);
        }
    })?;
    for (pdf, page) in wanted {
        let text = texts.remove(&(pdf.clone(), page)).unwrap_or_default();
        let stem = pdf.strip_suffix(".pdf").unwrap_or(&pdf);
        let file = out.join(format!("{stem}_pg{page}_repeat1.md"));
        std::fs::create_dir_all(file.parent().expect("inside out"))?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(failed)
}

/// Writes `system`'s output for every page the tests name into `out`; a page that fails gets an
/// empty file (it scores as a blank page) and its error is returned.
pub fn write(suite: &Suite, system: System, worker: &mut Worker, out: &Path) -> Result<Vec<String>> {
    if suite.pdfs_from_tests {
        bail!(
            "{} has no pdfs/ folder: there is nothing to run OCR on",
            suite.dir.display()
        );
    }
    let scratch = tempfile::tempdir()?;
    let mut failed = Vec::new();
    for (pdf, page) in pages(suite) {
        let path = suite.dir.join("pdfs").join(&pdf);
        let text = match system {
            System::TextLayer => worker
                .text(&path, None, page as usize)
                .map(|t| t.text)
                .map_err(anyhow::Error::from),
            System::Tesseract => worker
                .render(&path, None, page as usize, RenderMode::Olmocr { longest: 3300 })
                .map_err(anyhow::Error::from)
                .and_then(|image| {
                    let png = scratch.path().join("page.png");
                    image.save(&png)?;
                    let run = Command::new("tesseract").arg(&png).arg("stdout").output()?;
                    if !run.status.success() {
                        bail!("tesseract: {}", String::from_utf8_lossy(&run.stderr).trim());
                    }
                    Ok(String::from_utf8_lossy(&run.stdout).into_owned())
                }),
        };
        let text = text.unwrap_or_else(|e| {
            failed.push(format!("{pdf} page {page}: {e:#}"));
            String::new()
        });
        let stem = pdf.strip_suffix(".pdf").unwrap_or(&pdf);
        let file = out.join(format!("{stem}_pg{page}_repeat1.md"));
        std::fs::create_dir_all(file.parent().unwrap())?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(failed)
}
