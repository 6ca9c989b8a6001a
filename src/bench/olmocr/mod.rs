//! olmOCR-Bench scoring (allenai/olmocr `olmocr/bench`): the benchmark's tests applied to the
//! markdown each OCR system wrote for its PDFs, with olmocr's semantics, so the numbers are
//! comparable with the published ones.
//!
//! - [`suite`]: the benchmark folder (JSONL tests, PDFs, added baseline tests).
//! - [`checks`]: the test types and what passing each means.
//! - [`mod@score`]: a candidate folder's per-test, per-type and overall scores.
//! - [`candidates`]: candidate folders written here (vellum's text layer, tesseract).
//! - [`report`]: the candidates' scores as a chart and an HTML page of every failed test, with
//!   what it expected and what the output had nearest to it ([`explain`]).
//! - [`normalize`], [`fuzzy`], [`table`] (with [`html`]), [`math`], [`markup`]: the text machinery the
//!   checks share, each a port of the Python it names.
//!
//! Math is approximate (see [`math`]): olmocr compares KaTeX renderings in a browser.

pub mod candidates;
pub mod checks;
pub mod explain;
pub mod fuzzy;
pub mod html;
pub mod markup;
pub mod math;
pub mod normalize;
pub mod report;
pub mod score;
pub mod suite;
pub mod table;

pub use score::{score, to_json, Report};
pub use suite::Suite;
