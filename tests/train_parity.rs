//! The trainer against the fork's own PyTorch training (tests/reference/make_train_fixtures.py):
//! the same batches, step 0's gradient of every parameter, and six AdamW steps (loss, gradient
//! norm, learning rate, every tensor's total update), Stage 1 at base sizes 1024 and 512 and
//! Stage 2 (SAM frozen) at 512; step 0's gradients also with gradient checkpointing.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{read_json, rel_l2};
use candle_core::{DType, Device, Tensor};
use vellum::hub::ModelFiles;
use vellum::models::deepseek_ocr::Model;
use vellum::train::data::{Dataset, Encoder};
use vellum::train::model::Trainable;
use vellum::train::optim::{AdamWConfig, Schedule};
use vellum::train::{TrainConfig, Trainer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The gqa fixture model with the case's base size, in a temporary directory.
fn model_dir(case: &serde_json::Value, tmp: &Path) -> PathBuf {
    let src = fixtures().join("deepseek_ocr/gqa");
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config = read_json(src.join("config.json"));
    config["base_size"] = case["base_size"].clone();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn train_config(case: &serde_json::Value, out: &Path) -> TrainConfig {
    let u = |k: &str| case[k].as_u64().unwrap() as usize;
    let f = |k: &str| case[k].as_f64().unwrap();
    TrainConfig {
        stage: u("stage") as u8,
        freeze_vision: case["freeze"] == "vision",
        batch_size: u("batch_size"),
        lr: f("lr"),
        schedule: match case["schedule"].as_str().unwrap() {
            "cosine" => Schedule::Cosine {
                warmup: u("warmup_steps"),
                steps: u("steps"),
            },
            _ => Schedule::Step {
                warmup: u("warmup_steps"),
                decay_step: u("lr_decay_step"),
                gamma: f("lr_decay_gamma"),
            },
        },
        adamw: AdamWConfig {
            weight_decay: f("weight_decay"),
            ..Default::default()
        },
        grad_clip: f("grad_clip"),
        seq_len: u("seq_len"),
        shuffle: false,
        eval_every: 0,
        ..TrainConfig::new(fixtures().join("train/data"), out.to_path_buf(), u("steps"))
    }
}

/// A tensor the fixture stores in full, or as its L2 norm and 512 strided samples.
fn compare(expected: &BTreeMap<String, Tensor>, kind: &str, name: &str, got: &Tensor, tol: f64) -> f64 {
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    if let Some(want) = expected.get(&format!("{kind}.{name}")) {
        return rel_l2(&got, &want.flatten_all().unwrap());
    }
    let norm = expected[&format!("norm.{kind}.{name}")]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
    let sample = &expected[&format!("sample.{kind}.{name}")];
    let n = got.dim(0).unwrap();
    let stride = n / 512;
    let idx: Vec<u32> = (0..sample.elem_count()).map(|i| (i * stride) as u32).collect();
    let picked = got
        .index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap();
    let got_norm = got
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let norm_err = (got_norm - norm).abs() / norm.max(1e-30);
    assert!(norm_err < tol, "{kind} {name}: norm {got_norm} vs {norm}");
    rel_l2(&picked, &sample.flatten_all().unwrap())
}

/// A fixture case: its case.json, the model at its base size (in `tmp`), its training config
/// and the train split.
fn open_case(name: &str, tmp: &Path) -> (serde_json::Value, Arc<Model>, TrainConfig, Dataset) {
    let case = read_json(fixtures().join("train").join(name).join("case.json"));
    let files = ModelFiles::from_dir(&model_dir(&case, tmp)).unwrap();
    let model = Arc::new(Model::load(&files, DType::F32, &Device::Cpu).unwrap());
    let config = train_config(&case, &tmp.join("out"));
    let data = Dataset::open(&config.data, "train").unwrap();
    (case, model, config, data)
}

fn check_case(name: &str) {
    let expected: BTreeMap<String, Tensor> = candle_core::safetensors::load(
        fixtures().join("train").join(name).join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .into_iter()
    .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (case, model, config, data) = open_case(name, tmp.path());

    // The same batches, token for token.
    let encoder = Encoder::new(&model).unwrap();
    let batches = case["batches"].as_array().unwrap();
    let mut first = Vec::new();
    for (step, batch) in batches.iter().enumerate() {
        for (row, i) in batch.as_array().unwrap().iter().enumerate() {
            let (ex, _) = encoder
                .example(&data, i.as_u64().unwrap() as usize, config.seq_len)
                .unwrap();
            assert_eq!(
                ex.input_ids,
                common::u32s(&case["inputs"][step][row]),
                "{name}: inputs of step {step} row {row}"
            );
            let targets: Vec<i64> = case["targets"][step][row]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap())
                .collect();
            assert_eq!(ex.targets, targets, "{name}: targets of step {step} row {row}");
            if step == 0 {
                first.push(ex);
            }
        }
    }

    // Step 0's gradients, before clipping.
    let frozen = model.frozen(&config).unwrap();
    let view = Trainable::training_view(model.as_ref(), frozen.clone()).unwrap();
    let (sum, count) = view.loss_sum(&first.iter().collect::<Vec<_>>()).unwrap();
    let loss = (sum / count as f64).unwrap();
    let grads = loss.backward().unwrap();
    // And with gradient checkpointing: SAM blocks and GPT layers recomputed one at a time.
    let mut checkpointed: BTreeMap<String, Tensor> = BTreeMap::new();
    let batch: Vec<_> = first.iter().collect();
    view.backward(&batch, 1.0 / count as f64, true, |store| {
        Ok(common::add_grads(&mut checkpointed, model.params(), store)?)
    })
    .unwrap();
    for (how, got) in [("whole graph", None), ("checkpointed", Some(&checkpointed))] {
        let mut worst = (0f64, String::new());
        for (pname, var) in model.params().vars() {
            let g = match got {
                Some(got) => got.get(pname),
                None => grads.get(var.as_tensor()),
            };
            let Some(g) = g else {
                assert!(
                    !expected.contains_key(&format!("grad.{pname}"))
                        && !expected.contains_key(&format!("norm.grad.{pname}")),
                    "{name} ({how}): {pname} has a reference gradient but none here"
                );
                continue;
            };
            let err = compare(&expected, "grad", pname, g, 1e-4);
            if err > worst.0 {
                worst = (err, pname.clone());
            }
        }
        eprintln!(
            "{name} ({how}): worst step-0 gradient rel L2 {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(
            worst.0 < 1e-4,
            "{name} ({how}): gradient of {} off by {:.2e}",
            worst.1,
            worst.0
        );
    }

    // Six optimizer steps.
    let before: BTreeMap<String, Tensor> = model
        .params()
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach().copy().unwrap()))
        .collect();
    let mut trainer = Trainer::new(model.clone(), config, None).unwrap();
    for want in case["log"].as_array().unwrap() {
        let got = trainer.step().unwrap();
        let rel = |a: f64, k: &str| (a - want[k].as_f64().unwrap()).abs() / want[k].as_f64().unwrap().abs();
        eprintln!(
            "{name} step {}: loss {:.6} (rel {:.1e}), grad norm {:.5} (rel {:.1e}), lr {:.4e}",
            got.step,
            got.loss,
            rel(got.loss, "loss"),
            got.grad_norm,
            rel(got.grad_norm, "grad_norm"),
            got.lr
        );
        assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap());
        assert!(rel(got.loss, "loss") < 1e-4, "{name} step {}: loss", got.step);
        assert!(
            rel(got.grad_norm, "grad_norm") < 1e-4,
            "{name} step {}: grad norm",
            got.step
        );
        assert!(rel(got.lr, "lr") < 1e-9, "{name} step {}: lr", got.step);
    }
    let mut worst = (0f64, String::new());
    for (pname, var) in model.params().vars() {
        let update = (var.as_tensor().detach() - &before[pname]).unwrap();
        // Frozen, integer buffers, and what the loss never reaches (CLIP's unused patch
        // embedding: AdamW skips it, no decay either) stay exactly as they were.
        let untouched = case["no_grad"].as_array().unwrap().iter().any(|n| n == pname.as_str());
        if frozen(pname) || !var.dtype().is_float() || untouched {
            let moved = update
                .to_dtype(DType::F64)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(moved, 0.0, "{name}: frozen {pname} moved");
            continue;
        }
        // A key bias adds the same q·b to every score of a row: softmax cancels it, its
        // gradient is rounding noise (≈1e-9 here, in both implementations), and AdamW's
        // normalisation turns noise into ±lr steps of random sign. Compare the query and value
        // thirds; the key third's gradient must be noise-sized.
        let (update, expected_update) = if pname.ends_with("qkv_proj.bias") || pname.ends_with("attn.qkv.bias") {
            let third = update.dim(0).unwrap() / 3;
            let g = grads.get(var.as_tensor()).unwrap();
            let max_abs = |start: usize| {
                let part = g.narrow(0, start, third).unwrap();
                part.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
            };
            let (query, key) = (max_abs(0), max_abs(third));
            assert!(
                key < 1e-4 * query.max(1e-3),
                "{name}: {pname} key-bias gradient {key} is not noise"
            );
            let keep = |t: &Tensor| {
                Tensor::cat(
                    &[t.narrow(0, 0, third).unwrap(), t.narrow(0, 2 * third, third).unwrap()],
                    0,
                )
                .unwrap()
            };
            let mut e = BTreeMap::new();
            e.insert(format!("update.{pname}"), keep(&expected[&format!("update.{pname}")]));
            (keep(&update), e)
        } else {
            (update, BTreeMap::new())
        };
        let source = if expected_update.is_empty() {
            &expected
        } else {
            &expected_update
        };
        let err = compare(source, "update", pname, &update, 1e-2);
        if err > worst.0 {
            worst = (err, pname.clone());
        }
    }
    eprintln!("{name}: worst total update rel L2 {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 < 1e-2, "{name}: update of {} off by {:.2e}", worst.1, worst.0);
}

#[test]
fn stage1_base1024_matches_the_fork() {
    check_case("stage1_b1024");
}

#[test]
fn stage1_base512_matches_the_fork() {
    check_case("stage1_b512");
}

#[test]
fn stage2_base512_matches_the_fork_with_sam_frozen() {
    check_case("stage2_b512");
}

#[test]
fn frozen_vision_matches_the_fork_with_sam_clip_and_projector_frozen() {
    check_case("frozen_vision_b512");
}

/// `--dtype bf16` (f32 master weights, the linear layers computing in bf16) against the fork's
/// model under `torch.autocast("cpu", dtype=torch.bfloat16)`: step 0's loss and gradient norm.
/// PyTorch also runs the attention's matmuls and the convolutions in bf16, vellum keeps them in
/// f32, so the two agree to bf16 noise rather than bit for bit.
#[test]
fn bf16_autocast_matches_torch_autocast() {
    for name in ["stage1_b512", "stage2_b512"] {
        let tmp = tempfile::tempdir().unwrap();
        let (case, model, config, data) = open_case(name, tmp.path());
        let encoder = Encoder::new(&model).unwrap();
        let first: Vec<_> = case["batches"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                encoder
                    .example(&data, i.as_u64().unwrap() as usize, config.seq_len)
                    .unwrap()
                    .0
            })
            .collect();
        let view = Trainable::training_view(model.as_ref(), model.frozen(&config).unwrap()).unwrap();
        let step0 = |dtype: Option<DType>| {
            vellum::ops::autocast::scope(dtype, || {
                let (sum, count) = view.loss_sum(&first.iter().collect::<Vec<_>>()).unwrap();
                let loss = (sum / count as f64).unwrap();
                let grads = loss.backward().unwrap();
                let mut sq = 0f64;
                for var in model.params().vars().values() {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        sq += g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
                    }
                }
                (loss.to_scalar::<f32>().unwrap() as f64, sq.sqrt())
            })
        };
        let (loss, norm) = step0(Some(DType::BF16));
        let (loss_f32, norm_f32) = step0(None);
        let want = &case["autocast_bf16_step0"];
        let (want_loss, want_norm) = (want["loss"].as_f64().unwrap(), want["grad_norm"].as_f64().unwrap());
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        eprintln!(
            "{name}: bf16 autocast loss {loss:.6} vs torch {want_loss:.6} (rel {:.1e}; f32 {loss_f32:.6}), \
             grad norm {norm:.5} vs {want_norm:.5} (rel {:.1e}; f32 {norm_f32:.5})",
            rel(loss, want_loss),
            rel(norm, want_norm)
        );
        assert!(rel(loss, want_loss) < 1e-2, "{name}: loss {loss} vs {want_loss}");
        assert!(rel(norm, want_norm) < 2e-2, "{name}: grad norm {norm} vs {want_norm}");
        // The scope took effect: bf16 rounding moved the loss off the f32 one.
        assert!(loss != loss_f32, "{name}: autocast changed nothing");
    }
}
