//! Tiny nano DeepSeek-OCR models (the fork's own code at reduced size, seeded random weights;
//! tests/reference/make_deepseek_ocr_fixtures.py) against the reference's outputs: padded image,
//! DeepEncoder output, last-position logits, prompt ids, and 32 greedy tokens (image token
//! masked), at base sizes 1024 and 512.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig};
use vellum::hub::ModelFiles;
use vellum::models::deepseek_ocr::{self, Model};
use vellum::models::{embed_rows, VisionLanguageModel};
use vellum::ops::attention::ContiguousKvCache;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deepseek_ocr")
}

fn load(dir: &Path, base_size: usize) -> Model {
    let files = ModelFiles::from_dir(dir).unwrap();
    let mut model = Model::load(&files, DType::F32, &Device::Cpu).unwrap();
    model.config.base_size = base_size;
    model
}

fn cases(model: &str) -> Vec<serde_json::Value> {
    let dir = root().join(model);
    common::read_json(dir.join("cases.json"))["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| common::read_json(dir.join(format!("{}.expected.json", c.as_str().unwrap()))))
        .collect()
}

fn expected(model: &str, case: &serde_json::Value) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        root()
            .join(model)
            .join(format!("{}.expected.safetensors", case["case"].as_str().unwrap())),
        &Device::Cpu,
    )
    .unwrap()
}

fn last_logits(model: &Model, prompt: &vellum::models::PreparedPrompt, vision: &Tensor) -> Tensor {
    let n = prompt.input_ids.len();
    let embeds = embed_rows(model, |i| prompt.input_ids[i], 0, n, prompt.image_span(), Some(vision)).unwrap();
    let mut cache = ContiguousKvCache::new(model.info().num_layers);
    model
        .forward(&embeds, &prompt.positions, &mut cache, &[n as u32 - 1])
        .unwrap()
        .squeeze(0)
        .unwrap()
}

#[test]
fn padding_prompt_encoder_and_logits_match() {
    for name in ["gqa", "mha"] {
        let dir = root().join(name);
        for case in cases(name) {
            let base = case["base_size"].as_u64().unwrap() as usize;
            let model = load(&dir, base);
            let label = format!("{name}/{}", case["case"]);
            let image = image::open(dir.join(case["image"].as_str().unwrap())).unwrap();
            let (padded, _) = deepseek_ocr::preprocess(&image, base, &Device::Cpu).unwrap();
            let want = image::open(dir.join(case["padded_image"].as_str().unwrap()))
                .unwrap()
                .to_rgb8();
            let max = padded
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert_eq!(max, 0, "{label}: padded image differs from Pillow's by up to {max}");
            let prompt = model.prepare(&image, case["instruction"].as_str().unwrap()).unwrap();
            assert_eq!(
                prompt.input_ids,
                common::u32s(&case["input_ids"]),
                "{label}: prompt ids"
            );
            let vision = model.encode_images(&[&prompt.image]).unwrap().remove(0);
            let exp = expected(name, &case);
            let err = common::rel_l2(&vision, &exp["vision_embeds"]);
            assert!(err <= 1e-4, "{label}: encoder output rel L2 {err}");
            let err_logits = common::rel_l2(&last_logits(&model, &prompt, &vision), &exp["last_logits"]);
            eprintln!("{label}: base {base}, encoder rel L2 {err:.2e}, last logits rel L2 {err_logits:.2e}");
            assert!(err_logits <= 1e-4, "{label}: last logits rel L2 {err_logits}");
        }
    }
}

#[test]
fn greedy_tokens_match_through_the_engine() {
    for name in ["gqa", "mha"] {
        let dir = root().join(name);
        for case in cases(name) {
            let base = case["base_size"].as_u64().unwrap() as usize;
            let engine = Engine::new(Arc::new(load(&dir, base)), EngineConfig::default()).unwrap();
            let image = image::open(dir.join(case["image"].as_str().unwrap())).unwrap();
            let want = common::u32s(&case["greedy_tokens"]);
            let params = SamplingParams {
                max_new_tokens: Some(want.len()),
                ignore_eos: true,
                ..Default::default()
            };
            let out = engine
                .generate(&image, case["instruction"].as_str().unwrap(), params)
                .unwrap();
            assert_eq!(out.tokens, want, "{name}/{}: greedy tokens", case["case"]);
            let lp = out
                .logprobs
                .iter()
                .zip(common::f32s(&case["greedy_logprobs"]))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(lp <= 1e-3, "{name}/{}: logprob diff {lp}", case["case"]);
        }
    }
}
