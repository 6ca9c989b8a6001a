//! The errors the [`crate::Ocr`] facade returns, by kind, so a caller can match on what went
//! wrong instead of reading a message. Inside the crate, modules report with `anyhow`; the
//! facade sorts what reaches it into these kinds at its edge.

#![warn(missing_docs)]

use std::path::PathBuf;

use crate::engine::EngineError;
use crate::pdf::PdfError;

/// What can go wrong when opening a model or OCRing a document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model is not a directory, not in the HF cache and could not be downloaded.
    #[error("model not found: {reason}")]
    ModelNotFound {
        /// The model as it was given.
        model: String,
        /// Where it was looked for, and why it is not there.
        reason: String,
    },
    /// The model exists but could not be loaded (a bad config, missing tensors, no memory).
    #[error("cannot load the model {model}: {reason}")]
    ModelLoad {
        /// The model as it was given.
        model: String,
        /// What failed.
        reason: String,
    },
    /// A combination the engine does not run (int8 on a GPU, an unknown card, an unknown
    /// architecture, a device this build lacks).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Options that contradict each other or cannot work (a token limit larger than the
    /// context, a KV cache too small for one sequence).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// PDFs are rendered in worker processes and none can be started (libpdfium missing, or
    /// the host did not call [`crate::init`] first in `main`).
    #[error("PDF rendering unavailable: {0}")]
    Pdfium(String),
    /// An input that cannot be read; the error names the file and, where it applies, the page.
    #[error(transparent)]
    Input(#[from] PdfError),
    /// None of the inputs is a PDF or an image.
    #[error("no PDFs or images in {inputs} (looked for {extensions})")]
    NoInputs {
        /// The inputs as given.
        inputs: String,
        /// The file extensions looked for.
        extensions: String,
    },
    /// The model failed on a request, or the request cannot fit the engine.
    #[error(transparent)]
    Generation(#[from] EngineError),
    /// This work was cancelled ([`crate::Ocr::cancel`]).
    #[error("cancelled")]
    Cancelled,
    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with its chain of causes.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// True for errors of the setup (model, options, libraries) rather than of one input: a
    /// run should stop before its first document on these.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            Error::ModelNotFound { .. }
                | Error::ModelLoad { .. }
                | Error::Unsupported(_)
                | Error::InvalidOptions(_)
                | Error::Pdfium(_)
                | Error::NoInputs { .. }
        )
    }
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
