//! Continuous batching (vLLM v1's scheduler, the policy over the KV-cache mechanism): each step
//! runs the running sequences first — a decode token each, or the next chunk of their prefill —
//! then admits waiting ones, all under a token budget and a sequence limit. When blocks run out,
//! the newest running sequence is preempted: its blocks are freed and it waits to be recomputed.

use std::collections::VecDeque;

use super::kv_cache::{KvCache, SeqId};
use super::sequence::Sequence;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences running at once.
    pub max_num_seqs: usize,
    /// Tokens computed per step (prefill chunks plus decodes).
    pub max_batched_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 64,
            max_batched_tokens: 1024,
        }
    }
}

#[derive(Default)]
pub struct Scheduler {
    waiting: VecDeque<Sequence>,
    /// Oldest admitted first.
    running: Vec<Sequence>,
    pub preemptions: usize,
    /// Prompt tokens found in the prefix cache at admission.
    pub cached_tokens: usize,
}

/// This step's work: run `tokens` tokens of sequence `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub id: SeqId,
    pub tokens: usize,
}

impl Scheduler {
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn schedule(&mut self, cfg: &SchedulerConfig, kv: &mut KvCache) -> Vec<Scheduled> {
        let mut budget = cfg.max_batched_tokens;
        let mut out = Vec::new();
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let (id, computed, remaining) = {
                let s = &self.running[i];
                (s.id, s.num_computed, s.len() - s.num_computed)
            };
            let tokens = remaining.min(budget);
            if kv.grow(id, computed + tokens) {
                out.push(Scheduled { id, tokens });
                budget -= tokens;
                i += 1;
                continue;
            }
            // Out of blocks: give up the newest running sequence (possibly this one) and retry.
            let mut victim = self.running.pop().expect("this sequence is running");
            kv.free(victim.id);
            victim.num_computed = 0;
            self.waiting.push_front(victim);
            self.preemptions += 1;
            preempted = true;
        }
        // Admit only when nothing had to be preempted: the cache is full enough already.
        while !preempted && budget > 0 && self.running.len() < cfg.max_num_seqs {
            let Some(seq) = self.waiting.front_mut() else { break };
            let cached = kv.cached_prefix(&seq.block_hashes, seq.len(), &[seq.prompt.image_span()]);
            let computed = cached.len() * kv.block_size();
            let tokens = (seq.len() - computed).min(budget);
            if !kv.allocate(seq.id, &cached, computed + tokens) {
                break;
            }
            seq.num_computed = computed;
            self.cached_tokens += computed;
            out.push(Scheduled { id: seq.id, tokens });
            budget -= tokens;
            let seq = self.waiting.pop_front().expect("front exists");
            self.running.push(seq);
        }
        out
    }

    /// Queues a new request.
    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq);
    }

    pub fn running_ids(&self) -> Vec<SeqId> {
        self.running.iter().map(|s| s.id).collect()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Every sequence, running ones first.
    pub fn sequences(&self) -> impl Iterator<Item = &Sequence> {
        self.running.iter().chain(&self.waiting)
    }

    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.running.iter().find(|s| s.id == id)
    }

    pub fn get_mut(&mut self, id: SeqId) -> Option<&mut Sequence> {
        self.running.iter_mut().find(|s| s.id == id)
    }

    /// Takes a sequence out of either queue.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            return Some(self.running.remove(i));
        }
        let i = self.waiting.iter().position(|s| s.id == id)?;
        self.waiting.remove(i)
    }
}
