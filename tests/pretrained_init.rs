//! The fork's pretrained start against vellum's (tests/reference/make_pretrained_init_fixtures.py:
//! the fork's own load functions and vocabulary growth on tiny random stand-ins of
//! facebook/sam-vit-base, openai/clip-vit-large-patch14 and nanochat-students/base-d20 kept in
//! an HF cache): every loaded tensor exactly, the fresh ones by shape and by the fork's init;
//! the written directory opens and generates; `ocr init` and `ocr train --init pretrained` find
//! the three by their hub ids in the cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig};
use vellum::models::deepseek_ocr::pretrained::{self, HeadSource, Sources};

use crate::common;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretrained_init")
}

/// The snapshot directory of a stand-in in the fixture's HF cache.
fn snapshot(repo_id: &str) -> PathBuf {
    let repo = fixtures()
        .join("hub")
        .join(format!("models--{}", repo_id.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    repo.join("snapshots").join(commit.trim())
}

/// The stand-ins as directories (hub ids are resolved in the CLI test, whose process can set
/// HF_HUB_CACHE without racing the other tests).
fn sources(seed: u64) -> Sources {
    Sources {
        sam: snapshot(pretrained::SAM_ID).display().to_string(),
        clip: snapshot(pretrained::CLIP_ID).display().to_string(),
        gpt: snapshot(pretrained::GPT_ID).display().to_string(),
        base_size: 128,
        seed,
        ..Sources::new(fixtures().join("tokenizer.json"))
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn std_dev(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// A sample std within 4 standard errors of `want` (relative error of a std ≈ 1/√(2n)).
fn assert_std(what: &str, got: f64, want: f64, n: usize) {
    let tol = 4.0 / (2.0 * n as f64).sqrt();
    assert!(
        (got / want - 1.0).abs() <= tol,
        "{what}: std {got:.5}, the fork's init has {want:.5} (n = {n}, tolerance {tol:.3})"
    );
}

#[test]
fn pretrained_start_is_the_forks() {
    let expected = common::read_json(fixtures().join("expected.json"));
    let loaded = candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap();
    let meta = expected["tensors"].as_object().unwrap();
    let initial = pretrained::state_dict(&sources(0)).unwrap();
    let ours = &initial.tensors;

    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    assert_eq!(names, meta.keys().collect::<Vec<_>>(), "the fork's state dict names");
    let (mut exact, mut fresh) = (0, 0);
    for (name, m) in meta {
        let t = &ours[name];
        let shape: Vec<usize> = m["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}: shape");
        if let Some(want) = loaded.get(name) {
            let rows = want.dim(0).unwrap_or(1);
            let got = if want.dims() == t.dims() {
                t.clone()
            } else {
                t.narrow(0, 0, rows).unwrap()
            };
            assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
            let same = if want.dtype() == DType::I64 {
                got.flatten_all().unwrap().to_vec1::<i64>().unwrap()
                    == want.flatten_all().unwrap().to_vec1::<i64>().unwrap()
            } else {
                values(&got) == values(want)
            };
            assert!(same, "{name}: not the fork's loaded values");
            exact += 1;
        } else {
            assert!(
                m.get("dist").is_some(),
                "{name}: neither loaded nor fresh in the fixture"
            );
            fresh += 1;
        }
    }
    assert_eq!((exact, fresh), (meta.len() - 6, 6));

    // Fresh values: pooled over seeds, so that the statistics of 16-element vectors mean something.
    let seeds: Vec<HashMap<String, Tensor>> = (0..8)
        .map(|s| pretrained::state_dict(&sources(s)).unwrap().tensors)
        .collect();
    assert!(
        seeds[1]["image_newline"]
            .ne(&seeds[0]["image_newline"])
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<u8>()
            .unwrap()
            > 0
    );
    let again = pretrained::state_dict(&sources(0)).unwrap().tensors;
    assert_eq!(
        values(&again["sam_model.net_3.weight"]),
        values(&ours["sam_model.net_3.weight"]),
        "one seed, one start"
    );
    let pretrained_vocab = expected["pretrained_vocab"].as_u64().unwrap() as usize;
    for (name, m) in meta {
        let pooled: Vec<f32> = if m.get("dist").is_some() {
            seeds.iter().flat_map(|s| values(&s[name])).collect()
        } else if m.get("rows_dist").is_some() {
            let n = m["shape"][0].as_u64().unwrap() as usize - pretrained_vocab;
            seeds
                .iter()
                .flat_map(|s| values(&s[name].narrow(0, pretrained_vocab, n).unwrap()))
                .collect()
        } else {
            continue;
        };
        let got = std_dev(&pooled);
        match (m.get("dist").and_then(|d| d.as_str()), m.get("rows_std")) {
            (Some("uniform"), _) => {
                let bound = m["bound"].as_f64().unwrap();
                let max = pooled.iter().fold(0f32, |a, &x| a.max(x.abs())) as f64;
                assert!(max <= bound, "{name}: |x| up to {max}, beyond U(±{bound})");
                assert_std(name, got, bound / 3f64.sqrt(), pooled.len());
                assert_std(
                    &format!("{name} (the fork's draw)"),
                    m["measured_std"].as_f64().unwrap(),
                    bound / 3f64.sqrt(),
                    pooled.len() / seeds.len(),
                );
            }
            (Some("normal"), _) => {
                let std = m["std"].as_f64().unwrap();
                assert_std(name, got, std, pooled.len());
                assert_std(
                    &format!("{name} (the fork's draw)"),
                    m["measured_std"].as_f64().unwrap(),
                    std,
                    pooled.len() / seeds.len(),
                );
            }
            (_, Some(std)) => assert_std(&format!("{name} new rows"), got, std.as_f64().unwrap(), pooled.len()),
            other => panic!("{name}: unknown init {other:?}"),
        }
    }

    let c = &initial.config;
    assert_eq!(initial.head_source, HeadSource::CheckpointConfig);
    assert_eq!(
        (c.gpt.n_head, c.gpt.n_layer, c.gpt.n_embd),
        (expected["n_head"].as_u64().unwrap() as usize, 2, 16)
    );
    assert_eq!(c.gpt.vocab_size as u64, expected["tokenizer_vocab"].as_u64().unwrap());
    assert_eq!(c.image_token_id as u64, expected["image_token_id"].as_u64().unwrap());
    assert_eq!(c.clip.num_heads as u64, expected["clip_heads"].as_u64().unwrap());
    assert_eq!(
        (c.clip.num_layers, c.clip.hidden_size, c.clip.num_positions),
        (24, 8, 5)
    );
    let s = &c.sam;
    assert_eq!(
        (s.img_size, s.depth, s.embed_dim, s.num_heads, s.window_size),
        (128, 12, 8, 2, 4)
    );
    assert_eq!(s.global_attn_indexes, vec![2, 5, 8, 11]);
    assert_eq!((s.out_chans, s.net_2_chans, s.net_3_chans), (8, 16, 8));
}

#[test]
fn written_start_opens_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("init");
    let initial = pretrained::write(&sources(3), &dir).unwrap();
    let saved = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(saved.len(), initial.tensors.len());
    for (name, t) in &initial.tensors {
        if t.dtype() == DType::F32 {
            assert_eq!(values(&saved[name]), values(t), "{name}");
        }
    }
    let model = vellum::models::open(dir.to_str().unwrap(), &Device::Cpu, Default::default()).unwrap();
    assert_eq!(model.info().vocab_size, 522);
    let engine = Engine::new(Arc::clone(&model), EngineConfig::default()).unwrap();
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(90, 60, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, 128])
    }));
    let params = SamplingParams {
        max_new_tokens: Some(4),
        ignore_eos: true,
        ..Default::default()
    };
    let out = engine.generate(&image, "Free OCR.", params).unwrap();
    assert_eq!(out.tokens.len(), 4);
    assert!(
        out.tokens
            .iter()
            .all(|&t| t < 522 && t != initial.config.image_token_id),
        "{:?}",
        out.tokens
    );
}

#[test]
fn ocr_init_and_train_find_the_checkpoints_by_hub_id() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("init");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ocr"))
            .args(args)
            .env("HF_HUB_CACHE", fixtures().join("hub"))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "ocr {args:?}: {err}");
        err
    };
    let tokenizer = fixtures().join("tokenizer.json");
    let tok = tokenizer.to_str().unwrap();
    let err = run(&[
        "init",
        "--pretrained",
        out.to_str().unwrap(),
        "--tokenizer",
        tok,
        "--base-size",
        "128",
        "--seed",
        "5",
    ]);
    assert!(
        err.contains(pretrained::SAM_ID) && err.contains("vocabulary 512 → 522"),
        "{err}"
    );
    let written = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let want = pretrained::state_dict(&sources(5)).unwrap().tensors;
    assert_eq!(
        values(&written["projector.layers.weight"]),
        values(&want["projector.layers.weight"])
    );
    assert_eq!(
        values(&written["gpt.lm_head.weight"]),
        values(&want["gpt.lm_head.weight"])
    );

    let runs = tmp.path().join("runs");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/data");
    let (data, runs_s) = (data.to_str().unwrap(), runs.to_str().unwrap());
    run(&[
        "train",
        "--init",
        "pretrained",
        "--tokenizer",
        tok,
        "--base-size",
        "128",
        "--seed",
        "5",
        "--data",
        data,
        "--out",
        runs_s,
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--seq-len",
        "64",
        "--eval-every",
        "0",
    ]);
    let start = candle_core::safetensors::load(runs.join("init/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        values(&start["image_newline"]),
        values(&want["image_newline"]),
        "the same start as ocr init's"
    );
    assert!(runs.join("final/model.safetensors").is_file());
}
