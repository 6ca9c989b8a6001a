//! The engine on a tiny Qwen2.5-VL (fixtures from tests/reference/make_qwen2_5_vl_fixtures.py):
//! batch invariance against single runs and transformers, preemption under a small cache without
//! leaking blocks, prefix and vision-output reuse on retries, cancellation, deadlines, refusal
//! of requests that cannot fit.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use image::DynamicImage;
use vellum::engine::kv_cache::CacheBudget;
use vellum::engine::sampler::SamplingParams;
use vellum::engine::scheduler::SchedulerConfig;
use vellum::engine::{Engine, EngineConfig, EngineError, FinishReason};
use vellum::hub::ModelFiles;
use vellum::models::qwen2_5_vl::Model;
use vellum::models::VisionLanguageModel;

fn model_dir() -> PathBuf {
    common::fixtures().join("models/gqa_window4")
}

fn model() -> Arc<dyn VisionLanguageModel> {
    Arc::new(
        Model::load(
            &ModelFiles::from_dir(&model_dir().join("model")).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
    )
}

fn engine(
    model: &Arc<dyn VisionLanguageModel>,
    cache: CacheBudget,
    max_num_seqs: usize,
    max_batched_tokens: usize,
) -> Engine {
    let config = EngineConfig {
        cache,
        scheduler: SchedulerConfig {
            max_num_seqs,
            max_batched_tokens,
        },
        ..Default::default()
    };
    Engine::new(model.clone(), config).unwrap()
}

struct Req {
    image: DynamicImage,
    prompt: String,
    max_new_tokens: usize,
    /// transformers' greedy tokens, for the fixture cases.
    reference: Option<Vec<u32>>,
}

/// 16 requests: the three fixture cases, and 13 more with other image sizes, prompts and lengths.
fn requests() -> Vec<Req> {
    let dir = model_dir();
    let mut out = Vec::new();
    for name in ["page_140x196", "downscaled_333x250", "tall_60x300"] {
        let meta = common::read_json(dir.join(format!("{name}.expected.json")));
        out.push(Req {
            image: image::open(dir.join(meta["image"].as_str().unwrap())).unwrap(),
            prompt: meta["prompt"].as_str().unwrap().to_string(),
            max_new_tokens: 32,
            reference: Some(common::u32s(&meta["greedy_tokens"])),
        });
    }
    let sizes = [
        (56, 56),
        (300, 100),
        (90, 140),
        (28, 200),
        (240, 180),
        (120, 60),
        (77, 93),
        (400, 50),
        (64, 256),
        (150, 150),
        (33, 44),
        (210, 98),
        (180, 300),
    ];
    for (i, (w, h)) in sizes.into_iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + i as u32 * 13) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        });
        out.push(Req {
            image: DynamicImage::ImageRgb8(img),
            prompt: [
                "Read this page.",
                vellum::ROLMOCR_PROMPT,
                "OCR.",
                "Convert this table to HTML.",
            ][i % 4]
                .to_string(),
            max_new_tokens: 5 + 7 * (i % 5),
            reference: None,
        });
    }
    out
}

fn params(r: &Req) -> SamplingParams {
    SamplingParams {
        max_new_tokens: Some(r.max_new_tokens),
        ignore_eos: true,
        ..Default::default()
    }
}

/// Each request's tokens when it runs alone.
fn alone(model: &Arc<dyn VisionLanguageModel>, reqs: &[Req]) -> Vec<Vec<u32>> {
    let e = engine(model, CacheBudget::Blocks(512), 1, 4096);
    reqs.iter()
        .map(|r| e.generate(&r.image, &r.prompt, params(r)).unwrap().tokens)
        .collect()
}

#[test]
fn a_batch_of_16_mixed_requests_gives_each_its_solo_tokens() {
    let model = model();
    let reqs = requests();
    let solo = alone(&model, &reqs);
    for (r, s) in reqs.iter().zip(&solo) {
        if let Some(reference) = &r.reference {
            assert_eq!(s, reference, "solo run differs from transformers");
        }
    }
    // Small token budget: prefills go in chunks, mixed with other sequences' decodes.
    let e = engine(&model, CacheBudget::Blocks(512), 16, 96);
    let mut handles = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        handles.push(e.submit(&r.image, &r.prompt, params(r)).unwrap());
        if i % 5 == 4 {
            // Later arrivals join while earlier ones are mid-flight.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    for (i, (h, s)) in handles.into_iter().zip(&solo).enumerate() {
        let out = h.wait().unwrap();
        assert_eq!(&out.tokens, s, "request {i}: batched tokens differ from its solo run");
        assert_eq!(out.finish_reason, FinishReason::Length);
    }
    let stats = e.stats();
    assert_eq!(stats.free_blocks, stats.total_blocks, "blocks leaked");
    assert!(
        stats.steps < solo.iter().map(|t| t.len() as u64).sum::<u64>(),
        "requests were batched"
    );
}

#[test]
fn preemption_under_a_small_cache_completes_everything_and_leaks_nothing() {
    let model = model();
    let reqs: Vec<Req> = requests().into_iter().take(10).collect();
    let solo = alone(&model, &reqs);
    // Each request needs up to 9 blocks of 16 tokens; 20 blocks cannot hold 10 at once.
    let e = engine(&model, CacheBudget::Blocks(20), 16, 256);
    let handles: Vec<_> = reqs
        .iter()
        .map(|r| e.submit(&r.image, &r.prompt, params(r)).unwrap())
        .collect();
    for (i, (h, s)) in handles.into_iter().zip(&solo).enumerate() {
        assert_eq!(&h.wait().unwrap().tokens, s, "request {i}");
    }
    let stats = e.stats();
    assert!(stats.preemptions > 0, "the cache was meant to run out: {stats:?}");
    assert_eq!(stats.free_blocks, 20, "the pool must be full again: {stats:?}");
}

#[test]
fn a_retry_of_the_same_page_reuses_cached_blocks_and_vision_output() {
    let model = model();
    let e = engine(&model, CacheBudget::Blocks(256), 8, 1024);
    let r = &requests()[0];
    let first = e.generate(&r.image, &r.prompt, params(r)).unwrap();
    let before = e.stats();
    assert_eq!(
        (
            before.images_encoded,
            before.encoder_cache_hits,
            before.cached_prompt_tokens
        ),
        (1, 0, 0)
    );
    let again = e.generate(&r.image, &r.prompt, params(r)).unwrap();
    let after = e.stats();
    assert_eq!(again.tokens, first.tokens);
    let prompt = first.prompt_tokens as u64;
    let reused = after.cached_prompt_tokens;
    // Every full prompt block except the last (the last token must run) is reused.
    assert!(
        reused >= prompt - 2 * 16 && reused < prompt,
        "reused {reused} of {prompt}"
    );
    assert_eq!(
        after.prompt_tokens_computed - before.prompt_tokens_computed,
        prompt - reused
    );
    // The image lies inside the reused prefix, so the tower does not even run.
    assert_eq!(after.images_encoded, 1);
    // A different prompt after the same image reuses the image's vision output.
    let other = e.generate(&r.image, "Describe this diagram.", params(r)).unwrap();
    assert_ne!(other.prompt_tokens, first.prompt_tokens);
    let last = e.stats();
    assert_eq!(last.images_encoded, 1);
    assert_eq!(last.encoder_cache_hits, 1);
}

#[test]
fn cancel_and_deadline_stop_requests_and_free_their_blocks() {
    let model = model();
    let e = engine(&model, CacheBudget::Blocks(1024), 8, 1024);
    let r = &requests()[0];
    let long = SamplingParams {
        max_new_tokens: Some(4000),
        ignore_eos: true,
        ..Default::default()
    };
    let h = e.submit(&r.image, &r.prompt, long.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    h.cancel();
    let out = h.wait().unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.tokens.len() < 4000);
    let prompt = model.prepare(&r.image, &r.prompt).unwrap();
    let started = Instant::now();
    let out = e
        .submit_prepared(prompt, long, Some(Instant::now() + Duration::from_millis(150)))
        .wait()
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Deadline);
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(20));
    let stats = e.stats();
    assert_eq!(stats.free_blocks, stats.total_blocks);
}

#[test]
fn requests_that_cannot_fit_are_refused_before_they_run() {
    let model = model();
    let e = engine(&model, CacheBudget::Blocks(16), 8, 1024);
    let r = &requests()[0];
    let too_long = SamplingParams {
        max_new_tokens: Some(8096),
        ..Default::default()
    };
    let err = e.submit(&r.image, &r.prompt, too_long).unwrap().wait().unwrap_err();
    assert!(matches!(err, EngineError::TooLong { max_context: 8096, .. }), "{err:?}");
    assert!(err.to_string().contains("8096"));
    let big = SamplingParams {
        max_new_tokens: Some(1000),
        ..Default::default()
    };
    let err = e.submit(&r.image, &r.prompt, big).unwrap().wait().unwrap_err();
    assert!(
        matches!(err, EngineError::CacheTooSmall { available: 16, .. }),
        "{err:?}"
    );
    // Without max_new_tokens the limit is what the context leaves; 16 blocks cannot hold that.
    let err = e
        .submit(&r.image, &r.prompt, SamplingParams::default())
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, EngineError::CacheTooSmall { .. }));
    assert_eq!(e.stats().steps, 0, "nothing ran");
}

#[test]
fn two_engines_live_in_one_process_and_serve_many_threads() {
    let model = model();
    let a = Arc::new(engine(&model, CacheBudget::Blocks(128), 4, 512));
    let b = Arc::new(engine(&model, CacheBudget::Blocks(128), 4, 512));
    let r = Arc::new(requests().into_iter().next().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (e, r) = (if i % 2 == 0 { a.clone() } else { b.clone() }, r.clone());
            std::thread::spawn(move || e.generate(&r.image, &r.prompt, params(&r)).unwrap().tokens)
        })
        .collect();
    let want = r.reference.clone().unwrap();
    for t in threads {
        assert_eq!(t.join().unwrap(), want);
    }
}
