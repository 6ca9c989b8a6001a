//! How closely a model variant (the int8 fast mode) follows its reference (the f32 model), teacher
//! forced: the candidate scores the reference's greedy continuation in one prefill, and each
//! position counts as agreeing when the candidate's top token is the reference's. With greedy
//! decoding, the first disagreement is where the two outputs would part.

use anyhow::{ensure, Result};
use candle_core::D;
use image::DynamicImage;
use serde::Serialize;

use crate::engine::sampler::SamplingParams;
use crate::engine::Engine;
use crate::models::{embed_rows, VisionLanguageModel};
use crate::ops::attention::ContiguousKvCache;

/// A candidate against its reference over some generated positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Fidelity {
    pub positions: usize,
    /// Share of positions where the candidate's top token is the reference's token.
    pub top1_agreement: f64,
    /// The largest and the mean |candidate − reference| log-probability of the reference's token.
    pub max_logprob_diff: f32,
    pub mean_logprob_diff: f32,
    #[serde(skip)]
    agreeing: usize,
    #[serde(skip)]
    diff_sum: f64,
}

impl Fidelity {
    /// The candidate's scores ([`teacher_forced`]) of the reference's `tokens`, whose own
    /// log-probabilities are `logprobs`; adds to what `self` has counted.
    pub fn add(&mut self, tokens: &[u32], logprobs: &[f32], scored: &[(u32, f32)]) {
        for ((t, r), (top, c)) in tokens.iter().zip(logprobs).zip(scored) {
            let diff = (c - r).abs();
            self.positions += 1;
            self.agreeing += usize::from(t == top);
            self.diff_sum += diff as f64;
            self.max_logprob_diff = self.max_logprob_diff.max(diff);
        }
        if self.positions > 0 {
            self.top1_agreement = self.agreeing as f64 / self.positions as f64;
            self.mean_logprob_diff = (self.diff_sum / self.positions as f64) as f32;
        }
    }
}

/// `model` reading the page and then `tokens` in one prefill: for each token, the model's top
/// token at that position and its log-probability of the given token.
pub fn teacher_forced(
    model: &dyn VisionLanguageModel,
    image: &DynamicImage,
    instruction: &str,
    tokens: &[u32],
) -> Result<Vec<(u32, f32)>> {
    ensure!(!tokens.is_empty(), "nothing to score");
    let prompt = model.prepare(image, instruction)?;
    let image_rows = model.encode_images(&[&prompt.image])?.remove(0);
    let n = prompt.input_ids.len();
    let ids: Vec<u32> = prompt
        .input_ids
        .iter()
        .chain(&tokens[..tokens.len() - 1])
        .copied()
        .collect();
    let embeds = embed_rows(model, |i| ids[i], 0, ids.len(), prompt.image_span(), Some(&image_rows))?;
    let mut positions = prompt.positions.clone();
    for j in 0..tokens.len() - 1 {
        positions.push([(n + j) as i64 + prompt.rope_delta; 3]);
    }
    let rows: Vec<u32> = (n - 1..n - 1 + tokens.len()).map(|r| r as u32).collect();
    let mut cache = ContiguousKvCache::new(model.info().num_layers);
    let logits = model.forward(&embeds, &positions, &mut cache, &rows)?;
    let logprobs = candle_nn::ops::log_softmax(&logits.reshape((tokens.len(), ()))?, D::Minus1)?;
    let top = logprobs.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let logprobs = logprobs.to_vec2::<f32>()?;
    Ok(top
        .into_iter()
        .zip(logprobs)
        .zip(tokens)
        .map(|((top, row), &t)| (top, row[t as usize]))
        .collect())
}

/// `candidate` against the greedy outputs of `reference` (an engine over the reference model)
/// on `pages`, `new_tokens` each.
pub fn measure(
    reference: &Engine,
    candidate: &dyn VisionLanguageModel,
    pages: &[DynamicImage],
    instruction: &str,
    new_tokens: usize,
) -> Result<Fidelity> {
    let mut fidelity = Fidelity::default();
    for page in pages {
        let params = SamplingParams {
            max_new_tokens: Some(new_tokens),
            ignore_eos: true,
            ..Default::default()
        };
        let out = reference.generate(page, instruction, params)?;
        let scored = teacher_forced(candidate, page, instruction, &out.tokens)?;
        fidelity.add(&out.tokens, &out.logprobs, &scored);
    }
    Ok(fidelity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agreement_and_differences_across_additions() {
        let mut f = Fidelity::default();
        f.add(&[1, 2], &[-0.5, -1.0], &[(1, -0.75), (3, -1.0)]);
        f.add(&[4, 5], &[-2.0, -0.1], &[(4, -2.5), (5, -0.1)]);
        assert_eq!(f.positions, 4);
        assert_eq!(f.top1_agreement, 0.75);
        assert_eq!(f.max_logprob_diff, 0.5);
        assert!((f.mean_logprob_diff - 0.1875).abs() < 1e-6, "{}", f.mean_logprob_diff);
    }
}
