//! CPU kernels against what they replaced, in one run: the softmax over attention scores
//! (candle's fused op, scalar libm `expf`, vs vellum's vectorised one) at the shapes a
//! 532-pixel page gives the bench model's tower (a full-attention block: 10 heads × 1,444² scores;
//! a window block: 64-token windows) and a decode step (16 sequences × 10 heads × 500 keys);
//! the vision towers' segment attention at the same two shapes;
//! the few-row `x · wᵀ` against the GEMM; the int8 fast mode's linear (activations quantised
//! per call, included) against the f32 GEMM (throughput in FLOP, 2 per multiply-add); the
//! sampler's log Σ exp over one row of logits (RolmOCR's 151,657 and the bench model's 32,768
//! entries) against the libm f64 loop it replaced.

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    for (name, shape) in [
        ("full_block_10x1444x1444", (10, 1444, 1444)),
        ("windows_230x64x64", (230, 64, 64)),
        ("decode_160x1x500", (160, 1, 500)),
    ] {
        let x = Tensor::randn(0f32, 3.0, shape, &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(x.elem_count() as u64));
        group.bench_function(format!("candle/{name}"), |b| {
            b.iter(|| candle_nn::ops::softmax_last_dim(&x).unwrap())
        });
        group.bench_function(format!("vellum/{name}"), |b| {
            b.iter(|| vellum::ops::softmax::softmax_last_dim(&x).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("segment_attention");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    let (tokens, heads, hd) = (1444, 10, 80);
    let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(0f32, 1.0, (tokens, heads, hd), &Device::Cpu).unwrap());
    let windows: Vec<usize> = (0..tokens).step_by(64).chain([tokens]).collect();
    for (name, segments) in [("full_1444", vec![0, tokens]), ("windows_64", windows)] {
        group.bench_function(format!("vellum/{name}"), |b| {
            b.iter(|| vellum::ops::segment_attention::attention(&q, &k, &v, &segments).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("skinny_matmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    // The bench model's LM head and MLP down projection at decode's row counts.
    for (name, (n, k)) in [("lm_head_32768x640", (32768, 640)), ("down_proj_640x1792", (640, 1792))] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        for m in [1, 4, 8, 16, 32] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_function(format!("gemm/{name}/rows_{m}"), |b| {
                b.iter(|| x.matmul(&w.t().unwrap()).unwrap())
            });
            group.bench_function(format!("vellum/{name}/rows_{m}"), |b| {
                b.iter(|| vellum::ops::skinny::matmul_t(&x, &w).unwrap())
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("int8_linear");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    // The bench model's tower MLP (1,444 patches of a page), decoder MLP at a batched prefill
    // (16 × 426 prompt tokens), and the LM head at decode.
    for (name, (n, k), rows) in [
        ("tower_up_1708x640", (1708, 640), &[1444][..]),
        ("down_proj_640x1792", (640, 1792), &[6816, 16, 32, 64][..]),
        ("lm_head_32768x640", (32768, 640), &[1, 16, 64][..]),
    ] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let q = vellum::ops::int8::Int8Linear::new(&w, None).unwrap();
        let h =
            vellum::ops::bf16_linear::supported().then(|| vellum::ops::bf16_linear::Bf16Linear::new(&w, None).unwrap());
        for &m in rows {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_function(format!("f32_gemm/{name}/rows_{m}"), |b| {
                b.iter(|| x.matmul(&w.t().unwrap()).unwrap())
            });
            if vellum::ops::gemm_avx512::takes(&x, &w) {
                group.bench_function(format!("f32_avx512/{name}/rows_{m}"), |b| {
                    b.iter(|| vellum::ops::gemm_avx512::matmul_t(&x, &w).unwrap())
                });
            }
            if vellum::ops::int8::supported() {
                group.bench_function(format!("int8/{name}/rows_{m}"), |b| b.iter(|| q.forward(&x).unwrap()));
            }
            if let Some(h) = &h {
                group.bench_function(format!("bf16/{name}/rows_{m}"), |b| b.iter(|| h.forward(&x).unwrap()));
            }
        }
    }
    group.finish();

    let mut group = c.benchmark_group("log_sum_exp");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    for vocab in [32_768, 151_657] {
        let logits = Tensor::randn(0f32, 4.0, vocab, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        group.throughput(Throughput::Elements(vocab as u64));
        group.bench_function(format!("libm_f64/{vocab}"), |b| {
            b.iter(|| {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
            })
        });
        group.bench_function(format!("vellum/{vocab}"), |b| {
            b.iter(|| vellum::ops::softmax::log_sum_exp(&logits))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
