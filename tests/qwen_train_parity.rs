//! Fine-tuning Qwen2.5-VL against transformers (fixtures: tests/reference/make_qwen_train_fixtures.py):
//! the olmOCR-style sequences token for token, step 0's gradient of every parameter (whole
//! graph and with gradient checkpointing), five AdamW steps (losses, learning rates, gradient
//! norms, every parameter's total update), `--freeze vision`, and the fine-tuned model served
//! by the engine giving transformers' greedy tokens.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{fixtures, read_json, rel_l2};
use candle_core::{DType, Device, Tensor};
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig};
use vellum::hub::ModelFiles;
use vellum::models::qwen2_5_vl::Model;
use vellum::train::data::Dataset;
use vellum::train::model::Trainable;
use vellum::train::optim::{AdamWConfig, Schedule};
use vellum::train::{TrainConfig, Trainer};

fn case_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qwen_train")
        .join(name)
}

fn base_model() -> Arc<Model> {
    let files = ModelFiles::from_dir(&fixtures().join("models/gqa_window4/model")).unwrap();
    Arc::new(Model::load(&files, DType::F32, &Device::Cpu).unwrap())
}

fn expected(name: &str) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(case_dir(name).join("expected.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

/// transformers 4.57's parameter names → the checkpoint's (classic) names.
fn store_name(reference: &str) -> String {
    if let Some(rest) = reference.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = reference.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        reference.to_string()
    }
}

fn config(case: &serde_json::Value, out: &Path) -> TrainConfig {
    let steps = case["steps"].as_u64().unwrap() as usize;
    TrainConfig {
        batch_size: case["batch_size"].as_u64().unwrap() as usize,
        lr: case["lr"].as_f64().unwrap(),
        schedule: Schedule::Linear {
            warmup: (steps as f64 * case["warmup_ratio"].as_f64().unwrap()).ceil() as usize,
            steps,
        },
        adamw: AdamWConfig {
            weight_decay: case["weight_decay"].as_f64().unwrap(),
            ..Default::default()
        },
        grad_clip: case["grad_clip"].as_f64().unwrap(),
        seq_len: 8192,
        shuffle: false,
        eval_every: 0,
        freeze_vision: case["freeze"] == "vision",
        ..TrainConfig::new(case_dir("data"), out.to_path_buf(), steps)
    }
}

/// Runs the case's steps and checks each step's log against the reference's.
fn check_steps(trainer: &mut Trainer<Model>, case: &serde_json::Value, name: &str) {
    for want in case["log"].as_array().unwrap() {
        let got = trainer.step().unwrap();
        let rel = |a: f64, k: &str| (a - want[k].as_f64().unwrap()).abs() / want[k].as_f64().unwrap().abs().max(1e-12);
        eprintln!(
            "{name} step {}: loss {:.6} (rel {:.1e}), grad norm {:.4} (rel {:.1e}), lr {:.3e}",
            got.step,
            got.loss,
            rel(got.loss, "loss"),
            got.grad_norm,
            rel(got.grad_norm, "grad_norm"),
            got.lr
        );
        assert!(rel(got.loss, "loss") < 1e-4, "{name} step {}: loss", got.step);
        assert!(
            rel(got.grad_norm, "grad_norm") < 1e-4,
            "{name} step {}: grad norm",
            got.step
        );
        assert_eq!(
            got.tokens as u64,
            want["tokens"].as_u64().unwrap(),
            "{name} step {}",
            got.step
        );

        assert!(
            (got.lr - want["lr"].as_f64().unwrap()).abs() < 1e-12,
            "{name} step {}: lr",
            got.step
        );
    }
}

/// The gradient of every parameter (by store name) of the mean loss over `samples` of the
/// train split, at the model's current weights, backpropagated whole or layer by layer.
fn gradients(
    model: &Model,
    config: &TrainConfig,
    samples: std::ops::Range<usize>,
    checkpointed: bool,
) -> BTreeMap<String, Tensor> {
    let data = Dataset::open(&config.data, "train").unwrap();
    let examples: Vec<_> = samples
        .map(|i| {
            model
                .example(&data.samples[i], &data.image(i).unwrap(), 8192)
                .unwrap()
                .0
        })
        .collect();
    let batch: Vec<_> = examples.iter().collect();
    let tokens = batch.iter().map(|e| Model::targets(e)).sum::<usize>() as f64;
    let view = Trainable::training_view(model, model.frozen(config).unwrap()).unwrap();
    let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
    view.backward(&batch, 1.0 / tokens, checkpointed, |store| {
        Ok(common::add_grads(&mut grads, model.params(), store)?)
    })
    .unwrap();
    grads
}

/// The values of the parameters whose names `keep` accepts.
fn values(model: &Model, keep: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<f32>> {
    model
        .params()
        .vars()
        .iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn samples_become_olmocr_sequences() {
    let case = read_json(case_dir("full").join("case.json"));
    let model = base_model();
    let data = Dataset::open(&case_dir("data"), "train").unwrap();
    for (i, want) in case["encoded"].as_array().unwrap().iter().enumerate() {
        let image = data.image(i).unwrap();
        let (ex, cut) = model.example(&data.samples[i], &image, 8192).unwrap();
        let ids = common::u32s(&want["input_ids"]);
        let labels: Vec<i64> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(cut, 0);
        assert_eq!(ex.input_ids, ids[..ids.len() - 1], "sample {i}: inputs");
        let targets: Vec<i64> = labels[1..].iter().map(|&l| if l == -100 { -1 } else { l }).collect();
        assert_eq!(ex.targets, targets, "sample {i}: targets");
        assert_eq!(
            ex.grid_thw.to_vec(),
            common::u32s(&want["grid"])
                .iter()
                .map(|&v| v as usize)
                .collect::<Vec<_>>()
        );
    }
    // A cut keeps the prompt and counts what it dropped.
    let image = data.image(0).unwrap();
    let (full, _) = model.example(&data.samples[0], &image, 8192).unwrap();
    let (cut, dropped) = model
        .example(&data.samples[0], &image, full.input_ids.len() - 3)
        .unwrap();
    assert_eq!((cut.input_ids.len(), dropped), (full.input_ids.len() - 3, 3));
    assert!(
        model.example(&data.samples[0], &image, 10).is_err(),
        "a cut into the prompt is refused"
    );
}

/// Step 0's gradients of every parameter against transformers', by backpropagating the whole
/// graph or layer by layer (gradient checkpointing).
#[test]
fn step0_gradients_match_transformers_with_and_without_checkpointing() {
    let case = read_json(case_dir("full").join("case.json"));
    let expected = expected("full");
    let model = base_model();
    let tmp = tempfile::tempdir().unwrap();
    let config = config(&case, tmp.path());
    for (first, prefix, checkpointed) in [(0, "grad.", false), (0, "grad.", true), (2, "grad_batch1.", false)] {
        let grads = gradients(&model, &config, first..first + 2, checkpointed);
        let mut worst = (0f64, String::new());
        let mut compared = 0;
        for (key, want) in &expected {
            let Some(reference) = key.strip_prefix(prefix) else {
                continue;
            };
            let name = store_name(reference);
            let got = grads.get(&name).unwrap_or_else(|| panic!("no gradient for {name}"));
            let err = rel_l2(got, want);
            if err > worst.0 {
                worst = (err, name);
            }
            compared += 1;
        }
        assert_eq!(
            compared,
            grads.len(),
            "every parameter with a gradient has a reference one"
        );
        assert_eq!(compared, 93, "the tiny model has 93 parameters");
        eprintln!(
            "{prefix} checkpointed {checkpointed}: worst gradient rel L2 {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(
            worst.0 < 1e-4,
            "{prefix} checkpointed {checkpointed}: {} off by {:.2e}",
            worst.1,
            worst.0
        );
    }
}

#[test]
fn five_adamw_steps_match_transformers_and_the_engine_serves_the_result() {
    let case = read_json(case_dir("full").join("case.json"));
    let expected = expected("full");
    let model = base_model();
    let before: BTreeMap<String, Tensor> = model
        .params()
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach().copy().unwrap()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model.clone(), config(&case, tmp.path()), None).unwrap();
    check_steps(&mut trainer, &case, "full");
    let mut worst = (0f64, String::new());
    for (key, want) in &expected {
        let Some(reference) = key.strip_prefix("final.") else {
            continue;
        };
        let name = store_name(reference);
        let now = model.params().vars()[&name].as_tensor();
        let err = rel_l2(&(now - &before[&name]).unwrap(), &(want - &before[&name]).unwrap());
        if err > worst.0 {
            worst = (err, name);
        }
    }
    eprintln!("worst total update rel L2 {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 < 0.01, "the update of {} is off by {:.2e}", worst.1, worst.0);

    // final/ is a model directory the engine serves: transformers' greedy tokens on the val page.
    let dir = trainer.save_final().unwrap();
    let served = vellum::models::load(&ModelFiles::from_dir(&dir).unwrap(), DType::F32, &Device::Cpu).unwrap();
    let engine = Engine::new(served, EngineConfig::default()).unwrap();
    let val = Dataset::open(&case_dir("data"), "val").unwrap();
    let params = SamplingParams {
        max_new_tokens: Some(12),
        ignore_eos: true,
        ..Default::default()
    };
    let got = engine
        .generate(&val.image(0).unwrap(), "Read this page.", params)
        .unwrap();
    let margins = common::f32s(&case["greedy_margins"]);
    eprintln!(
        "fine-tuned greedy tokens {:?}, smallest reference margin {:.4}",
        got.tokens,
        margins.iter().cloned().fold(f32::MAX, f32::min)
    );
    assert_eq!(got.tokens, common::u32s(&case["greedy_tokens"]));
}

#[test]
fn freeze_vision_matches_transformers_and_leaves_the_tower_bit_identical() {
    let case = read_json(case_dir("freeze_vision").join("case.json"));
    let model = base_model();
    let in_tower = |n: &str| n.starts_with("visual.");
    let tower = values(&model, in_tower);
    assert!(!tower.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model.clone(), config(&case, tmp.path()), None).unwrap();
    let text_params = model
        .params()
        .vars()
        .keys()
        .filter(|n| !n.starts_with("visual."))
        .count();
    assert_eq!(trainer.trainable_parameters(), {
        let vars = model.params().vars();
        vars.iter()
            .filter(|(n, _)| !n.starts_with("visual."))
            .map(|(_, v)| v.elem_count())
            .sum::<usize>()
    });
    assert!(text_params > 0);
    check_steps(&mut trainer, &case, "freeze_vision");
    assert!(values(&model, in_tower) == tower, "the frozen tower moved");
}

/// peft's in-memory name of an adapter tensor → the store's.
fn adapter_store_name(peft: &str) -> String {
    let stem = peft.strip_prefix("base_model.model.").unwrap_or(peft);
    store_name(&stem.replace(".default.weight", ".weight"))
}

fn adapter_model(dir: &str) -> Arc<Model> {
    Arc::new(vellum::models::load_adapter(&case_dir("lora").join(dir), DType::F32, &Device::Cpu).unwrap())
}

#[test]
fn lora_steps_match_peft() {
    let case = read_json(case_dir("lora").join("case.json"));
    let expected = expected("lora");
    let model = adapter_model("init");
    let tmp = tempfile::tempdir().unwrap();
    let config = config(&case, tmp.path());

    // Step 0's gradients: the adapters' only (B is zero, so A's is too, as in peft).
    let grads = gradients(&model, &config, 0..2, false);
    let mut compared = 0;
    for (key, want) in &expected {
        let Some(reference) = key.strip_prefix("grad.") else {
            continue;
        };
        let got = &grads[&adapter_store_name(reference)];
        let err = if want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() == 0.0 {
            got.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64
        } else {
            rel_l2(got, want)
        };
        assert!(err < 1e-4, "{reference}: {err:.2e}");
        compared += 1;
    }
    assert_eq!(compared, grads.len(), "gradients reach the adapters and nothing else");
    assert_eq!(compared, 3 * 4 * 2);

    let base = |n: &str| !vellum::models::lora::is_adapter(n);
    let before = values(&model, base);
    let mut trainer = Trainer::new(model.clone(), config, None).unwrap();
    assert_eq!(
        trainer.trainable_parameters(),
        3 * 4 * 4 * (64 + 64) - 3 * 2 * 4 * (64 - 32)
    );
    check_steps(&mut trainer, &case, "lora");
    assert!(values(&model, base) == before, "a base weight moved");

    // final/ is a peft adapter directory with peft's tensor names, which loads back as trained.
    let dir = trainer.save_final().unwrap();
    let written: Vec<String> = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    let mut peft_names: Vec<String> =
        candle_core::safetensors::load(case_dir("lora/init/adapter_model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
    let mut written_sorted = written.clone();
    written_sorted.sort();
    peft_names.sort();
    assert_eq!(written_sorted, peft_names);
    let reloaded = vellum::models::load_adapter(&dir, DType::F32, &Device::Cpu).unwrap();
    for (name, var) in model.params().vars() {
        let again = reloaded.params().vars()[name].as_tensor();
        assert_eq!(rel_l2(again, var.as_tensor()), 0.0, "{name} after a round trip");
    }
}

/// peft's trained adapter: merged by vellum as `merge_and_unload` merges it, and served
/// unmerged with the merged model's output.
#[test]
fn lora_merge_matches_peft_and_unmerged_serving_equals_merged() {
    let expected = expected("lora");
    let model = adapter_model("trained");
    let tmp = tempfile::tempdir().unwrap();
    let merged_dir = tmp.path().join("merged");
    std::fs::create_dir_all(&merged_dir).unwrap();
    model.write(&merged_dir, true).unwrap();
    let merged = candle_core::safetensors::load(merged_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(!merged.keys().any(|n| vellum::models::lora::is_adapter(n)));
    let mut compared = 0;
    for (key, want) in &expected {
        let Some(reference) = key.strip_prefix("merged.") else {
            continue;
        };
        let err = rel_l2(&merged[&store_name(reference)], want);
        assert!(err < 1e-5, "{reference}: merged off by {err:.2e}");
        compared += 1;
    }
    assert_eq!(
        compared,
        3 * (4 + 3),
        "q/k/v/o weights and the q/k/v biases of 3 layers"
    );

    let val = Dataset::open(&case_dir("data"), "val").unwrap();
    let image = val.image(0).unwrap();
    let params = SamplingParams {
        max_new_tokens: Some(8),
        ignore_eos: true,
        ..Default::default()
    };
    let unmerged = Engine::new(model, EngineConfig::default()).unwrap();
    let served = vellum::models::load(&ModelFiles::from_dir(&merged_dir).unwrap(), DType::F32, &Device::Cpu).unwrap();
    let merged = Engine::new(served, EngineConfig::default()).unwrap();
    let a = unmerged.generate(&image, "Read this page.", params.clone()).unwrap();
    let b = merged.generate(&image, "Read this page.", params).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let worst = a
        .logprobs
        .iter()
        .zip(&b.logprobs)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "logprobs differ by {worst}");
}
