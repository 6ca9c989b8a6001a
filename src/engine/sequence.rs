//! One request's state in the engine: its prompt, what it generated, how much of it the KV cache
//! holds, and where to send the result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use rand::rngs::StdRng;

use super::block_pool::BlockHash;
use super::kv_cache::SeqId;
use super::sampler::SamplingParams;
use super::RequestResult;
use crate::models::PreparedPrompt;

pub struct Sequence {
    pub id: SeqId,
    pub prompt: PreparedPrompt,
    /// Hashes of the prompt's full KV blocks (prefix sharing).
    pub block_hashes: Vec<BlockHash>,
    pub output: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Tokens (prompt, then output) whose keys/values are in the cache.
    pub num_computed: usize,
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    pub rng: StdRng,
    /// The vision tower's rows for this prompt's image, once computed.
    pub image_embeds: Option<Tensor>,
    pub reply: Sender<RequestResult>,
    pub cancel: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    /// Where each sampled token goes as it comes, for a streaming request.
    pub tokens: Option<Sender<u32>>,
}

impl Sequence {
    pub fn len(&self) -> usize {
        self.prompt.input_ids.len() + self.output.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn token(&self, i: usize) -> u32 {
        let p = self.prompt.input_ids.len();
        if i < p {
            self.prompt.input_ids[i]
        } else {
            self.output[i - p]
        }
    }

    /// The (t, h, w) position of token `i`: the prompt's M-RoPE positions, then one step per
    /// generated token past them.
    pub fn position(&self, i: usize) -> [i64; 3] {
        if i < self.prompt.input_ids.len() {
            self.prompt.positions.at(i)
        } else {
            let p = i as i64 + self.prompt.rope_delta;
            [p, p, p]
        }
    }

    /// The prompt and output so far (what penalties look at).
    pub fn history(&self) -> Vec<u32> {
        let mut h = self.prompt.input_ids.clone();
        h.extend(&self.output);
        h
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
