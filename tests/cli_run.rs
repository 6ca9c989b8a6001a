//! `ocr run`: documents in the DataTrove shape, text-layer pages from pdfium, scanned pages
//! through the engine with retries and fallback, bad files in failed/ without stopping the run,
//! and a clear per-page reason when no model is usable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
}

/// Every document line under `dir` (chunk files in name order).
fn documents(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "jsonl")
                        && p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(|c: char| c.is_ascii_digit())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn run(model: &str, out: &Path, inputs: &[PathBuf], extra: &[&str]) -> (Option<i32>, Vec<Value>, Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .args(inputs)
        .args(["--model", model, "--max-new-tokens", "6", "--out"])
        .arg(out)
        .args(extra)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (
        output.status.code(),
        documents(&out.join("00000")),
        documents(&out.join("failed/00000")),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn pages_take_the_text_layer_or_the_model_and_bad_files_go_to_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = tmp.path().join("corrupt.pdf");
    std::fs::write(&corrupt, b"%PDF-1.4 nothing else").unwrap();
    let model = common::fixtures().join("models/gqa_window4/model");
    let inputs = [sample("edgar.pdf"), corrupt.clone(), sample("edgar_image.pdf")];
    // A fallback page does not fail its document here (the tiny model never ends a page).
    let (code, docs, failed, stderr) = run(
        model.to_str().unwrap(),
        &tmp.path().join("out"),
        &inputs,
        &["--max-bad-page-rate", "1", "--max-retries", "1"],
    );
    assert_eq!(code, Some(1), "a failed document makes the exit status 1: {stderr}");
    assert_eq!(docs.len(), 2);
    let by_id = |id: &Path| {
        docs.iter()
            .find(|d| d["id"] == id.display().to_string())
            .unwrap_or_else(|| panic!("{id:?} missing"))
    };
    let edgar = by_id(&inputs[0]);
    assert_eq!(edgar["media"], serde_json::json!([]));
    assert_eq!(edgar["metadata"]["pages"][0]["route"], "text_layer");
    assert!(edgar["text"].as_str().unwrap().contains("Edgar"));
    let scan = &by_id(&inputs[2])["metadata"]["pages"][0];
    assert_eq!(scan["route"], "ocr");
    // Six tokens is never a whole page: retried once, then the (empty) text layer.
    assert_eq!(scan["attempts"], 2);
    assert_eq!(scan["fallback"], true);
    assert_eq!(scan["error"], "length");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], corrupt.display().to_string());
    assert!(failed[0]["metadata"]["failure"].as_str().unwrap().contains("corrupt"));
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out/00000/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["documents_written"], 3);
    assert_eq!(stats["pages_fallback"], 1);
    assert_eq!(stats["pages_retried"], 1);
}

#[test]
fn documents_with_too_many_bad_pages_go_to_failed_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixtures().join("models/gqa_window4/model");
    let (code, docs, failed, _) = run(
        model.to_str().unwrap(),
        &tmp.path().join("out"),
        &[sample("edgar_image.pdf")],
        &["--max-retries", "0"],
    );
    assert_eq!(code, Some(1));
    assert!(docs.is_empty());
    assert!(failed[0]["metadata"]["failure"]
        .as_str()
        .unwrap()
        .contains("1 of 1 OCR pages fell back"));
}

#[test]
fn without_a_model_scanned_pages_say_why_and_keep_their_text_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [sample("small_page_size.pdf"), sample("olmo-page-1.pdf")];
    let (_, docs, failed, stderr) = run(
        "vellum-test/not-in-any-cache",
        &tmp.path().join("out"),
        &inputs,
        &["--max-bad-page-rate", "1"],
    );
    assert!(stderr.contains("not usable"), "{stderr}");
    assert!(failed.is_empty());
    let scanned = &docs
        .iter()
        .find(|d| d["id"].as_str().unwrap().ends_with("small_page_size.pdf"))
        .unwrap()["metadata"]["pages"][0];
    assert_eq!(scanned["route"], "ocr");
    assert!(scanned["error"].as_str().unwrap().contains("no model is available"));
    assert!(scanned["error"].as_str().unwrap().contains("not available offline"));
    // Its old OCR layer is kept as the page's text.
    assert!(!scanned["text"].as_str().unwrap().is_empty());
}

#[test]
fn markdown_and_gzip_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let folder = tmp.path().join("corpus");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::copy(sample("olmo-page-1.pdf"), folder.join("sub/olmo.pdf")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args([
            "run",
            folder.to_str().unwrap(),
            "--model",
            "none/none",
            "--gzip",
            "--markdown",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .unwrap();
    assert!(status.success());
    // Ids are relative to the folder given (with its name): deterministic across machines.
    let md = std::fs::read_to_string(out.join("markdown/corpus/sub/olmo.pdf.md")).unwrap();
    assert!(md.len() > 1000);
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(out.join("00000/00000.jsonl.gz")).unwrap()),
        &mut text,
    )
    .unwrap();
    let doc: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(doc["id"], "corpus/sub/olmo.pdf");
}
