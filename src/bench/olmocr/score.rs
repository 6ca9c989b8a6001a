//! Scoring one candidate folder as olmocr's `benchmark.py` does: a test's score is the fraction
//! of its page's repeats (`<pdf stem>_pg<page>_repeat<k>.md`) that pass; per type, the mean of
//! the scores; overall, the mean over JSONL files of the share of tests passed by a majority of
//! repeats, with a bootstrap confidence interval resampling tests within each file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use regex::Regex;

use super::checks::Test;
use super::suite::{files_with_extension, Suite};

pub struct TestScore {
    pub id: String,
    pub kind: String,
    /// Fraction of repeats passed.
    pub score: f64,
}

pub struct TypeScore {
    pub score: f64,
    pub tests: usize,
}

pub struct Report {
    /// The candidate folder's name.
    pub name: String,
    pub folder: PathBuf,
    pub tests: Vec<TestScore>,
    pub by_type: BTreeMap<String, TypeScore>,
    /// 0 when there are errors, as `benchmark.py` fails such a candidate.
    pub overall: f64,
    /// 95% bootstrap interval of `overall` (1000 resamples, fixed seed).
    pub ci: (f64, f64),
    /// Missing or unreadable outputs.
    pub errors: Vec<String>,
}

impl Report {
    /// The per-type table `ocr score` prints.
    pub fn table(&self) -> String {
        let mut out = format!("{}\n", self.name);
        out += &format!("  {:<22} {:>6} {:>8}\n", "type", "tests", "score");
        for (kind, t) in &self.by_type {
            let label = if kind == "math" {
                "math (approximate)"
            } else {
                kind.as_str()
            };
            out += &format!("  {:<22} {:>6} {:>7.1}%\n", label, t.tests, t.score * 100.0);
        }
        if self.errors.is_empty() {
            out += &format!(
                "  {:<22} {:>6} {:>7.1}%  (95% CI {:.1}–{:.1}%, mean over JSONL files)\n",
                "overall",
                self.tests.len(),
                self.overall * 100.0,
                self.ci.0 * 100.0,
                self.ci.1 * 100.0
            );
        } else {
            out += &format!(
                "  overall: FAILED ({} errors, scored 0 as benchmark.py does)\n",
                self.errors.len()
            );
            for e in self.errors.iter().take(10) {
                out += &format!("    {e}\n");
            }
        }
        out
    }
}

/// `os.path.splitext(pdf)[0]`.
fn stem(pdf: &str) -> String {
    Path::new(pdf).with_extension("").to_string_lossy().into_owned()
}

/// A PDF's output files as `benchmark.py` finds them: `<stem>_pg<n>_repeat<k>.md`, matched on
/// the path relative to the candidate folder.
fn outputs_of<'a>(pdf: &str, outputs: &'a [String]) -> Vec<&'a str> {
    let pattern = Regex::new(&format!(r"^{}_pg\d+_repeat\d+\.md$", regex::escape(&stem(pdf)))).expect("escaped");
    outputs
        .iter()
        .map(String::as_str)
        .filter(|f| pattern.is_match(f))
        .collect()
}

/// The files of `pdf_outputs` (a PDF's outputs) for `test`'s page.
fn on_page<'a>(test: &Test, pdf_outputs: Vec<&'a str>) -> Vec<&'a str> {
    let page_tag = format!("_pg{}_", test.page);
    pdf_outputs
        .into_iter()
        .filter(|f| f.rsplit('/').next().unwrap_or(f).contains(&page_tag))
        .collect()
}

/// The files of a candidate's `outputs` that `test` is scored on.
pub(super) fn test_outputs<'a>(test: &Test, outputs: &'a [String]) -> Vec<&'a str> {
    on_page(test, outputs_of(&test.pdf, outputs))
}

/// Python's `open(..., encoding="utf-8").read()`: universal newlines.
pub(super) fn read_markdown(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)?.replace("\r\n", "\n").replace('\r', "\n"))
}

pub fn score(suite: &Suite, candidate: &Path) -> Result<Report> {
    if !candidate.is_dir() {
        bail!("candidate folder {} does not exist", candidate.display());
    }
    let name = candidate
        .file_name()
        .map_or_else(|| candidate.display().to_string(), |n| n.to_string_lossy().into_owned());
    let outputs = files_with_extension(candidate, ".md")?;
    let mut errors = Vec::new();
    let mut by_pdf: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for pdf in &suite.pdfs {
        let files = outputs_of(pdf, &outputs);
        if files.is_empty() {
            errors.push(format!(
                "missing outputs for {pdf} (expected {}_pg{{page}}_repeat*.md)",
                stem(pdf)
            ));
        }
        by_pdf.insert(pdf, files);
    }
    let results: Vec<(TestScore, Vec<String>)> = suite
        .tests
        .par_iter()
        .map(|test| {
            let mut errors = Vec::new();
            // A test may name a PDF that is not under pdfs/: its outputs are found all the same.
            let files = by_pdf
                .get(test.pdf.as_str())
                .cloned()
                .unwrap_or_else(|| outputs_of(&test.pdf, &outputs));
            let page_files = on_page(test, files);
            let mut score = 0.0;
            if page_files.is_empty() {
                errors.push(format!(
                    "missing outputs for {} page {} (expected {}_pg{}_repeat*.md)",
                    test.pdf,
                    test.page,
                    stem(&test.pdf),
                    test.page
                ));
            } else {
                let mut passed = 0;
                for file in &page_files {
                    match read_markdown(&candidate.join(file)) {
                        Ok(content) => passed += usize::from(test.run(&content)),
                        Err(e) => errors.push(format!("reading {file}: {e}")),
                    }
                }
                score = passed as f64 / page_files.len() as f64;
            }
            (
                TestScore {
                    id: test.id.clone(),
                    kind: test.kind.clone(),
                    score,
                },
                errors,
            )
        })
        .collect();
    let mut tests = Vec::with_capacity(results.len());
    for (score, test_errors) in results {
        tests.push(score);
        errors.extend(test_errors);
    }
    Ok(aggregate(name, candidate.to_path_buf(), suite, tests, errors))
}

fn aggregate(name: String, folder: PathBuf, suite: &Suite, tests: Vec<TestScore>, errors: Vec<String>) -> Report {
    let mut by_type: BTreeMap<String, TypeScore> = BTreeMap::new();
    // Per JSONL file, in order of appearance: the majority-passed flag of each test.
    let mut groups: Vec<(&str, Vec<f64>)> = Vec::new();
    for (test, group) in tests.iter().zip(&suite.groups) {
        let score = test.score;
        let entry = by_type
            .entry(test.kind.clone())
            .or_insert(TypeScore { score: 0.0, tests: 0 });
        entry.score += score;
        entry.tests += 1;
        let passed = if score > 0.5 { 1.0 } else { 0.0 };
        match groups.iter_mut().find(|(g, _)| g == group) {
            Some((_, flags)) => flags.push(passed),
            None => groups.push((group, vec![passed])),
        }
    }
    for t in by_type.values_mut() {
        t.score /= t.tests as f64;
    }
    let flags: Vec<Vec<f64>> = groups.into_iter().map(|(_, f)| f).collect();
    let (overall, ci) = if errors.is_empty() {
        (mean_of_means(&flags), bootstrap_ci(&flags, 1000, 0.95))
    } else {
        (0.0, (0.0, 0.0))
    };
    Report {
        name,
        folder,
        tests,
        by_type,
        overall,
        ci,
        errors,
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn mean_of_means(groups: &[Vec<f64>]) -> f64 {
    let means: Vec<f64> = groups.iter().filter(|g| !g.is_empty()).map(|g| mean(g)).collect();
    if means.is_empty() {
        0.0
    } else {
        mean(&means)
    }
}

/// olmocr's `calculate_bootstrap_ci` with splits: resample within each group, average the group
/// means, take the percentiles (numpy's linear interpolation).
fn bootstrap_ci(groups: &[Vec<f64>], samples: usize, level: f64) -> (f64, f64) {
    if groups.iter().all(Vec::is_empty) {
        return (0.0, 0.0);
    }
    let mut rng = StdRng::seed_from_u64(0);
    let mut means: Vec<f64> = (0..samples)
        .map(|_| {
            let resampled: Vec<Vec<f64>> = groups
                .iter()
                .map(|g| (0..g.len()).map(|_| g[rng.random_range(0..g.len())]).collect())
                .collect();
            mean_of_means(&resampled)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    (percentile(&means, alpha), percentile(&means, 1.0 - alpha))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The `--json` document of `ocr score`:
/// `{"candidates": {name: {"overall", "by_type": {type: score}, "tests": {id: score}}}}` (a test
/// score is never null: every olmocr test type is evaluated).
pub fn to_json(reports: &[Report]) -> serde_json::Value {
    let candidates: serde_json::Map<String, serde_json::Value> = reports
        .iter()
        .map(|r| {
            let by_type: BTreeMap<&str, f64> = r.by_type.iter().map(|(k, v)| (k.as_str(), v.score)).collect();
            let tests: BTreeMap<&str, f64> = r.tests.iter().map(|t| (t.id.as_str(), t.score)).collect();
            (
                r.name.clone(),
                serde_json::json!({"overall": r.overall, "by_type": by_type, "tests": tests}),
            )
        })
        .collect();
    serde_json::json!({ "candidates": candidates })
}
