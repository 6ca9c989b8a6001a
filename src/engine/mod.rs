//! The serving engine: a paged KV cache, a continuous-batching scheduler and a sampler, driven
//! in a thread of its own. Callers in any thread submit prompts (prepared in their own thread)
//! and get a handle per request; each step runs one flat batch of prefill chunks and decode
//! tokens through the model.
//!
//! Each [`Engine`] owns its cache and thread: several can live in one process.

pub(crate) mod block_pool;
pub(crate) mod encoder_cache;
pub mod kv_cache;
pub mod sampler;
pub mod scheduler;
pub(crate) mod sequence;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::Tensor;
use image::DynamicImage;
use rand::SeedableRng;
use serde::Serialize;

use crate::models::{embed_rows, PreparedImage, PreparedPrompt, VisionLanguageModel};
use crate::ops::paged_attention::{PagedAttention, SeqRows};
use encoder_cache::EncoderCache;
use kv_cache::{block_hashes, CacheBudget, CacheShape, KvCache, SeqId};
use sampler::SamplingParams;
use scheduler::{Scheduled, Scheduler, SchedulerConfig};
use sequence::Sequence;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end token.
    Stop,
    /// `max_new_tokens`.
    Length,
    /// The output started looping (degeneration stop).
    Repetition,
    Cancelled,
    /// The request's deadline passed.
    Deadline,
}

/// A finished request, as `ocr generate --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    /// Raw log-softmax of the model's logits at each chosen token.
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
pub enum EngineError {
    #[error("the prompt ({prompt} tokens) plus max_new_tokens ({max_new_tokens}) does not fit the {max_context}-token context")]
    TooLong {
        prompt: usize,
        max_new_tokens: usize,
        max_context: usize,
    },
    #[error(
        "the request needs {needed} KV-cache blocks but the cache holds {available}; give the cache a larger budget"
    )]
    CacheTooSmall { needed: usize, available: usize },
    #[error("model error: {0}")]
    Model(String),
    #[error("the engine has stopped")]
    Stopped,
}

/// What a request ends with.
pub type RequestResult = Result<Generation, EngineError>;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Prompt plus generated tokens, per sequence.
    pub max_context: usize,
    pub block_size: usize,
    pub cache: CacheBudget,
    pub scheduler: SchedulerConfig,
    /// Vision-tower outputs kept, by image hash (retries of a page skip the tower).
    pub encoder_cache_entries: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_context: 8096,
            block_size: 16,
            cache: CacheBudget::Auto { fraction: 0.25 },
            scheduler: SchedulerConfig::default(),
            encoder_cache_entries: 32,
        }
    }
}

/// Counters, as of the end of the last step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub steps: u64,
    pub prompt_tokens_computed: u64,
    pub generated_tokens: u64,
    /// Prompt tokens served from the prefix cache instead of being computed.
    pub cached_prompt_tokens: u64,
    pub images_encoded: u64,
    pub encoder_cache_hits: u64,
    pub preemptions: u64,
    pub free_blocks: usize,
    pub total_blocks: usize,
    pub running: usize,
    pub waiting: usize,
}

struct Submission {
    prompt: PreparedPrompt,
    params: SamplingParams,
    deadline: Option<Instant>,
    reply: Sender<RequestResult>,
    cancel: Arc<AtomicBool>,
    tokens: Option<Sender<u32>>,
}

/// The result of one request, when it comes.
pub struct RequestHandle {
    rx: Receiver<RequestResult>,
    cancel: Arc<AtomicBool>,
}

impl RequestHandle {
    /// Blocks until the request finishes.
    pub fn wait(&self) -> RequestResult {
        self.rx.recv().unwrap_or(Err(EngineError::Stopped))
    }

    /// The result if the request has finished.
    pub fn try_wait(&self) -> Option<RequestResult> {
        self.rx.try_recv().ok()
    }

    /// The result if the request finishes within `timeout`.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<RequestResult> {
        match self.rx.recv_timeout(timeout) {
            Ok(result) => Some(result),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(EngineError::Stopped)),
        }
    }

    /// Stops the request at the next step; its blocks are freed and it finishes as `cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

pub struct Engine {
    model: Arc<dyn VisionLanguageModel>,
    tx: Option<Sender<Submission>>,
    stats: Arc<Mutex<EngineStats>>,
    thread: Option<JoinHandle<()>>,
    config: EngineConfig,
    total_blocks: usize,
}

impl Engine {
    pub fn new(model: Arc<dyn VisionLanguageModel>, config: EngineConfig) -> anyhow::Result<Self> {
        let info = model.info();
        let shape = CacheShape::for_model(info, config.block_size);
        let most_useful = config.scheduler.max_num_seqs * config.max_context.div_ceil(config.block_size);
        let num_blocks = shape.num_blocks(config.cache, most_useful);
        if num_blocks == 0 {
            anyhow::bail!(
                "a KV-cache budget of {} holds no block of {} bytes",
                config.cache,
                shape.bytes_per_block()
            );
        }
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(EngineStats {
            free_blocks: num_blocks,
            total_blocks: num_blocks,
            ..Default::default()
        }));
        let mut core = Core {
            model: model.clone(),
            kv: KvCache::new(shape, num_blocks)?,
            sched: Scheduler::default(),
            encoder_cache: EncoderCache::new(config.encoder_cache_entries),
            stats: stats.clone(),
            counters: EngineStats::default(),
            config: config.clone(),
            next_id: 0,
            outbox: Vec::new(),
        };
        // The engine loop runs on a worker of its own pool, so each parallel op's caller
        // takes part in it instead of sleeping on a latch while two more threads wake.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(candle_core::utils::get_num_threads())
            .thread_name(|i| format!("vellum-engine-{i}"))
            .build()?;
        let thread = std::thread::Builder::new()
            .name("vellum-engine".into())
            .spawn(move || pool.install(move || core.run(rx)))?;
        Ok(Self {
            model,
            tx: Some(tx),
            stats,
            thread: Some(thread),
            config,
            total_blocks: num_blocks,
        })
    }

    pub fn model(&self) -> &Arc<dyn VisionLanguageModel> {
        &self.model
    }

    /// Prepares the prompt in the calling thread and queues it.
    pub fn submit(
        &self,
        image: &DynamicImage,
        instruction: &str,
        params: SamplingParams,
    ) -> anyhow::Result<RequestHandle> {
        let prompt = self.model.prepare(image, instruction)?;
        Ok(self.submit_prepared(prompt, params, None))
    }

    /// Queues a prepared prompt; with a deadline, the request stops there (as `deadline`).
    pub fn submit_prepared(
        &self,
        prompt: PreparedPrompt,
        params: SamplingParams,
        deadline: Option<Instant>,
    ) -> RequestHandle {
        self.queue(prompt, params, deadline, None)
    }

    /// Like [`Engine::submit`], and each token is also sent on the returned channel as soon as
    /// it is sampled (the channel closes when the request finishes).
    pub fn submit_streaming(
        &self,
        image: &DynamicImage,
        instruction: &str,
        params: SamplingParams,
    ) -> anyhow::Result<(RequestHandle, Receiver<u32>)> {
        let prompt = self.model.prepare(image, instruction)?;
        let (tx, rx) = mpsc::channel();
        Ok((self.queue(prompt, params, None, Some(tx)), rx))
    }

    fn queue(
        &self,
        prompt: PreparedPrompt,
        params: SamplingParams,
        deadline: Option<Instant>,
        tokens: Option<Sender<u32>>,
    ) -> RequestHandle {
        let (reply, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let handle = RequestHandle {
            rx,
            cancel: cancel.clone(),
        };
        // Requests that can never run are refused here, before they queue.
        if let Err(e) = self.check(&prompt, &params) {
            let _ = reply.send(Err(e));
            return handle;
        }
        let submission = Submission {
            prompt,
            params,
            deadline,
            reply: reply.clone(),
            cancel,
            tokens,
        };
        if self.tx.as_ref().is_none_or(|tx| tx.send(submission).is_err()) {
            let _ = reply.send(Err(EngineError::Stopped));
        }
        handle
    }

    /// Submits and waits.
    pub fn generate(
        &self,
        image: &DynamicImage,
        instruction: &str,
        params: SamplingParams,
    ) -> anyhow::Result<Generation> {
        Ok(self.submit(image, instruction, params)?.wait()?)
    }

    /// Tokens the KV cache holds, all sequences together.
    pub fn cache_tokens(&self) -> usize {
        self.total_blocks * self.config.block_size
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().expect("stats lock").clone()
    }

    fn check(&self, prompt: &PreparedPrompt, params: &SamplingParams) -> Result<(), EngineError> {
        let (len, max_context) = (prompt.input_ids.len(), self.config.max_context);
        let max_new_tokens = params.new_token_budget(len, max_context);
        if len + max_new_tokens > max_context || max_new_tokens == 0 {
            return Err(EngineError::TooLong {
                prompt: len,
                max_new_tokens,
                max_context,
            });
        }
        let needed = (len + max_new_tokens).div_ceil(self.config.block_size);
        if needed > self.total_blocks {
            return Err(EngineError::CacheTooSmall {
                needed,
                available: self.total_blocks,
            });
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Core {
    model: Arc<dyn VisionLanguageModel>,
    kv: KvCache,
    sched: Scheduler,
    encoder_cache: EncoderCache,
    stats: Arc<Mutex<EngineStats>>,
    counters: EngineStats,
    config: EngineConfig,
    next_id: SeqId,
    /// Results of this step, sent once its stats are published (so a caller who just got a
    /// result sees counters that include it).
    outbox: Vec<(Sender<RequestResult>, RequestResult)>,
}

impl Core {
    fn run(&mut self, rx: Receiver<Submission>) {
        loop {
            if !self.sched.has_work() {
                match rx.recv() {
                    Ok(s) => self.admit(s),
                    Err(_) => return,
                }
            }
            while let Ok(s) = rx.try_recv() {
                self.admit(s);
            }
            self.reap();
            if let Err(e) = self.step() {
                // A failed step fails the requests it ran; the rest go on.
                let ids: Vec<SeqId> = self.sched.running_ids();
                for id in ids {
                    if let Some(seq) = self.sched.remove(id) {
                        self.kv.free(seq.id);
                        self.outbox.push((seq.reply, Err(EngineError::Model(format!("{e:#}")))));
                    }
                }
            }
            self.publish();
            for (reply, result) in self.outbox.drain(..) {
                let _ = reply.send(result);
            }
        }
    }

    fn admit(&mut self, s: Submission) {
        let len = s.prompt.input_ids.len();
        let max_new_tokens = s.params.new_token_budget(len, self.config.max_context);
        let mut image_of = vec![None; len];
        let (a, b) = s.prompt.image_span();
        for slot in &mut image_of[a..b] {
            *slot = Some(s.prompt.image.hash);
        }
        let seq = Sequence {
            id: self.next_id,
            block_hashes: block_hashes(&s.prompt.input_ids, &image_of, self.kv.block_size()),
            prompt: s.prompt,
            output: Vec::new(),
            logprobs: Vec::new(),
            num_computed: 0,
            rng: rand::rngs::StdRng::seed_from_u64(s.params.seed),
            params: s.params,
            max_new_tokens,
            image_embeds: None,
            reply: s.reply,
            cancel: s.cancel,
            deadline: s.deadline,
            tokens: s.tokens,
        };
        self.next_id += 1;
        self.sched.add(seq);
    }

    /// Finishes cancelled and expired requests, freeing their blocks at once.
    fn reap(&mut self) {
        let now = Instant::now();
        let ids: Vec<(SeqId, FinishReason)> = self
            .sched
            .sequences()
            .filter_map(|s| {
                if s.cancelled() {
                    Some((s.id, FinishReason::Cancelled))
                } else if s.deadline.is_some_and(|d| d <= now) {
                    Some((s.id, FinishReason::Deadline))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in ids {
            if let Some(seq) = self.sched.remove(id) {
                self.finish(seq, reason);
            }
        }
    }

    fn finish(&mut self, seq: Sequence, finish_reason: FinishReason) {
        self.kv.free(seq.id);
        // A text that cannot be decoded is an error, never an empty page.
        let result = match self.model.decode(&seq.output) {
            Ok(text) => Ok(Generation {
                prompt_tokens: seq.prompt.input_ids.len(),
                tokens: seq.output,
                logprobs: seq.logprobs,
                text,
                finish_reason,
            }),
            Err(e) => Err(EngineError::Model(format!(
                "decoding the {} generated tokens: {e:#}",
                seq.output.len()
            ))),
        };
        self.outbox.push((seq.reply, result));
    }

    /// Runs the vision tower, in one batch, for scheduled sequences whose chunk reaches image
    /// tokens and whose image is not in the encoder cache.
    fn encode_images(&mut self, scheduled: &[Scheduled]) -> anyhow::Result<()> {
        let _span = tracing::debug_span!("vision").entered();
        self.encoder_cache.next_step();
        let mut missing: Vec<(SeqId, PreparedImage)> = Vec::new();
        for s in scheduled {
            let seq = self.sched.get_mut(s.id).expect("scheduled sequences run");
            let (a, b) = seq.prompt.image_span();
            let reaches_image = seq.num_computed < b && seq.num_computed + s.tokens > a;
            if !reaches_image || seq.image_embeds.is_some() {
                continue;
            }
            if let Some(rows) = self.encoder_cache.get(seq.prompt.image.hash) {
                seq.image_embeds = Some(rows);
                self.counters.encoder_cache_hits += 1;
            } else {
                missing.push((s.id, seq.prompt.image.clone()));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let outputs = self
            .model
            .encode_images(&missing.iter().map(|(_, image)| image).collect::<Vec<_>>())?;
        self.counters.images_encoded += missing.len() as u64;
        for ((id, image), rows) in missing.into_iter().zip(outputs) {
            self.encoder_cache.insert(image.hash, rows.clone());
            self.sched.get_mut(id).expect("running").image_embeds = Some(rows);
        }
        Ok(())
    }

    /// One engine step: schedule → execute → update.
    fn step(&mut self) -> anyhow::Result<()> {
        let scheduled = {
            let _span = tracing::debug_span!("schedule").entered();
            self.sched.schedule(&self.config.scheduler, &mut self.kv)
        };
        if scheduled.is_empty() {
            return Ok(());
        }
        self.encode_images(&scheduled)?;
        let (logits, sampled) = self.execute(&scheduled)?;
        self.update_from_output(&scheduled, &sampled, &logits)
    }

    /// The model over this step's flat batch: each scheduled chunk's embeddings and positions,
    /// attending through the paged cache. Returns the logits of the rows that sample and the
    /// sequences they belong to.
    fn execute(&mut self, scheduled: &[Scheduled]) -> anyhow::Result<(Tensor, Vec<SeqId>)> {
        let _span = tracing::debug_span!("forward", sequences = scheduled.len()).entered();
        let mut pieces = Vec::new();
        let first = self.sched.get(scheduled[0].id).expect("scheduled sequences run");
        let mut positions = first.prompt.positions.empty_like();
        let mut rows = Vec::new();
        let mut logit_rows = Vec::new();
        let mut sampled = Vec::new();
        let mut start = 0;
        for s in scheduled {
            let seq = self.sched.get(s.id).expect("scheduled sequences run");
            let (from, to) = (seq.num_computed, seq.num_computed + s.tokens);
            pieces.push(embed_rows(
                self.model.as_ref(),
                |j| seq.token(j),
                from,
                to,
                seq.prompt.image_span(),
                seq.image_embeds.as_ref(),
            )?);
            for p in from..to {
                positions.push(seq.position(p));
            }
            rows.push((start, s.tokens, from, self.kv.block_table(s.id).to_vec()));
            if to == seq.len() {
                logit_rows.push((start + s.tokens - 1) as u32);
                sampled.push(s.id);
            }
            start += s.tokens;
        }
        let embeds = Tensor::cat(&pieces, 0)?;
        let seqs = rows
            .iter()
            .map(|(start, len, context, blocks)| SeqRows {
                start: *start,
                len: *len,
                context: *context,
                blocks,
            })
            .collect();
        let mut attention = PagedAttention::new(&mut self.kv.storage, seqs);
        let logits = self.model.forward(&embeds, &positions, &mut attention, &logit_rows)?;
        Ok((logits, sampled))
    }

    /// Applies a step's output: advance the computed prefix (registering full blocks for
    /// prefix sharing), sample a token for each sequence that reached its end, and finish the
    /// sequences that stop.
    fn update_from_output(
        &mut self,
        scheduled: &[Scheduled],
        sampled: &[SeqId],
        logits: &Tensor,
    ) -> anyhow::Result<()> {
        let _span = tracing::debug_span!("sample", sequences = sampled.len()).entered();
        for s in scheduled {
            let seq = self.sched.get_mut(s.id).expect("running");
            let prompt_len = seq.prompt.input_ids.len();
            self.counters.prompt_tokens_computed += (seq.num_computed + s.tokens)
                .min(prompt_len)
                .saturating_sub(seq.num_computed) as u64;
            seq.num_computed += s.tokens;
            self.kv
                .register_full_blocks(seq.id, &seq.block_hashes, seq.num_computed);
        }
        let masked = self.model.info().masked_token_ids.clone();
        let stops = self.model.info().stop_token_ids.clone();
        for (row, id) in sampled.iter().enumerate() {
            let values: Vec<f32> = logits.get(row)?.to_vec1()?;
            let seq = self.sched.get_mut(*id).expect("running");
            let (token, logprob) = sampler::sample(&values, &seq.history(), &masked, &seq.params, &mut seq.rng);
            seq.output.push(token);
            seq.logprobs.push(logprob);
            if let Some(tx) = &seq.tokens {
                let _ = tx.send(token);
            }
            self.counters.generated_tokens += 1;
            if let Some(reason) = check_stop(seq, token, &stops) {
                let seq = self.sched.remove(*id).expect("running");
                self.finish(seq, reason);
            }
        }
        self.counters.steps += 1;
        Ok(())
    }

    fn publish(&mut self) {
        let mut stats = self.stats.lock().expect("stats lock");
        *stats = EngineStats {
            preemptions: self.sched.preemptions as u64,
            cached_prompt_tokens: self.sched.cached_tokens as u64,
            free_blocks: self.kv.num_free_blocks(),
            total_blocks: self.kv.num_blocks(),
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting(),
            ..self.counters.clone()
        };
    }
}

/// Why `seq` ends after emitting `token`, if it does: an end token (unless told to ignore
/// them), its token budget, or degenerate repetition.
fn check_stop(seq: &Sequence, token: u32, stops: &[u32]) -> Option<FinishReason> {
    let p = &seq.params;
    if !p.ignore_eos && (stops.contains(&token) || p.stop_token_ids.contains(&token)) {
        Some(FinishReason::Stop)
    } else if seq.output.len() >= seq.max_new_tokens {
        Some(FinishReason::Length)
    } else if p
        .degeneration_stop
        .as_ref()
        .is_some_and(|d| sampler::is_degenerate(&seq.output, d))
    {
        Some(FinishReason::Repetition)
    } else {
        None
    }
}
