//! `ocr train --resume` after a SIGKILL ends bit-identical to an uninterrupted run (CPU, f32):
//! the same final weights, byte for byte, and the same step log.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The gqa fixture model at base size 512 (73 image tokens: fast steps).
fn model_dir(tmp: &Path) -> PathBuf {
    let src = fixtures().join("deepseek_ocr/gqa");
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config = common::read_json(src.join("config.json"));
    config["base_size"] = 512.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn train(model: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocr"));
    cmd.args(["train", "--model"])
        .arg(model)
        .arg("--data")
        .arg(fixtures().join("train/data"))
        .arg("--out")
        .arg(out)
        .args([
            "--steps",
            "8",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "2",
        ])
        .args([
            "--seq-len",
            "116",
            "--save-every",
            "1",
            "--eval-every",
            "0",
            "--seed",
            "7",
        ])
        .arg("--log-json")
        .arg(out.with_extension("jsonl"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[test]
fn a_killed_run_resumes_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());

    let whole = tmp.path().join("whole");
    assert!(train(&model, &whole, &[]).status().unwrap().success());

    let killed = tmp.path().join("killed");
    let mut child = train(&model, &killed, &[]).spawn().unwrap();
    let started = Instant::now();
    while !killed.join("step_3/trainer_state.json").exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("final").exists(), "killed too late to test anything");

    assert!(train(&model, &killed, &["--resume"]).status().unwrap().success());
    let read = |dir: &Path| std::fs::read(dir.join("final/model.safetensors")).unwrap();
    assert!(read(&whole) == read(&killed), "final weights differ after resuming");
    let log = |dir: &Path| std::fs::read_to_string(dir.with_extension("jsonl")).unwrap();
    assert_eq!(log(&whole), log(&killed));
    assert_eq!(log(&whole).lines().count(), 8);
    // The resumed run's report has every step, the ones before the kill included.
    let report = |dir: &Path| std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(report(&whole), report(&killed));
}
