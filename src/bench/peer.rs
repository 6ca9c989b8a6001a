//! The comparison with HF transformers (`ocr bench --peer transformers`, which runs
//! tests/reference/bench_vs_transformers.py) as a chart: generated tokens/s of vellum, batched
//! and one request at a time (f32, and bf16 and the int8 and bf16 fast modes when they ran), of transformers in each
//! dtype it ran and of llama.cpp's server in each GGUF type (when it ran), from the script's JSON.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::chart::BarChart;

/// The parts of the script's JSON the chart reads.
#[derive(Deserialize)]
struct Results {
    vellum: Vellum,
    vellum_int8: Option<Vellum>,
    vellum_bf16: Option<Vellum>,
    /// `--quantization bf16` (`vellum_bf16` is `--dtype bf16`).
    vellum_bf16_linear: Option<Vellum>,
    /// Per transformers dtype, the seconds its one padded batch took.
    transformers_batched_seconds: BTreeMap<String, f64>,
    /// Per GGUF type (f16, q8_0), llama.cpp's server on the same concurrent requests.
    #[serde(default)]
    llama_cpp: BTreeMap<String, LlamaCpp>,
}

#[derive(Deserialize)]
struct LlamaCpp {
    batched_tokens_per_second: f64,
}

#[derive(Deserialize)]
struct Vellum {
    ocr: Ocr,
}

#[derive(Deserialize)]
struct Ocr {
    requests: usize,
    new_tokens: usize,
    batched_tokens_per_second: f64,
    sequential_tokens_per_second: f64,
}

/// The chart of bench_vs_transformers.py's results (`--out`'s JSON).
pub fn chart(results_json: &str) -> Result<BarChart> {
    let r: Results = serde_json::from_str(results_json).context("not bench_vs_transformers.py's results")?;
    let generated = (r.vellum.ocr.requests * r.vellum.ocr.new_tokens) as f64;
    let mut series = Vec::new();
    for (mode, v) in [
        ("f32", Some(&r.vellum)),
        ("bf16", r.vellum_bf16.as_ref()),
        ("int8", r.vellum_int8.as_ref()),
        ("bf16 linear", r.vellum_bf16_linear.as_ref()),
    ] {
        if let Some(v) = v {
            series.push((
                format!("vellum {mode}, continuous batching"),
                vec![v.ocr.batched_tokens_per_second],
            ));
            series.push((
                format!("vellum {mode}, one at a time"),
                vec![v.ocr.sequential_tokens_per_second],
            ));
        }
    }
    series.extend(
        r.transformers_batched_seconds
            .iter()
            .map(|(dtype, seconds)| (format!("transformers {dtype}, one batch"), vec![generated / seconds])),
    );
    series.extend(r.llama_cpp.iter().map(|(kind, l)| {
        (
            format!("llama.cpp {kind}, parallel slots"),
            vec![l.batched_tokens_per_second],
        )
    }));
    Ok(BarChart {
        title: format!(
            "vellum vs transformers{}: {} requests, {} new tokens each",
            if r.llama_cpp.is_empty() { "" } else { " and llama.cpp" },
            r.vellum.ocr.requests,
            r.vellum.ocr.new_tokens
        ),
        y_label: "generated tokens/s".into(),
        groups: vec!["same model, requests and machine".into()],
        series,
        y_max: None,
        values: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_results_chart_tokens_per_second() {
        let json = r#"{"vellum": {"ocr": {"requests": 16, "new_tokens": 64, "batched_tokens_per_second": 21.2,
            "sequential_tokens_per_second": 17.0}}, "transformers_batched_seconds": {"float32": 35.7}}"#;
        let chart = chart(json).unwrap();
        let values: Vec<f64> = chart.series.iter().map(|(_, v)| v[0]).collect();
        assert_eq!(values, [21.2, 17.0, 16.0 * 64.0 / 35.7]);
        assert!(chart.series[2].0.contains("float32"));
        assert!(super::chart(r#"{"vellum": {}}"#).is_err());

        let json = json.replacen(
            r#""transformers_batched_seconds""#,
            r#""vellum_int8": {"ocr": {"requests": 16, "new_tokens": 64, "batched_tokens_per_second": 40.0,
                "sequential_tokens_per_second": 30.0}}, "transformers_batched_seconds""#,
            1,
        );
        let values: Vec<f64> = super::chart(&json).unwrap().series.iter().map(|(_, v)| v[0]).collect();
        assert_eq!(values, [21.2, 17.0, 40.0, 30.0, 16.0 * 64.0 / 35.7]);

        let json = json.replacen(
            r#""transformers_batched_seconds""#,
            r#""llama_cpp": {"q8_0": {"batched_tokens_per_second": 60.0}, "f16": {"batched_tokens_per_second": 50.0}},
                "transformers_batched_seconds""#,
            1,
        );
        let chart = super::chart(&json).unwrap();
        let values: Vec<f64> = chart.series.iter().map(|(_, v)| v[0]).collect();
        assert_eq!(values, [21.2, 17.0, 40.0, 30.0, 16.0 * 64.0 / 35.7, 50.0, 60.0]);
        assert!(chart.series[6].0.contains("q8_0"));
        assert!(chart.title.contains("llama.cpp"));
    }
}
