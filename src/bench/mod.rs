//! Throughput measurements shared by `ocr bench` and `benches/engine.rs`: decode tokens/s at a
//! given batch size, and a set of OCR-like requests through continuous batching against the
//! same requests one at a time. Also writes a Qwen2.5-VL-shaped checkpoint with random weights,
//! so benchmarks need nothing downloaded.
//!
//! Quality is measured by [`olmocr`]: olmOCR-Bench's tests scored on OCR outputs; throughput
//! against HF transformers by a reference script, charted by [`peer`]. Both draw [`chart`]s.

pub mod chart;
pub mod fidelity;
pub mod olmocr;
pub mod peer;
pub mod throughput;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use image::DynamicImage;
use serde::Serialize;

use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, EngineConfig};
use crate::models::qwen2_5_vl::{config::Config, text::TextModel, vision::VisionModel};
use crate::models::PreparedPrompt;

/// config.json of the benchmark model: Qwen2.5-VL's layout at about 135M parameters (text
/// 86M: hidden 640, 10 layers, GQA 10:2, head_dim 64; vision 47M: 8 blocks of 640 with
/// windows and two full-attention blocks, the 2×2 merger). Special token ids are those of the
/// test tokenizer (the first 1000 Qwen BPE tokens + the 22 special tokens).
pub const BENCH_CONFIG: &str = r#"{
  "architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "image_token_id": 1012, "video_token_id": 1013, "vision_start_token_id": 1009, "vision_end_token_id": 1010,
  "tie_word_embeddings": false,
  "text_config": {"vocab_size": 32768, "hidden_size": 640, "intermediate_size": 1792, "num_hidden_layers": 10,
    "num_attention_heads": 10, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "eos_token_id": 1002,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]}},
  "vision_config": {"depth": 8, "hidden_size": 640, "intermediate_size": 1708, "num_heads": 10, "in_channels": 3,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [3, 7], "out_hidden_size": 640}
}"#;

/// Writes `config` with random weights (candle's default initialisation, fixed by the model's
/// shapes) to `dir`, with the tokenizer and preprocessor files of `tokenizer_dir`.
pub fn write_random_model(dir: &Path, config: &str, tokenizer_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = Config::from_json(config)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    VisionModel::new(&cfg.vision, None, vb.pp("visual"))?;
    TextModel::new(&cfg.text, vb)?;
    varmap.save(dir.join("model.safetensors"))?;
    std::fs::write(dir.join("config.json"), config)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_dir.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    Ok(())
}

/// `n` page-like images of `width`×`height` pixels (distinct, so no prefix is shared).
pub fn pages(n: usize, width: u32, height: u32) -> Vec<DynamicImage> {
    (0..n)
        .map(|i| {
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
                let ink = (x / 9 + y / 17 + i as u32).is_multiple_of(7) as u8;
                image::Rgb([
                    240 - ink * 200,
                    238 - ink * 190,
                    (x + y + i as u32 * 31) as u8 / 4 + 180,
                ])
            }))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeRate {
    pub batch: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Decode throughput with `batch` sequences: from the moment every sequence has its first
/// token (prefill done) until all have `new_tokens`.
pub fn decode_rate(engine: &Engine, image: &DynamicImage, batch: usize, new_tokens: usize) -> Result<DecodeRate> {
    let prompt = engine.model().prepare(image, "Read this page.")?;
    let params = SamplingParams {
        max_new_tokens: Some(new_tokens),
        ignore_eos: true,
        ..Default::default()
    };
    let base = engine.stats().generated_tokens;
    let handles: Vec<_> = (0..batch)
        .map(|_| engine.submit_prepared(prompt.clone(), params.clone(), None))
        .collect();
    while engine.stats().generated_tokens < base + batch as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let start = Instant::now();
    for h in handles {
        h.wait()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let tokens = batch * (new_tokens - 1);
    Ok(DecodeRate {
        batch,
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct OcrThroughput {
    pub requests: usize,
    pub prompt_tokens_mean: f64,
    pub new_tokens: usize,
    pub batched_seconds: f64,
    pub sequential_seconds: f64,
    pub batched_tokens_per_second: f64,
    pub sequential_tokens_per_second: f64,
    /// sequential time / batched time.
    pub speedup: f64,
}

/// The same requests all at once through one engine (continuous batching), then one at a time
/// through a fresh engine (so no prefix cached by the first pass helps the second).
pub fn ocr_throughput(
    model: &Arc<dyn crate::models::VisionLanguageModel>,
    images: &[DynamicImage],
    instruction: &str,
    new_tokens: usize,
) -> Result<OcrThroughput> {
    let params = SamplingParams {
        max_new_tokens: Some(new_tokens),
        ignore_eos: true,
        ..Default::default()
    };
    let prompts = images
        .iter()
        .map(|i| model.prepare(i, instruction))
        .collect::<Result<Vec<_>>>()?;
    let prompt_tokens_mean = prompts.iter().map(|p| p.input_ids.len()).sum::<usize>() as f64 / prompts.len() as f64;
    let batched = engine(model.clone(), images.len())?;
    let batched_seconds = run_all(&batched, &prompts, &params)?;
    drop(batched);
    let sequential = engine(model.clone(), 1)?;
    let start = Instant::now();
    for p in &prompts {
        sequential.submit_prepared(p.clone(), params.clone(), None).wait()?;
    }
    let sequential_seconds = start.elapsed().as_secs_f64();
    let generated = (images.len() * new_tokens) as f64;
    Ok(OcrThroughput {
        requests: images.len(),
        prompt_tokens_mean,
        new_tokens,
        batched_seconds,
        sequential_seconds,
        batched_tokens_per_second: generated / batched_seconds,
        sequential_tokens_per_second: generated / sequential_seconds,
        speedup: sequential_seconds / batched_seconds,
    })
}

/// A FinePDFs-like page: US Letter as FinePDFs renders it for RolmOCR (980×1268 px, which the
/// Qwen processor makes 35×45 = 1,575 image tokens).
pub const FINEPDFS_PAGE: (u32, u32) = (980, 1268);

/// Output lengths of FinePDFs pages: uniform in 300..=750 tokens.
pub const FINEPDFS_NEW_TOKENS: std::ops::RangeInclusive<usize> = 300..=750;

#[derive(Debug, Clone, Serialize)]
pub struct PromptRate {
    pub pages: usize,
    pub prompt_tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// A production-like run: distinct pages, each with its own output length, all submitted at
/// once to one engine, which batches them continuously.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub pages: usize,
    pub image_size: (u32, u32),
    pub prompt_tokens_mean: f64,
    /// Per page, in submission order (a peer reproduces the run from these).
    pub new_tokens: Vec<usize>,
    pub max_num_seqs: usize,
    pub max_context: usize,
    pub seconds: f64,
    pub pages_per_second: f64,
    pub generated_tokens_per_second: f64,
    /// The same pages with one output token each, on a fresh engine: prompt tokens/s (vision
    /// tower included).
    pub prefill: PromptRate,
    /// Decode tokens/s with `max_num_seqs` sequences.
    pub decode: DecodeRate,
    pub kv_blocks: usize,
    pub kv_block_size: usize,
    /// Share of the cache's blocks in use, sampled every 10 ms during the run.
    pub kv_peak_utilisation: f64,
    pub kv_mean_utilisation: f64,
}

/// `pages` FinePDFs-like pages (Letter size, 300–750 output tokens drawn with `seed`) through
/// an engine of `max_num_seqs` sequences and `max_context` tokens whose KV cache may take
/// `cache_fraction` of the device's free memory.
pub fn finepdfs_workload(
    model: &Arc<dyn crate::models::VisionLanguageModel>,
    pages: usize,
    max_num_seqs: usize,
    max_context: usize,
    cache_fraction: f64,
    seed: u64,
) -> Result<Workload> {
    use rand::{Rng, SeedableRng};
    let (w, h) = FINEPDFS_PAGE;
    let images = self::pages(pages, w, h);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let new_tokens: Vec<usize> = (0..pages).map(|_| rng.random_range(FINEPDFS_NEW_TOKENS)).collect();
    let prompts = images
        .iter()
        .map(|i| model.prepare(i, crate::ROLMOCR_PROMPT))
        .collect::<Result<Vec<_>>>()?;
    let prompt_tokens: usize = prompts.iter().map(|p| p.input_ids.len()).sum();
    let engine_for = |seqs: usize| -> Result<Engine> {
        let mut config = EngineConfig {
            encoder_cache_entries: 0,
            max_context,
            cache: crate::engine::kv_cache::CacheBudget::Auto {
                fraction: cache_fraction,
            },
            ..Default::default()
        };
        config.scheduler.max_num_seqs = seqs;
        Engine::new(model.clone(), config)
    };
    let params = |n: usize| SamplingParams {
        max_new_tokens: Some(n),
        ignore_eos: true,
        ..Default::default()
    };

    let engine = engine_for(max_num_seqs)?;
    let total_blocks = engine.stats().total_blocks;
    let start = Instant::now();
    let mut handles: Vec<_> = prompts
        .iter()
        .zip(&new_tokens)
        .map(|(p, &n)| engine.submit_prepared(p.clone(), params(n), None))
        .collect();
    let (mut peak, mut sum, mut samples) = (0usize, 0usize, 0usize);
    let mut failure = None;
    while !handles.is_empty() {
        handles.retain(|h| match h.try_wait() {
            Some(result) => {
                if let Err(e) = result {
                    failure.get_or_insert(e);
                }
                false
            }
            None => true,
        });
        let s = engine.stats();
        let used = s.total_blocks - s.free_blocks;
        peak = peak.max(used);
        sum += used;
        samples += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(e) = failure {
        return Err(e).context("a benchmark page failed");
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(engine);

    let engine = engine_for(max_num_seqs)?;
    let prefill_seconds = run_all(&engine, &prompts, &params(1))?;
    let small = self::pages(1, 56, 56).remove(0);
    let decode = decode_rate(&engine, &small, max_num_seqs, 64)?;

    Ok(Workload {
        pages,
        image_size: (w, h),
        prompt_tokens_mean: prompt_tokens as f64 / pages as f64,
        max_num_seqs,
        max_context,
        seconds,
        pages_per_second: pages as f64 / seconds,
        generated_tokens_per_second: new_tokens.iter().sum::<usize>() as f64 / seconds,
        new_tokens,
        prefill: PromptRate {
            pages,
            prompt_tokens,
            seconds: prefill_seconds,
            tokens_per_second: prompt_tokens as f64 / prefill_seconds,
        },
        decode,
        kv_blocks: total_blocks,
        kv_block_size: EngineConfig::default().block_size,
        kv_peak_utilisation: peak as f64 / total_blocks as f64,
        kv_mean_utilisation: sum as f64 / samples.max(1) as f64 / total_blocks as f64,
    })
}

/// An engine for benchmarks: no encoder cache (every image runs the tower, as distinct pages
/// do), a cache large enough for the batch.
pub fn engine(model: Arc<dyn crate::models::VisionLanguageModel>, max_num_seqs: usize) -> Result<Engine> {
    let mut config = EngineConfig {
        encoder_cache_entries: 0,
        ..Default::default()
    };
    config.scheduler.max_num_seqs = max_num_seqs;
    config.cache = crate::engine::kv_cache::CacheBudget::Bytes(4 << 30);
    Engine::new(model, config)
}

/// Submits every prompt at once and waits for all: the seconds it took.
fn run_all(engine: &Engine, prompts: &[PreparedPrompt], params: &SamplingParams) -> Result<f64> {
    let start = Instant::now();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit_prepared(p.clone(), params.clone(), None))
        .collect();
    for h in handles {
        h.wait()?;
    }
    Ok(start.elapsed().as_secs_f64())
}
