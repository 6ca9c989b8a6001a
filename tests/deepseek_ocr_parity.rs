//! Tiny nano DeepSeek-OCR models (the fork's own code at reduced size, seeded random weights;
//! tests/reference/make_deepseek_ocr_fixtures.py) against the reference's outputs: padded image,
//! DeepEncoder output, last-position logits, prompt ids, and 32 greedy tokens (image token
//! masked), at base sizes 1024 and 512.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig};
use vellum::hub::ModelFiles;
use vellum::models::deepseek_ocr::{self, Model};
use vellum::models::{embed_rows, VisionLanguageModel};
use vellum::ops::attention::ContiguousKvCache;

/// The committed fixtures.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deepseek_ocr")
}

/// Where the parity tests' models are: the committed fixtures, or (on demand) those of
/// `make_deepseek_ocr_fixtures.py --full-encoders`.
fn parity_root() -> PathBuf {
    std::env::var_os("VELLUM_DEEPSEEK_FIXTURES").map_or_else(root, PathBuf::from)
}

/// The models under [`root`].
fn models() -> Vec<String> {
    ["gqa", "mha", "hd32"]
        .into_iter()
        .filter(|m| parity_root().join(m).is_dir())
        .map(String::from)
        .collect()
}

fn load(dir: &Path, base_size: usize) -> Model {
    let files = ModelFiles::from_dir(dir).unwrap();
    let mut model = Model::load(&files, DType::F32, &Device::Cpu).unwrap();
    model.config.base_size = base_size;
    model
}

/// The cases of the model in `dir`.
fn cases(dir: &Path) -> Vec<serde_json::Value> {
    common::read_json(dir.join("cases.json"))["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| common::read_json(dir.join(format!("{}.expected.json", c.as_str().unwrap()))))
        .collect()
}

fn expected(dir: &Path, case: &serde_json::Value) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        dir.join(format!("{}.expected.safetensors", case["case"].as_str().unwrap())),
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
    for name in models() {
        let name = name.as_str();
        let dir = parity_root().join(name);
        for case in cases(&dir) {
            let base = case["base_size"].as_u64().unwrap() as usize;
            let model = load(&dir, base);
            let label = format!("{name}/{}", case["case"]);
            let image = image::open(dir.join(case["image"].as_str().unwrap())).unwrap();
            let (padded, _) = deepseek_ocr::preprocess(&image, base, &Device::Cpu).unwrap();
            let want = common::open_rgb(&dir.join(case["padded_image"].as_str().unwrap()));
            let max = common::max_abs_diff(&padded, &want);
            assert_eq!(max, 0, "{label}: padded image differs from Pillow's by up to {max}");
            let prompt = model.prepare(&image, case["instruction"].as_str().unwrap()).unwrap();
            assert_eq!(
                prompt.input_ids,
                common::u32s(&case["input_ids"]),
                "{label}: prompt ids"
            );
            let vision = model.encode_images(&[&prompt.image]).unwrap().remove(0);
            let exp = expected(&dir, &case);
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
    for name in models() {
        let name = name.as_str();
        let dir = parity_root().join(name);
        for case in cases(&dir) {
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
            // Measured: ≤ 5e-6 over 32 tokens, the full-size encoders included.
            assert!(lp <= 1e-4, "{name}/{}: logprob diff {lp}", case["case"]);
        }
    }
}

fn ocr(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_trainer_checkpoint_converts_to_the_same_model() {
    let dir = root().join("gqa");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("converted");
    let convert = |n_head: &str| {
        ocr(&[
            "convert",
            dir.join("step_1.pt").to_str().unwrap(),
            out.to_str().unwrap(),
            "--tokenizer",
            dir.join("tokenizer.json").to_str().unwrap(),
            "--n-head",
            n_head,
        ])
    };
    let run = convert("4");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Sizes read off the shapes agree with the config the reference was built with.
    let inferred: deepseek_ocr::Config =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let original: deepseek_ocr::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(inferred, original);
    // The .pt's tensors (extra position_ids buffer and unused patch_embedding included) give the
    // same outputs as the safetensors form.
    let case = &cases(&dir)[0];
    let image = image::open(dir.join(case["image"].as_str().unwrap())).unwrap();
    let logits = |model: &Model| {
        let prompt = model.prepare(&image, case["instruction"].as_str().unwrap()).unwrap();
        let vision = model.encode_images(&[&prompt.image]).unwrap().remove(0);
        last_logits(model, &prompt, &vision)
    };
    assert_eq!(
        common::rel_l2(&logits(&load(&out, 1024)), &logits(&load(&dir, 1024))),
        0.0
    );
    // A bad head count is refused with the reason.
    let run = convert("7");
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("--n-head 7"));
}

#[test]
fn ocr_generate_matches_the_reference_at_base_sizes_1024_and_512() {
    let dir = root().join("gqa");
    let tmp = tempfile::tempdir().unwrap();
    for case in cases(&dir) {
        let base = case["base_size"].as_u64().unwrap().to_string();
        let out = tmp.path().join(format!("base{base}"));
        let run = ocr(&[
            "convert",
            dir.join("step_1.pt").to_str().unwrap(),
            out.to_str().unwrap(),
            "--tokenizer",
            dir.join("tokenizer.json").to_str().unwrap(),
            "--n-head",
            "4",
            "--base-size",
            &base,
        ]);
        assert!(run.status.success());
        let image = dir.join(case["image"].as_str().unwrap());
        let mut args = vec![
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
        ];
        args.extend(["--max-new-tokens", "32", "--json"]);
        // Without --prompt, the model's own default instruction ("OCR this document.").
        let instruction = case["instruction"].as_str().unwrap();
        if instruction != deepseek_ocr::DOCUMENT_INSTRUCTION {
            args.extend(["--prompt", instruction]);
        }
        let run = ocr(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(
            common::u32s(&json["tokens"]),
            common::u32s(&case["greedy_tokens"]),
            "{} at base {base}",
            case["case"]
        );
        assert_eq!(
            json["prompt_tokens"].as_u64().unwrap() as usize,
            case["input_ids"].as_array().unwrap().len()
        );
        assert_eq!(json["finish_reason"], "length");
    }
}

#[test]
fn both_model_kinds_batch_through_the_same_engine() {
    let qwen_dir = common::fixtures().join("models/gqa_window4");
    let qwen: Arc<dyn VisionLanguageModel> = vellum::models::load(
        &ModelFiles::from_dir(&qwen_dir.join("model")).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let nano: Arc<dyn VisionLanguageModel> = vellum::models::load(
        &ModelFiles::from_dir(&root().join("gqa")).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(nano.info().architecture, "NanoDeepseekOCR");
    let requests: Vec<(Arc<dyn VisionLanguageModel>, image::DynamicImage, String)> = cases(&root().join("gqa"))
        .iter()
        .map(|c| {
            (
                nano.clone(),
                image::open(root().join("gqa").join(c["image"].as_str().unwrap())).unwrap(),
                c["instruction"].as_str().unwrap().to_string(),
            )
        })
        .chain(["page_140x196", "tall_60x300"].iter().map(|n| {
            let meta = common::read_json(qwen_dir.join(format!("{n}.expected.json")));
            (
                qwen.clone(),
                image::open(qwen_dir.join(meta["image"].as_str().unwrap())).unwrap(),
                meta["prompt"].as_str().unwrap().to_string(),
            )
        }))
        .collect();
    let params = SamplingParams {
        max_new_tokens: Some(12),
        ignore_eos: true,
        ..Default::default()
    };
    for model in [&nano, &qwen] {
        let mine: Vec<_> = requests.iter().filter(|(m, _, _)| Arc::ptr_eq(m, model)).collect();
        let solo: Vec<Vec<u32>> = mine
            .iter()
            .map(|(m, img, p)| {
                Engine::new(m.clone(), EngineConfig::default())
                    .unwrap()
                    .generate(img, p, params.clone())
                    .unwrap()
                    .tokens
            })
            .collect();
        let engine = Engine::new(model.clone(), EngineConfig::default()).unwrap();
        let handles: Vec<_> = mine
            .iter()
            .map(|(_, img, p)| engine.submit(img, p, params.clone()).unwrap())
            .collect();
        for (h, s) in handles.iter().zip(&solo) {
            assert_eq!(&h.wait().unwrap().tokens, s, "{}", model.info().architecture);
        }
        assert!(
            engine.stats().steps < (mine.len() * 12) as u64,
            "{}: requests were batched",
            model.info().architecture
        );
    }
}
