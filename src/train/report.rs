//! The run's report: `<out>/report.html` with the loss curves (inline SVG) and the evaluated
//! samples (page image, reference, output, CER), as the fork's eval_to_html.py lays them out.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::log::{EvalLog, StepLog};

/// Safe in text and in quoted attributes alike (`&`, `<`, `>`, `"`, `'`).
fn escape(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

const HISTORY: &str = "history.json";

/// What the report is drawn from, kept with each checkpoint so a resumed run's report keeps
/// the steps and evaluations from before it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub steps: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
}

impl History {
    /// The history saved with the checkpoint in `dir`, as of its `step` steps (empty if none was
    /// saved there).
    pub fn load(dir: &Path, step: usize) -> Result<Self> {
        let path = dir.join(HISTORY);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Self::default());
        };
        let mut history: History =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        history.steps.retain(|s| s.step < step);
        history.evals.retain(|e| e.step <= step);
        Ok(history)
    }

    /// Saves it beside the checkpoint in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HISTORY);
        std::fs::write(&path, serde_json::to_string(self)?).with_context(|| format!("writing {}", path.display()))
    }
}

/// A curve: its label, colour and (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One SVG chart of several series on shared axes.
fn chart(title: &str, series: &[Series]) -> String {
    let (w, h, pad) = (640.0, 280.0, 40.0);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).collect();
    if all.is_empty() {
        return String::new();
    }
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let sx = |x: f64| pad + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0).max(1e-12) * (h - 2.0 * pad);
    let mut svg = format!(
        "<h3>{title}</h3><svg width=\"{w}\" height=\"{h}\" style=\"border:1px solid #ccc\">\
         <text x=\"4\" y=\"{}\" font-size=\"11\">{y1:.3}</text><text x=\"4\" y=\"{}\" font-size=\"11\">{y0:.3}</text>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"11\">step {x0}</text><text x=\"{}\" y=\"{}\" font-size=\"11\">step {x1}</text>",
        pad,
        h - pad,
        h - 8.0,
        w - pad - 60.0,
        h - 8.0
    );
    for (i, (label, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{colour}\">{label}</text>",
            path.join(" "),
            w - 150.0,
            20.0 + 14.0 * i as f64
        );
    }
    svg + "</svg>"
}

/// Writes `<out>/report.html`.
pub fn write(out: &Path, steps: &[StepLog], evals: &[EvalLog]) -> Result<()> {
    let mut html = String::from(
        "<!doctype html><meta charset=\"utf-8\"><title>vellum training report</title>\
         <style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}\
         pre{white-space:pre-wrap;margin:0}img{max-width:320px}</style><h1>Training report</h1>",
    );
    html += &chart(
        "Loss",
        &[
            (
                "train loss",
                "#1f77b4",
                steps.iter().map(|s| (s.step as f64 + 1.0, s.loss)).collect(),
            ),
            (
                "val loss",
                "#d62728",
                evals.iter().map(|e| (e.step as f64, e.val_loss)).collect(),
            ),
        ],
    );
    html += &chart(
        "Learning rate",
        &[(
            "lr",
            "#2ca02c",
            steps.iter().map(|s| (s.step as f64 + 1.0, s.lr)).collect(),
        )],
    );
    let cer: Vec<(f64, f64)> = evals.iter().filter_map(|e| Some((e.step as f64, e.cer?))).collect();
    if !cer.is_empty() {
        html += &chart("CER on generated validation pages", &[("CER", "#9467bd", cer)]);
    }
    if let Some(last) = evals.iter().rev().find(|e| !e.samples.is_empty()) {
        let _ = write!(
            html,
            "<h2>Validation samples at step {} (CER {:.3}, WER {:.3})</h2><table>\
             <tr><th>page</th><th>reference</th><th>output</th><th>CER</th></tr>",
            last.step,
            last.cer.unwrap_or(f64::NAN),
            last.wer.unwrap_or(f64::NAN)
        );
        for s in &last.samples {
            let _ = write!(
                html,
                "<tr><td><img src=\"file://{}\"></td><td><pre>{}</pre></td><td><pre>{}</pre></td><td>{:.3}</td></tr>",
                escape(&s.image.display().to_string()),
                escape(&s.reference),
                escape(&s.output),
                s.cer
            );
        }
        html += "</table>";
    }
    std::fs::write(out.join("report.html"), html)?;
    Ok(())
}
