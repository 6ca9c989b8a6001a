//! Generation for one request at a time over a contiguous KV cache: prefill the prompt, then
//! sample token by token until an end token or the token limit.
//!
//! This is the simple form; the paged engine replaces the loop but keeps the contract: the
//! reported log-probability of each token is the raw model log-softmax, before temperature.

use anyhow::Result;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use crate::models::qwen2_5_vl::{Model, PreparedPrompt};
use crate::ops::attention::{AttentionCache, ContiguousKvCache};

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub seed: u64,
    /// Keep generating through end tokens until `max_new_tokens`.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            temperature: 0.0,
            seed: 0,
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: FinishReason,
}

/// Picks the next token from one row of f32 logits; returns it with its raw log-probability.
pub fn sample(logits: &[f32], temperature: f64, rng: &mut StdRng) -> (u32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Accumulate in f64: an f32 sum over a 152k vocabulary drifts by ~1e-4.
    let log_z = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let token = if temperature <= 0.0 {
        // First index of the maximum, as torch.argmax.
        logits.iter().position(|&l| l == max).unwrap_or(0)
    } else {
        let t = temperature as f32;
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
        let total: f32 = weights.iter().sum();
        let mut r = rng.random::<f32>() * total;
        weights
            .iter()
            .position(|&w| {
                r -= w;
                r <= 0.0
            })
            .unwrap_or(weights.len() - 1)
    };
    (token as u32, (logits[token] as f64 - log_z) as f32)
}

/// Runs one prepared prompt to completion.
pub fn generate(
    model: &Model,
    prompt: &PreparedPrompt,
    params: &SamplingParams,
) -> Result<Generation> {
    let mut cache = ContiguousKvCache::new(model.num_layers());
    let image_embeds = model.encode_images(&prompt.pixel_values, &[prompt.grid_thw])?;
    let embeds = model.embed(&prompt.input_ids, Some(&image_embeds))?;
    let last = prompt.input_ids.len() as u32 - 1;
    let mut logits = model.forward(&embeds, &prompt.positions, &mut cache, &[last])?;

    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    let mut finish_reason = FinishReason::Length;
    while tokens.len() < params.max_new_tokens {
        let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        let (token, logprob) = sample(&row, params.temperature, &mut rng);
        tokens.push(token);
        logprobs.push(logprob);
        if !params.ignore_eos && model.stop_token_ids.contains(&token) {
            finish_reason = FinishReason::Stop;
            break;
        }
        if tokens.len() == params.max_new_tokens {
            break;
        }
        let position = cache.len() as i64 + prompt.rope_delta;
        let embeds = model.embed(&[token], None)?;
        let positions = [vec![position], vec![position], vec![position]];
        logits = model.forward(&embeds, &positions, &mut cache, &[0])?;
    }
    let text = model
        .tokenizer
        .decode(&tokens, true)
        .map_err(|e| anyhow::anyhow!("decoding the output: {e}"))?;
    Ok(Generation {
        prompt_tokens: prompt.input_ids.len(),
        tokens,
        logprobs,
        text,
        finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_its_logprob() {
        let mut rng = StdRng::seed_from_u64(0);
        let (t, lp) = sample(&[1.0, 3.0, 3.0, -2.0], 0.0, &mut rng);
        assert_eq!(t, 1);
        let z = (1f32.exp() + 2.0 * 3f32.exp() + (-2f32).exp()).ln();
        assert!((lp - (3.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn sampling_follows_the_tempered_distribution() {
        let mut rng = StdRng::seed_from_u64(7);
        let logits = [0.0f32, (3f32).ln()];
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, 1.0, &mut rng).0 == 1)
            .count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.02, "p(1) = {p}");
        // Temperature 0.5 squares the odds: 9:1. The logprob stays the raw one.
        let (_, lp) = sample(&logits, 0.5, &mut rng);
        assert!(lp == (0.25f32).ln() || lp == (0.75f32).ln());
    }
}
