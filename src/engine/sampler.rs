//! Choosing the next token, per request: greedy or temperature/top-k/top-p sampling with the
//! request's seed, a repetition penalty, DeepSeek-OCR's no-repeat n-gram guard, and masked
//! tokens. Whatever the settings, the reported log-probability is the raw model log-softmax.

use rand::{rngs::StdRng, Rng};
use serde::{Deserialize, Serialize};

use crate::ops::softmax::{kernels, log_sum_exp};

/// Bans a token that would complete an n-gram already seen in the last `window` tokens
/// (DeepSeek-OCR's NoRepeatNGramLogitsProcessor); whitelisted tokens (table cells such as
/// `<td>`, `</td>`) are never banned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoRepeatNgram {
    pub size: usize,
    pub window: usize,
    #[serde(default)]
    pub whitelist: Vec<u32>,
}

/// Ends a sequence whose output has started looping: its last `min_span` or more tokens repeat a
/// period of at most `max_period` tokens at least `min_repeats` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DegenerationStop {
    pub max_period: usize,
    pub min_repeats: usize,
    pub min_span: usize,
}

impl Default for DegenerationStop {
    fn default() -> Self {
        Self {
            max_period: 64,
            min_repeats: 4,
            min_span: 48,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// None: whatever the context leaves after the prompt.
    pub max_new_tokens: Option<usize>,
    /// 0 is greedy.
    pub temperature: f64,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f64,
    pub seed: u64,
    /// > 1 discourages tokens already in the prompt or output (HF/vLLM semantics); 1 disables.
    pub repetition_penalty: f32,
    pub no_repeat_ngram: Option<NoRepeatNgram>,
    pub degeneration_stop: Option<DegenerationStop>,
    /// End tokens besides the model's.
    pub stop_token_ids: Vec<u32>,
    /// Generate through end tokens until `max_new_tokens`.
    pub ignore_eos: bool,
}

impl SamplingParams {
    /// The token budget of a prompt of `prompt_len` tokens in a context of `max_context`.
    pub fn new_token_budget(&self, prompt_len: usize, max_context: usize) -> usize {
        self.max_new_tokens.unwrap_or(max_context.saturating_sub(prompt_len))
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: None,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            repetition_penalty: 1.0,
            no_repeat_ngram: None,
            degeneration_stop: None,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Tokens the n-gram guard bans after `history`.
fn banned_ngram_tokens(history: &[u32], cfg: &NoRepeatNgram) -> Vec<u32> {
    let n = cfg.size;
    if n == 0 || history.len() < n {
        return Vec::new();
    }
    let recent = &history[history.len().saturating_sub(cfg.window)..];
    let prefix = &history[history.len() - (n - 1)..];
    recent
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .filter(|t| !cfg.whitelist.contains(t))
        .collect()
}

/// Picks the next token from one row of raw logits. `history` is the prompt and output so far;
/// `masked` tokens are never chosen. Returns the token and its raw log-probability.
pub fn sample(
    logits: &[f32],
    history: &[u32],
    masked: &[u32],
    params: &SamplingParams,
    rng: &mut StdRng,
) -> (u32, f32) {
    let log_z = log_sum_exp(logits);
    let mut scores = logits.to_vec();
    if params.repetition_penalty != 1.0 {
        let mut seen = history.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = if *s < 0.0 {
                    *s * params.repetition_penalty
                } else {
                    *s / params.repetition_penalty
                };
            }
        }
    }
    let banned = params
        .no_repeat_ngram
        .as_ref()
        .map(|cfg| banned_ngram_tokens(history, cfg))
        .unwrap_or_default();
    for &t in masked.iter().chain(&banned) {
        if let Some(s) = scores.get_mut(t as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
    let token = if params.temperature <= 0.0 {
        // The first maximum, as torch.argmax.
        let max = kernels::max(&scores);
        scores.iter().position(|&s| s == max).unwrap_or(0)
    } else {
        sample_tempered(&scores, params, rng)
    };
    (token as u32, (logits[token] as f64 - log_z) as f32)
}

fn sample_tempered(scores: &[f32], params: &SamplingParams, rng: &mut StdRng) -> usize {
    let t = params.temperature as f32;
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| scores[i].is_finite()).collect();
    if order.is_empty() {
        return 0;
    }
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let max = scores[order[0]];
    let mut weights: Vec<f64> = order.iter().map(|&i| (((scores[i] - max) / t) as f64).exp()).collect();
    if params.top_p < 1.0 {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let keep = weights
            .iter()
            .position(|w| {
                acc += w / total;
                acc >= params.top_p
            })
            .map_or(weights.len(), |i| i + 1);
        weights.truncate(keep);
    }
    let total: f64 = weights.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return order[i];
        }
    }
    order[weights.len() - 1]
}

/// Whether the tail of `output` is one short stretch repeated (see [`DegenerationStop`]).
pub fn is_degenerate(output: &[u32], cfg: &DegenerationStop) -> bool {
    (1..=cfg.max_period).any(|period| {
        let span = (period * cfg.min_repeats).max(cfg.min_span);
        span <= output.len() && {
            let tail = &output[output.len() - span..];
            tail.iter().zip(&tail[period..]).all(|(a, b)| a == b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0)
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_the_raw_logprob() {
        let (t, lp) = sample(&[1.0, 3.0, 3.0, -2.0], &[], &[], &SamplingParams::default(), &mut rng());
        assert_eq!(t, 1);
        let z = (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
        assert!((lp as f64 - (3.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn masks_and_penalties_change_the_choice_not_the_logprob() {
        let logits = [2.0, 1.9, 0.0];
        let (t, lp) = sample(&logits, &[], &[0], &SamplingParams::default(), &mut rng());
        assert_eq!(t, 1);
        let z = log_sum_exp(&logits);
        assert!((lp as f64 - (1.9 - z)).abs() < 1e-6);
        let params = SamplingParams {
            repetition_penalty: 1.1,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &[0], &[], &params, &mut rng()).0, 1);
    }

    #[test]
    fn ngram_guard_bans_repeats_except_whitelisted_tokens() {
        let cfg = NoRepeatNgram {
            size: 3,
            window: 100,
            whitelist: vec![],
        };
        // "5 6 7 ... 5 6" → 7 would repeat the 3-gram (5, 6, 7).
        assert_eq!(banned_ngram_tokens(&[5, 6, 7, 1, 5, 6], &cfg), vec![7]);
        let cfg = NoRepeatNgram {
            whitelist: vec![7],
            ..cfg
        };
        assert!(banned_ngram_tokens(&[5, 6, 7, 1, 5, 6], &cfg).is_empty());
        let cfg = NoRepeatNgram {
            size: 3,
            window: 3,
            whitelist: vec![],
        };
        assert!(
            banned_ngram_tokens(&[5, 6, 7, 1, 5, 6], &cfg).is_empty(),
            "outside the window"
        );
        let params = SamplingParams {
            no_repeat_ngram: Some(NoRepeatNgram {
                size: 2,
                window: 10,
                whitelist: vec![],
            }),
            ..Default::default()
        };
        // After "1 2 1", 2 would repeat the bigram (1, 2): the best token is banned.
        assert_eq!(sample(&[0.0, 1.0, 5.0], &[1, 2, 1], &[], &params, &mut rng()).0, 1);
    }

    #[test]
    fn temperature_top_k_and_top_p_follow_the_distribution() {
        let logits = [0.0f32, 3f32.ln(), -50.0];
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let mut r = StdRng::seed_from_u64(7);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &[], &[], &params, &mut r).0 == 1)
            .count();
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.02);
        let top1 = SamplingParams {
            top_k: 1,
            ..params.clone()
        };
        assert!((0..100).all(|_| sample(&logits, &[], &[], &top1, &mut r).0 == 1));
        let nucleus = SamplingParams { top_p: 0.7, ..params };
        assert!((0..100).all(|_| sample(&logits, &[], &[], &nucleus, &mut r).0 == 1));
    }

    #[test]
    fn degeneration_is_a_repeating_tail() {
        let cfg = DegenerationStop {
            max_period: 8,
            min_repeats: 4,
            min_span: 12,
        };
        let mut looping: Vec<u32> = (0..20).collect();
        for _ in 0..4 {
            looping.extend([7, 8, 9]);
        }
        assert!(is_degenerate(&looping, &cfg));
        assert!(!is_degenerate(&(0..40).collect::<Vec<u32>>(), &cfg));
        assert!(!is_degenerate(&[1, 1, 1], &cfg), "too short to call");
        assert!(is_degenerate(&[4; 12], &cfg));
    }
}
