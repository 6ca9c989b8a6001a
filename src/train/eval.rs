//! Generated answers scored against references: validation pages run through the engine at once
//! (they batch), each scored by CER and WER. The trainer calls it on the live weights during a
//! run; `ocr eval` calls it on a saved model, optionally with every image blanked to show how
//! much of the score the image earns.

use std::sync::Arc;

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};

use super::data::Dataset;
use super::log::EvalSample;
use super::metrics;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, EngineConfig};
use crate::models::{PreparedPrompt, VisionLanguageModel};

/// What the pages are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Images {
    /// The pages' own images.
    Real,
    /// A white image of each page's size: the answer can only come from the prompt and the
    /// model's priors.
    Blank,
}

/// The first `k` samples of `data` as prompts for `model`.
pub fn prompts(
    model: &dyn VisionLanguageModel,
    data: &Dataset,
    k: usize,
    images: Images,
) -> Result<Vec<PreparedPrompt>> {
    (0..k.min(data.len()))
        .map(|i| {
            let image = data.image(i)?;
            let image = match images {
                Images::Real => image,
                Images::Blank => DynamicImage::ImageRgb8(RgbImage::from_pixel(
                    image.width(),
                    image.height(),
                    image::Rgb([255, 255, 255]),
                )),
            };
            model
                .prepare(&image, &data.samples[i].instruction())
                .with_context(|| format!("sample {} ({})", i, data.samples[i].id))
        })
        .collect()
}

/// An engine with room for these prompts at once, each with `max_new_tokens`, and no more:
/// during training its cache comes out of the memory the steps need.
pub fn engine_for(
    model: Arc<dyn VisionLanguageModel>,
    prompts: &[PreparedPrompt],
    max_new_tokens: usize,
) -> Result<Engine> {
    let longest = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0);
    let mut config = EngineConfig {
        max_context: longest + max_new_tokens,
        ..Default::default()
    };
    config.scheduler.max_num_seqs = prompts.len().max(1);
    Engine::new(model, config)
}

/// Greedy answers to `prompts` (the first samples of `data`, in order), scored.
pub fn generate(
    engine: &Engine,
    data: &Dataset,
    prompts: Vec<PreparedPrompt>,
    max_new_tokens: usize,
) -> Result<Vec<EvalSample>> {
    let params = SamplingParams {
        max_new_tokens: Some(max_new_tokens),
        ..Default::default()
    };
    let handles: Vec<_> = prompts
        .into_iter()
        .map(|p| engine.submit_prepared(p, params.clone(), None))
        .collect();
    handles
        .into_iter()
        .enumerate()
        .map(|(i, handle)| {
            let s = &data.samples[i];
            let g = handle.wait()?;
            Ok(EvalSample {
                image: data.image_path(i),
                reference: s.answer.clone(),
                cer: metrics::cer(&g.text, &s.answer),
                wer: metrics::wer(&g.text, &s.answer),
                output: g.text,
            })
        })
        .collect()
}

/// Mean CER and WER over the samples (None for none).
pub fn means(samples: &[EvalSample]) -> (Option<f64>, Option<f64>) {
    let mean = |f: fn(&EvalSample) -> f64| {
        (!samples.is_empty()).then(|| samples.iter().map(f).sum::<f64>() / samples.len() as f64)
    };
    (mean(|s| s.cer), mean(|s| s.wer))
}
