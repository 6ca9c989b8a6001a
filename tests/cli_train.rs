//! `ocr train` refuses a bad setup before the first step, naming what is wrong, and writes
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    train_model(&fixtures().join("deepseek_ocr/gqa"), data, out, extra)
}

fn train_model(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["train", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--steps", "2", "--batch-size", "2"])
        .args(extra)
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn bad_setups_fail_before_the_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    for f in ["train.json", "val.json"] {
        std::fs::copy(fixtures().join("train/data").join(f), data.join(f)).unwrap();
    }
    for f in std::fs::read_dir(fixtures().join("train/data/images")).unwrap() {
        let f = f.unwrap().path();
        if !f.ends_with("story.png") {
            std::fs::copy(&f, data.join("images").join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("out");
    let (ok, err) = train(&data, &out, &[]);
    assert!(!ok);
    assert!(err.contains("train.json") && err.contains("images/story.png"), "{err}");
    assert!(!out.exists(), "nothing is written for a bad setup");

    let good = fixtures().join("train/data");
    let (ok, err) = train(&good, &out, &["--dtype", "f16"]);
    assert!(!ok && err.contains("bf16 autocast"), "{err}");
    let (ok, err) = train(&good, &out, &["--text-ratio", "0.1"]);
    assert!(!ok && err.contains("--text-data"), "{err}");
    let (ok, err) = train(&good, &out, &["--stage", "3"]);
    assert!(!ok && err.contains("--stage"), "{err}");
    assert!(!out.exists(), "nothing is written for a bad setup");

    // A model vellum does not run is refused by its architecture's name.
    let llama = tmp.path().join("llama");
    std::fs::create_dir_all(&llama).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("deepseek_ocr/gqa").join(f), llama.join(f)).unwrap();
    }
    std::fs::write(llama.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"]}"#).unwrap();
    let (ok, err) = train_model(&llama, &good, &out, &[]);
    assert!(
        !ok && err.contains("LlamaForCausalLM") && err.contains("vellum runs"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written for a bad setup");
}

#[test]
fn flags_that_make_no_sense_are_refused_by_name() {
    let bin = env!("CARGO_BIN_EXE_ocr");
    let cases: &[(&[&str], &str)] = &[
        (
            &["generate", "--model", "m", "--image", "i", "--temperature=-1"],
            "--temperature",
        ),
        (
            &["generate", "--model", "m", "--image", "i", "--temperature", "nan"],
            "--temperature",
        ),
        (
            &["run", "x", "--model", "m", "--out", "o", "--chunk-size", "0"],
            "--chunk-size",
        ),
        (
            &["run", "x", "--model", "m", "--out", "o", "--max-bad-page-rate", "7"],
            "--max-bad-page-rate",
        ),
        (
            &["run", "x", "--model", "m", "--out", "o", "--max-num-seqs", "0"],
            "--max-num-seqs",
        ),
        (
            &["run", "x", "--model", "m", "--out", "o", "--kv-cache-gib", "0"],
            "--kv-cache-gib",
        ),
        (&["bench", "--model", "m", "--batches", "0"], "--batches"),
        (
            &["train", "--model", "m", "--data", "d", "--out", "o", "--steps", "0"],
            "--steps",
        ),
        (
            &[
                "train", "--model", "m", "--data", "d", "--out", "o", "--steps", "1", "--lr=-1",
            ],
            "--lr",
        ),
        (
            &[
                "train",
                "--model",
                "m",
                "--data",
                "d",
                "--out",
                "o",
                "--steps",
                "1",
                "--text-ratio",
                "2",
            ],
            "--text-ratio",
        ),
    ];
    for (args, flag) in cases {
        let o = Command::new(bin).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

/// A Qwen2.5-VL model fine-tunes the olmOCR way from the command line (LoRA, linear schedule
/// with warmup ratio, gradient checkpointing), and what it writes is served by `ocr generate`.
#[test]
fn a_qwen_model_trains_lora_from_the_command_line_and_its_adapter_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("log.jsonl");
    let model = fixtures().join("qwen2_5_vl/models/gqa_window4/model");
    let data = fixtures().join("qwen_train/data");
    let o = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["train", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["--steps", "2", "--batch-size", "2", "--no-shuffle", "--eval-every", "1"])
        .args([
            "--schedule",
            "linear",
            "--warmup-ratio",
            "0.1",
            "--lr",
            "2e-3",
            "--weight-decay",
            "0.01",
        ])
        .args([
            "--lora",
            "4",
            "--lora-alpha",
            "8",
            "--gradient-checkpointing",
            "--log-json",
        ])
        .arg(&log)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    for dir in ["final", "best"] {
        assert!(out.join(dir).join("adapter_config.json").is_file(), "{dir}: {err}");
        assert!(
            !out.join(dir).join("model.safetensors").exists(),
            "{dir} holds the adapters only"
        );
    }
    let g = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["generate", "--model"])
        .arg(out.join("final"))
        .arg("--image")
        .arg(data.join("images/v0.png"))
        .args(["--max-new-tokens", "4"])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));

    // The other model's option is refused by name, before anything is written.
    let bad = tmp.path().join("bad");
    let (ok, err) = train(&fixtures().join("train/data"), &bad, &["--lora", "4"]);
    assert!(!ok && err.contains("--lora"), "{err}");
    assert!(!bad.exists());
}

/// `ocr eval` scores a model's greedy answers: each sample's CER is the character edit
/// distance to its reference over the reference's length, the summary their mean, and
/// `--blank` asks the same pages with white images.
#[test]
fn eval_scores_generations_and_blanks_the_images_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("deepseek_ocr/gqa");
    let data = fixtures().join("train/data");
    let run = |blank: bool| {
        let json = tmp.path().join(format!("eval-{blank}.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocr"));
        cmd.args(["eval", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(["--limit", "2", "--max-new-tokens", "8", "--json"])
            .arg(&json);
        if blank {
            cmd.arg("--blank");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        (stdout, common::read_json(&json))
    };
    let (stdout, real) = run(false);
    assert!(stdout.contains("2 pages: CER"), "{stdout}");
    let samples = real["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    let mut sum = 0.0;
    for s in samples {
        let (out, reference): (Vec<char>, Vec<char>) = (
            s["output"].as_str().unwrap().chars().collect(),
            s["reference"].as_str().unwrap().chars().collect(),
        );
        // Levenshtein distance, written out here as the reference for the metric.
        let mut row: Vec<usize> = (0..=reference.len()).collect();
        for (i, a) in out.iter().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, b) in reference.iter().enumerate() {
                let next = (prev + usize::from(a != b)).min(row[j] + 1).min(row[j + 1] + 1);
                prev = row[j + 1];
                row[j + 1] = next;
            }
        }
        let cer = row[reference.len()] as f64 / reference.len() as f64;
        assert!((s["cer"].as_f64().unwrap() - cer).abs() < 1e-12, "{s}");
        sum += cer;
    }
    assert!((real["cer"].as_f64().unwrap() - sum / 2.0).abs() < 1e-12);
    let (stdout, blank) = run(true);
    assert!(stdout.contains("(blank images)"), "{stdout}");
    assert_eq!(blank["blank"], true);
    assert_eq!(blank["samples"].as_array().unwrap().len(), 2);
}
