//! `ocr bench`'s measurements on one model, in order: decode at each batch size, the OCR-like
//! requests batched against one at a time, and for a fast mode its fidelity to the f32 model.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::fidelity::Fidelity;
use super::{decode_rate, engine, ocr_throughput, pages, DecodeRate, OcrThroughput};
use crate::models::VisionLanguageModel;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Batch sizes of the decode measurement.
    pub batches: Vec<usize>,
    /// Tokens each sequence decodes there.
    pub decode_tokens: usize,
    /// Distinct page images of the OCR-like measurement.
    pub requests: usize,
    /// Side of those square images.
    pub image_size: u32,
    /// Tokens each OCR-like request generates.
    pub new_tokens: usize,
    pub prompt: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub decode: Vec<DecodeRate>,
    pub ocr: OcrThroughput,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Fidelity>,
}

/// A fast mode's name and how to open its f32 reference (after the timings, so it is not
/// resident while they run).
pub type Reference<'a> = (&'a str, &'a dyn Fn() -> Result<Arc<dyn VisionLanguageModel>>);

/// Measures `model`; with a reference (the same model in f32), also how closely `model`
/// follows it, teacher forced on the reference's greedy outputs for a few of the same pages.
/// `progress` hears each measurement as it is made.
pub fn measure(
    model: &Arc<dyn VisionLanguageModel>,
    reference: Option<Reference>,
    settings: &Settings,
    mut progress: impl FnMut(&str),
) -> Result<Throughput> {
    let images = pages(settings.requests.max(1), settings.image_size, settings.image_size);
    let mut decode = Vec::new();
    let decoder = engine(model.clone(), settings.batches.iter().copied().max().unwrap_or(1))?;
    let small = pages(1, 56, 56).remove(0);
    for &batch in &settings.batches {
        let rate = decode_rate(&decoder, &small, batch, settings.decode_tokens)?;
        progress(&format!(
            "decode batch {batch:>3}: {:8.1} tokens/s",
            rate.tokens_per_second
        ));
        decode.push(rate);
    }
    drop(decoder);
    let ocr = ocr_throughput(model, &images, &settings.prompt, settings.new_tokens)?;
    progress(&format!(
        "{} OCR-like requests ({:.0} prompt tokens, {} new): batched {:.1}s, one at a time {:.1}s, speedup {:.2}×",
        ocr.requests, ocr.prompt_tokens_mean, ocr.new_tokens, ocr.batched_seconds, ocr.sequential_seconds, ocr.speedup
    ));
    let mut results = Throughput {
        decode,
        ocr,
        quantization: None,
        fidelity: None,
    };
    if let Some((name, open)) = reference {
        let reference = engine(open()?, 1)?;
        let sample = &images[..images.len().min(4)];
        let f = super::fidelity::measure(&reference, &**model, sample, &settings.prompt, settings.new_tokens)?;
        progress(&format!(
            "{name} against f32, teacher forced on {} pages: top-1 agreement {:.1}% of {} positions, \
             chosen-token logprob diff max {:.3} mean {:.4}",
            sample.len(),
            100.0 * f.top1_agreement,
            f.positions,
            f.max_logprob_diff,
            f.mean_logprob_diff
        ));
        results.quantization = Some(name.to_string());
        results.fidelity = Some(f);
    }
    Ok(results)
}
