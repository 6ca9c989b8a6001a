//! OCR at corpus scale: the document runner (routing, rendering, retries, fallback), the
//! inputs of a run, the share of them this rank owns, page quality checks, and chunked output
//! that resumes after any kill without losing or repeating a document.

pub mod answer;
pub mod card;
pub mod document;
pub(crate) mod quality;
pub mod requests;
pub mod run;
pub mod shard;
pub mod sources;
pub(crate) mod writer;
