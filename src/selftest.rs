//! `ocr __selftest`: the checks a GPU machine runs from the release binary alone (it has no Rust
//! toolchain, so the test executables cannot go there).
//!
//! - kernels: every CUDA kernel against its CPU twin on fresh random inputs, per dtype, by
//!   relative L2 error (f32 ≤ 1e-5, bf16 ≤ 1e-2, f16 ≤ 2e-3), with non-zero references;
//! - parity: the tiny fixture models of tests/fixtures on the chosen device, in f32, through the
//!   engine: greedy tokens identical to transformers', logprobs within 1e-3 (the CPU tests'
//!   bounds).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde::Serialize;

use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, EngineConfig};
use crate::hub::ModelFiles;

/// One measured comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub error: f64,
    pub tolerance: f64,
    pub ok: bool,
}

impl Check {
    fn new(name: String, error: f64, tolerance: f64) -> Self {
        // NaN fails.
        let ok = error <= tolerance;
        Self {
            name,
            error,
            tolerance,
            ok,
        }
    }
}

/// The tiny models of `fixtures` (tests/fixtures) on `device` against transformers' greedy
/// tokens and logprobs.
pub fn parity(device: &Device, fixtures: &Path) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let qwen = fixtures.join("qwen2_5_vl/models");
    let mut dirs: Vec<_> = std::fs::read_dir(&qwen)
        .with_context(|| format!("reading {}", qwen.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    dirs.sort();
    for dir in dirs {
        let files = ModelFiles::from_dir(&dir.join("model"))?;
        let model = crate::models::qwen2_5_vl::Model::load(&files, DType::F32, device)?;
        let engine = Engine::new(Arc::new(model), EngineConfig::default())?;
        for case in case_names(&dir)? {
            let meta = read_json(&dir.join(format!("{case}.expected.json")))?;
            let name = format!(
                "parity/qwen2_5_vl/{}/{case}",
                dir.file_name().unwrap().to_string_lossy()
            );
            checks.extend(greedy(&engine, &dir, &meta, "prompt", &name)?);
        }
    }
    for variant in ["gqa", "mha"] {
        let dir = fixtures.join("deepseek_ocr").join(variant);
        let files = ModelFiles::from_dir(&dir)?;
        for case in case_names(&dir)? {
            let meta = read_json(&dir.join(format!("{case}.expected.json")))?;
            let mut model = crate::models::deepseek_ocr::Model::load(&files, DType::F32, device)?;
            model.config.base_size = meta["base_size"].as_u64().context("base_size")? as usize;
            let engine = Engine::new(Arc::new(model), EngineConfig::default())?;
            let name = format!("parity/deepseek_ocr/{variant}/{case}");
            checks.extend(greedy(&engine, &dir, &meta, "instruction", &name)?);
        }
    }
    Ok(checks)
}

fn case_names(dir: &Path) -> Result<Vec<String>> {
    let cases = read_json(&dir.join("cases.json"))?;
    Ok(cases["cases"]
        .as_array()
        .context("cases.json lists cases")?
        .iter()
        .filter_map(|c| c.as_str().map(String::from))
        .collect())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Greedy generation of as many tokens as the reference has: the share of differing tokens
/// (must be 0) and the largest logprob difference.
fn greedy(engine: &Engine, dir: &Path, meta: &serde_json::Value, prompt_key: &str, name: &str) -> Result<[Check; 2]> {
    let numbers = |key: &str| -> Result<Vec<f64>> {
        meta[key]
            .as_array()
            .with_context(|| format!("{name}: {key}"))?
            .iter()
            .map(|v| v.as_f64().context("a number"))
            .collect()
    };
    let want: Vec<u32> = numbers("greedy_tokens")?.into_iter().map(|t| t as u32).collect();
    let want_lp = numbers("greedy_logprobs")?;
    let image_path = dir.join(meta["image"].as_str().context("image")?);
    let image = image::open(&image_path).with_context(|| format!("reading {}", image_path.display()))?;
    let params = SamplingParams {
        max_new_tokens: Some(want.len()),
        ignore_eos: true,
        ..Default::default()
    };
    let out = engine.generate(&image, meta[prompt_key].as_str().context("prompt")?, params)?;
    let differing =
        out.tokens.iter().zip(&want).filter(|(a, b)| a != b).count() + want.len().abs_diff(out.tokens.len());
    let lp = out
        .logprobs
        .iter()
        .zip(&want_lp)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    Ok([
        Check::new(format!("{name}/tokens"), differing as f64 / want.len() as f64, 0.0),
        Check::new(format!("{name}/logprobs"), lp, 1e-3),
    ])
}

/// Every kernel against its CPU twin on `device`, fresh random inputs each call.
#[cfg(feature = "cuda")]
pub fn kernels(device: &Device) -> Result<Vec<Check>> {
    kernel_checks::run(device)
}

#[cfg(feature = "cuda")]
mod kernel_checks {
    use candle_core::{DType, Device, Tensor};
    use rand::{seq::SliceRandom, Rng};

    use super::Check;
    use crate::ops::attention::{varlen_attention_reference, AttentionCache};
    use crate::ops::paged_attention::{PagedAttention, PagedKv, SeqRows};
    use crate::ops::rel_l2;
    use crate::ops::{activation, kernels, norm, rotary};
    use anyhow::Result;

    const DTYPES: [(DType, f64); 3] = [(DType::F32, 1e-5), (DType::BF16, 1e-2), (DType::F16, 2e-3)];

    /// Random values on the CPU as the dtype would hold them (f32), and the same on `device`.
    fn random(shape: &[usize], scale: f64, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let t = (Tensor::randn(0f32, 1., shape, &Device::Cpu)? * scale)?.to_dtype(dtype)?;
        Ok((t.to_dtype(DType::F32)?, t.to_device(device)?))
    }

    fn check(name: String, got: &Tensor, want: &Tensor, tolerance: f64) -> Result<Check> {
        Ok(Check::new(name, rel_l2(got, want)?, tolerance))
    }

    pub fn run(device: &Device) -> Result<Vec<Check>> {
        let mut out = Vec::new();
        for (dt, tol) in DTYPES {
            let tag = format!("{dt:?}").to_lowercase();
            let (g, gd) = random(&[37, 1000], 2.0, dt, device)?;
            let (u, ud) = random(&[37, 1000], 1.0, dt, device)?;
            let want = activation::silu_and_mul_reference(&g, &u)?;
            out.push(check(
                format!("silu_and_mul/{tag}"),
                &kernels::silu_and_mul(&gd, &ud)?,
                &want,
                tol,
            )?);
            let want = activation::relu_squared_reference(&g)?;
            out.push(check(
                format!("relu_squared/{tag}"),
                &kernels::relu_squared(&gd)?,
                &want,
                tol,
            )?);
            let (x, xd) = random(&[3, 5000], 20.0, dt, device)?;
            let want = activation::softcap_reference(&x, 15.0)?;
            out.push(check(
                format!("softcap/{tag}"),
                &kernels::softcap(&xd, 15.0)?,
                &want,
                tol,
            )?);

            for (rows, cols, eps) in [(7, 3584, 1e-6), (5, 1280, 1e-6), (9, 80, f32::EPSILON as f64)] {
                let (x, xd) = random(&[rows, cols], 3.0, dt, device)?;
                let (r, rd) = random(&[rows, cols], 1.0, dt, device)?;
                let (w, wd) = random(&[cols], 0.5, dt, device)?;
                let want = norm::rms_norm_reference(&x, Some(&w), eps)?;
                let (got, _) = kernels::rms_norm(&xd, None, Some(&wd), eps)?;
                out.push(check(format!("rms_norm/{tag}/{rows}x{cols}"), &got, &want, tol)?);
                let want = norm::rms_norm_reference(&x, None, eps)?;
                let (got, _) = kernels::rms_norm(&xd, None, None, eps)?;
                out.push(check(
                    format!("rms_norm_no_weight/{tag}/{rows}x{cols}"),
                    &got,
                    &want,
                    tol,
                )?);
                // The twin adds in f32; the kernel rounds the sum to the dtype first, as a
                // separate add in that dtype would.
                let sum = (&x + &r)?.to_dtype(dt)?.to_dtype(DType::F32)?;
                let want = norm::rms_norm_reference(&sum, Some(&w), eps)?;
                let (got, got_sum) = kernels::rms_norm(&xd, Some(&rd), Some(&wd), eps)?;
                out.push(check(format!("add_rms_norm/{tag}/{rows}x{cols}"), &got, &want, tol)?);
                let got_sum = got_sum.expect("asked for");
                out.push(check(
                    format!("add_rms_norm_sum/{tag}/{rows}x{cols}"),
                    &got_sum,
                    &sum,
                    tol,
                )?);
            }

            for dim in [64, 80, 128] {
                let tokens = 19;
                let (x, xd) = random(&[tokens, 4, dim], 1.0, dt, device)?;
                let angles: Vec<f32> = (0..tokens * dim / 2)
                    .map(|_| rand::rng().random_range(-50.0..50.0))
                    .collect();
                let (cos, sin) = rotary::cos_sin(&angles, tokens, &Device::Cpu)?;
                let (cos_d, sin_d) = (cos.to_device(device)?, sin.to_device(device)?);
                let want = rotary::rotate_reference(&x, &cos, &sin, rotary::Rotation::Theta)?;
                out.push(check(
                    format!("rotary/{tag}/d{dim}"),
                    &kernels::rotary(&xd, &cos_d, &sin_d, 1.0)?,
                    &want,
                    tol,
                )?);
                // nanochat's tables are half-width.
                let half = |t: &Tensor| t.narrow(1, 0, dim / 2)?.contiguous();
                let want = rotary::rotate_reference(&x, &half(&cos)?, &half(&sin)?, rotary::Rotation::NegTheta)?;
                let got = kernels::rotary(&xd, &half(&cos_d)?, &half(&sin_d)?, -1.0)?;
                out.push(check(format!("rotary_neg_theta/{tag}/d{dim}"), &got, &want, tol)?);
            }

            for dim in kernels::HEAD_DIMS {
                let cu = [0, 5, 70, 134, 200, 201];
                let tokens = *cu.last().unwrap();
                let (q, qd) = random(&[tokens, 4, dim], 1.0, dt, device)?;
                let (k, kd) = random(&[tokens, 4, dim], 1.0, dt, device)?;
                let (v, vd) = random(&[tokens, 4, dim], 1.0, dt, device)?;
                let want = varlen_attention_reference(&q, &k, &v, &cu)?;
                let got = kernels::varlen_attention(&qd, &kd, &vd, &cu)?;
                out.push(check(format!("varlen_attention/{tag}/d{dim}"), &got, &want, tol)?);
            }

            for dim in [64, 80, 128, 16] {
                out.extend(paged(device, dt, tol, dim, 300, &tag)?);
                out.extend(paged(device, dt, tol, dim, 3000, &tag)?);
            }
        }
        Ok(out)
    }

    /// Three sequences through a device cache and a host cache with the same scattered block
    /// tables: a prefill of each one's first part, a mixed step with the rest, then two decode
    /// steps; contexts up to `longest` (over 1024 the decode runs split-K).
    fn paged(device: &Device, dt: DType, tol: f64, dim: usize, longest: usize, tag: &str) -> Result<Vec<Check>> {
        let mut rng = rand::rng();
        let (heads, kv_heads, block_size) = (14, 2, 16); // Qwen2.5-VL-7B's GQA group of 7
        let lens: Vec<(usize, usize)> = (0..3)
            .map(|_| {
                let total = rng.random_range(longest / 2..longest);
                (total, rng.random_range(1..total))
            })
            .collect();
        let num_blocks: usize = lens.iter().map(|(t, _)| (t + 2).div_ceil(block_size)).sum::<usize>() + 8;
        let mut free: Vec<u32> = (0..num_blocks as u32).collect();
        free.shuffle(&mut rng);
        let tables: Vec<Vec<u32>> = lens
            .iter()
            .map(|&(t, _)| (0..(t + 2).div_ceil(block_size)).map(|_| free.pop().unwrap()).collect())
            .collect();
        let mut host = PagedKv::new(1, num_blocks, block_size, kv_heads, dim, &Device::Cpu, DType::F32)?;
        let mut gpu = PagedKv::new(1, num_blocks, block_size, kv_heads, dim, device, dt)?;
        // Steps as (from, to) per sequence: first part, the rest, two decodes.
        let steps: Vec<Vec<(usize, usize)>> = vec![
            lens.iter().map(|&(_, c)| (0, c)).collect(),
            lens.iter().map(|&(t, c)| (c, t)).collect(),
            lens.iter().map(|&(t, _)| (t, t + 1)).collect(),
            lens.iter().map(|&(t, _)| (t + 1, t + 2)).collect(),
        ];
        let mut checks = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let rows: usize = step.iter().map(|(a, b)| b - a).sum();
            let (q, qd) = random(&[rows, heads, dim], 1.0, dt, device)?;
            let (k, kd) = random(&[rows, kv_heads, dim], 1.0, dt, device)?;
            let (v, vd) = random(&[rows, kv_heads, dim], 1.0, dt, device)?;
            let mut start = 0;
            let seqs: Vec<SeqRows> = step
                .iter()
                .zip(&tables)
                .map(|(&(from, to), blocks)| {
                    let s = SeqRows {
                        start,
                        len: to - from,
                        context: from,
                        blocks,
                    };
                    start += to - from;
                    s
                })
                .collect();
            let want = PagedAttention::new(&mut host, seqs.clone()).attend(0, &q, &k, &v)?;
            let got = PagedAttention::new(&mut gpu, seqs).attend(0, &qd, &kd, &vd)?;
            let kind = if n < 2 { "prefill" } else { "decode" };
            checks.push(check(
                format!("paged_{kind}/{tag}/d{dim}/ctx{longest}/step{n}"),
                &got,
                &want,
                tol,
            )?);
        }
        Ok(checks)
    }
}
