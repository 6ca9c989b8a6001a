//! The engine on a Qwen2.5-VL-shaped model of ~135M parameters with random weights
//! (vellum::bench::BENCH_CONFIG): decode tokens/s at batch 1, 4, 16 and 64 (each sequence
//! decodes 16 tokens after its prefill), and one OCR-like request (a 532×532 page, ≈ 420 prompt
//! tokens) through vision tower and prefill. The 16-request continuous-batching vs
//! one-at-a-time vs transformers comparison runs in `ocr bench` and
//! tests/reference/bench_vs_transformers.py (one pass takes about a minute here).

use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vellum::engine::sampler::SamplingParams;
use vellum::hub::ModelFiles;
use vellum::models::qwen2_5_vl::Model;
use vellum::models::VisionLanguageModel;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_5_vl/models/gqa_window4/model");
    vellum::bench::write_random_model(dir.path(), vellum::bench::BENCH_CONFIG, &tokenizer).unwrap();
    let model: Arc<dyn VisionLanguageModel> =
        Arc::new(Model::load(&ModelFiles::from_dir(dir.path()).unwrap(), DType::F32, &Device::Cpu).unwrap());
    let engine = vellum::bench::engine(model.clone(), 64).unwrap();
    let small = vellum::bench::pages(1, 56, 56).remove(0);

    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    for batch in [1, 4, 16, 64] {
        group.throughput(Throughput::Elements(batch as u64 * 15));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        Duration::from_secs_f64(vellum::bench::decode_rate(&engine, &small, batch, 16).unwrap().seconds)
                    })
                    .sum()
            })
        });
    }
    group.finish();

    let page = vellum::bench::pages(1, 532, 532).remove(0);
    let prompt = model.prepare(&page, vellum::ROLMOCR_PROMPT).unwrap();
    let mut group = c.benchmark_group("ocr_request");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(prompt.input_ids.len() as u64));
    // A fresh engine each time: no prefix or vision output cached from the previous run.
    group.bench_function("prefill_532px_page", |b| {
        b.iter(|| {
            let e = vellum::bench::engine(model.clone(), 1).unwrap();
            let params = SamplingParams {
                max_new_tokens: Some(1),
                ..Default::default()
            };
            e.submit_prepared(prompt.clone(), params, None).wait().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
