//! PDFs (and page images) in: rendering to the FinePDFs spec, the text layer, and routing
//! documents to OCR or to their text layer.
//!
//! pdfium is not thread-safe, a render call cannot be interrupted, and malformed files can
//! crash it, so everything that touches pdfium runs in worker processes ([`worker`]): the `ocr`
//! binary re-run with a hidden subcommand. A page that exceeds its time bound, or a worker that
//! dies, costs that page (a typed error naming file and page), never the run.

pub(crate) mod anchor;
pub mod document;
pub mod features;
pub(crate) mod language;
pub mod library;
pub mod pages;
pub mod render;
pub mod route;
pub mod stream;
pub mod worker;
pub mod write;
pub mod xgboost;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong with an input, naming the file and, where it applies, the page
/// (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PdfError {
    #[error("{file}: cannot read the file: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}: neither a PDF nor a supported image (PNG, JPEG, TIFF, WebP): {reason}")]
    UnknownFormat { file: String, reason: String },
    #[error("{file}: not a readable PDF (corrupt or truncated): {reason}")]
    Corrupt { file: String, reason: String },
    #[error("{file}: the PDF is encrypted and {}", if *.password_given { "the password is wrong" } else { "needs a password" })]
    Encrypted { file: String, password_given: bool },
    #[error("{file}: the PDF has no pages")]
    NoPages { file: String },
    #[error("{file}: page {page} does not exist (the document has {pages})")]
    NoSuchPage { file: String, page: usize, pages: usize },
    #[error("{file} page {page}: {reason}")]
    Page { file: String, page: usize, reason: String },
    #[error("{file}{}: took longer than {seconds}s; the worker was stopped", page_suffix(*.page))]
    Timeout {
        file: String,
        page: Option<usize>,
        seconds: f64,
    },
    #[error("{file}{}: the pdfium worker died ({reason})", page_suffix(*.page))]
    WorkerDied {
        file: String,
        page: Option<usize>,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Library { file: String, reason: String },
}

fn page_suffix(page: Option<usize>) -> String {
    page.map(|p| format!(" page {p}")).unwrap_or_default()
}

impl PdfError {
    pub fn file(&self) -> &str {
        match self {
            PdfError::Io { file, .. }
            | PdfError::UnknownFormat { file, .. }
            | PdfError::Corrupt { file, .. }
            | PdfError::Encrypted { file, .. }
            | PdfError::NoPages { file }
            | PdfError::NoSuchPage { file, .. }
            | PdfError::Page { file, .. }
            | PdfError::Timeout { file, .. }
            | PdfError::WorkerDied { file, .. }
            | PdfError::Library { file, .. } => file,
        }
    }
}

/// How a page becomes pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RenderMode {
    /// datatrove's rule for RolmOCR in FinePDFs: a 28-grid box with the longest side at least
    /// 1280 and at most 2048 visual tokens; zoom = the smaller of the two box ratios.
    Finepdfs,
    /// olmOCR's rule: the longest side at `longest` pixels (1288).
    Olmocr { longest: u32 },
    /// A fixed resolution (150 DPI for dataset preparation).
    Dpi { dpi: f32 },
}

/// As the flag is written (`finepdfs`, `olmocr`, `dpi=150`), longest side spelled out.
impl std::fmt::Display for RenderMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderMode::Finepdfs => write!(f, "finepdfs"),
            RenderMode::Olmocr { longest } => write!(f, "olmocr (longest side {longest})"),
            RenderMode::Dpi { dpi } => write!(f, "dpi={dpi}"),
        }
    }
}

impl std::str::FromStr for RenderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "finepdfs" => Ok(RenderMode::Finepdfs),
            "olmocr" => Ok(RenderMode::Olmocr { longest: 1288 }),
            _ => s
                .strip_prefix("dpi=")
                .and_then(|d| d.parse::<f32>().ok())
                .filter(|d| *d > 0.0 && d.is_finite())
                .map(|dpi| RenderMode::Dpi { dpi })
                .ok_or_else(|| format!("unknown render mode {s:?}: use finepdfs, olmocr or dpi=N")),
        }
    }
}
