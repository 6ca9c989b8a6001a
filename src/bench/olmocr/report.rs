//! A scoring run's report, for people choosing between the candidates: `scores.png`, every
//! candidate's per-type and overall scores as a bar chart, and `report.html`, one self-contained
//! page (the chart embedded) with the score table and, per candidate, every test it failed
//! (scored below 1) with what the test expected and the nearest its output came ([`explain`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use rayon::prelude::*;

use super::checks::Test;
use super::explain::{explain, Part};
use super::score::{read_markdown, test_outputs, Report};
use super::suite::{files_with_extension, Suite};
use crate::bench::chart::BarChart;

pub struct Written {
    pub chart: PathBuf,
    pub page: PathBuf,
}

/// Writes `dir/scores.png` and `dir/report.html` for `reports`, each scored on `suite`.
pub fn write(dir: &Path, suite: &Suite, reports: &[Report]) -> Result<Written> {
    ensure!(!reports.is_empty(), "no candidates to report on");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let png = chart(reports).png()?;
    let chart = dir.join("scores.png");
    std::fs::write(&chart, &png).with_context(|| format!("writing {}", chart.display()))?;
    let mut html = head(suite, reports, &png);
    for (index, report) in reports.iter().enumerate() {
        html += &failures(index, suite, report)?;
    }
    html += "</body>\n</html>\n";
    let page = dir.join("report.html");
    std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
    Ok(Written { chart, page })
}

/// The test types the candidates were scored on, in the table's order.
fn kinds(reports: &[Report]) -> Vec<&str> {
    let mut kinds: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.by_type.keys())
        .map(String::as_str)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn kind_label(kind: &str) -> &str {
    if kind == "math" {
        "math (approx.)"
    } else {
        kind
    }
}

fn chart(reports: &[Report]) -> BarChart {
    let kinds = kinds(reports);
    let mut groups: Vec<String> = kinds.iter().map(|k| kind_label(k).to_string()).collect();
    groups.push("overall".into());
    let series = reports
        .iter()
        .map(|r| {
            let mut values: Vec<f64> = kinds
                .iter()
                .map(|k| r.by_type.get(*k).map_or(0.0, |t| t.score * 100.0))
                .collect();
            values.push(r.overall * 100.0);
            (r.name.clone(), values)
        })
        .collect();
    BarChart {
        title: "olmOCR-Bench: score by test type".into(),
        y_label: "score (%)".into(),
        groups,
        series,
        y_max: Some(100.0),
        values: false,
    }
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; }
.label { color: #555; font-size: 0.9em; display: block; }
.text { white-space: pre-wrap; font-family: monospace; background: #f4f4f4; display: block; }
img { max-width: 100%; }";

/// The page up to the candidates' failures: the score table and the chart.
fn head(suite: &Suite, reports: &[Report], png: &[u8]) -> String {
    let kinds = kinds(reports);
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>olmOCR-Bench report</title>\n\
         <style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>olmOCR-Bench: {}</h1>\n\
         <p>{} tests on {} PDFs. A test's score is the fraction of its output's repeats that pass; \
         a type's, the mean of its tests'; overall, the mean over the JSONL files of the share of \
         tests passed by a majority of repeats, with its 95% bootstrap interval. Math is \
         approximate: equations are compared as LaTeX tokens, where olmocr compares KaTeX \
         renderings.</p>\n<table class=\"scores\">\n<tr><th>candidate</th><th>overall</th>",
        text(&suite.dir.display().to_string()),
        suite.tests.len(),
        suite.pdfs.len()
    );
    for kind in &kinds {
        let tests = reports[0].by_type.get(*kind).map_or(0, |t| t.tests);
        let _ = write!(html, "<th>{} ({tests})</th>", text(kind_label(kind)));
    }
    html += "</tr>\n";
    for (index, r) in reports.iter().enumerate() {
        let overall = if r.errors.is_empty() {
            format!("{:.1} ({:.1}–{:.1})", r.overall * 100.0, r.ci.0 * 100.0, r.ci.1 * 100.0)
        } else {
            format!("0 ({} errors)", r.errors.len())
        };
        let _ = write!(
            html,
            "<tr><td><a href=\"#candidate-{index}\">{}</a></td><td class=\"num\">{overall}</td>",
            text(&r.name)
        );
        for kind in &kinds {
            let score = r
                .by_type
                .get(*kind)
                .map_or(String::new(), |t| format!("{:.1}", t.score * 100.0));
            let _ = write!(html, "<td class=\"num\">{score}</td>");
        }
        html += "</tr>\n";
    }
    let _ = write!(
        html,
        "</table>\n<img src=\"data:image/png;base64,{}\" alt=\"scores by test type, one bar per candidate\">\n",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    html
}

fn parts(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| {
            let body = if p.text.is_empty() {
                String::new()
            } else {
                format!("<span class=\"text\">{}</span>", text(&p.text))
            };
            format!("<span class=\"label\">{}</span>{body}", text(&p.label))
        })
        .collect()
}

/// What a failed test expected and what the first output it fails on had nearest to it, as
/// table cells; the page's outputs as the score read them.
fn failure_cells(test: &Test, folder: &Path, outputs: &[String]) -> (String, String) {
    let mut unreadable = Vec::new();
    for file in test_outputs(test, outputs) {
        match read_markdown(&folder.join(file)) {
            Ok(content) if !test.run(&content) => {
                let why = explain(test, &content);
                let source = format!("<span class=\"label\">in {}</span>", text(file));
                return (parts(&why.expected), source + &parts(&why.nearest));
            }
            Ok(_) => {}
            Err(e) => unreadable.push(format!("{file}: {e}")),
        }
    }
    // No output it fails on: the page's outputs are missing or unreadable.
    let why = if unreadable.is_empty() {
        "no output for this page".to_string()
    } else {
        format!("unreadable: {}", unreadable.join("; "))
    };
    (String::new(), format!("<span class=\"label\">{}</span>", text(&why)))
}

/// A candidate's section: its errors and a row for every test it scored below 1.
fn failures(index: usize, suite: &Suite, report: &Report) -> Result<String> {
    ensure!(
        report.tests.len() == suite.tests.len() && suite.tests.iter().zip(&report.tests).all(|(t, s)| t.id == s.id),
        "{} was scored on other tests than {}'s",
        report.name,
        suite.dir.display()
    );
    let outputs = files_with_extension(&report.folder, ".md")?;
    let failed: Vec<(&Test, f64)> = suite
        .tests
        .iter()
        .zip(&report.tests)
        .filter(|(_, s)| s.score < 1.0)
        .map(|(t, s)| (t, s.score))
        .collect();
    let rows: Vec<String> = failed
        .par_iter()
        .map(|&(test, score)| {
            let (expected, nearest) = failure_cells(test, &report.folder, &outputs);
            format!(
                "<tr data-test=\"{}\"><td>{}</td><td>{}</td><td>{}, page {}</td><td class=\"num\">{score:.2}</td>\
                 <td>{expected}</td><td>{nearest}</td></tr>\n",
                attr(&test.id),
                text(&test.id),
                text(&test.kind),
                text(&test.pdf),
                test.page
            )
        })
        .collect();
    let mut html = format!(
        "<section class=\"candidate\" id=\"candidate-{index}\" data-candidate=\"{}\">\n\
         <h2>{}: {} of {} tests failed</h2>\n",
        attr(&report.name),
        text(&report.name),
        failed.len(),
        report.tests.len()
    );
    if !report.errors.is_empty() {
        html += "<p>Outputs missing or unreadable (overall scored 0, as benchmark.py does):</p>\n<ul>\n";
        for e in &report.errors {
            let _ = writeln!(html, "<li>{}</li>", text(e));
        }
        html += "</ul>\n";
    }
    if !rows.is_empty() {
        html += "<table class=\"failures\">\n<tr><th>test</th><th>type</th><th>PDF</th><th>score</th>\
                 <th>expected</th><th>nearest in the output</th></tr>\n";
        html.extend(rows);
        html += "</table>\n";
    }
    html += "</section>\n";
    Ok(html)
}
