//! `ocr run`: documents in input order, text-layer pages from pdfium, scanned pages through the
//! engine, bad files reported without stopping the run, and a clear per-page reason when no
//! model is usable.

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn shared(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/pdfs")
        .join(name)
}

fn run(model: &str, out: &std::path::Path, inputs: &[PathBuf]) -> (bool, Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .args(inputs)
        .args(["--model", model, "--max-new-tokens", "8", "--out"])
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let lines = std::fs::read_to_string(out.join("documents.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        output.status.success(),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn text_pages_come_from_the_text_layer_and_scans_from_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = tmp.path().join("corrupt.pdf");
    std::fs::write(&corrupt, b"%PDF-1.4 nothing else").unwrap();
    let scan = tmp.path().join("scan.png");
    image::RgbImage::from_fn(120, 90, |x, y| image::Rgb([(x * 2) as u8, (y * 2) as u8, 99]))
        .save(&scan)
        .unwrap();
    let model = common::fixtures().join("models/gqa_window4/model");
    let inputs = [shared("edgar.pdf"), corrupt.clone(), shared("edgar_image.pdf"), scan];
    let (ok, docs, stderr) = run(model.to_str().unwrap(), &tmp.path().join("out"), &inputs);
    assert!(!ok, "an unreadable document makes the exit status non-zero");
    assert!(stderr.contains("4 documents (1 unreadable)"), "{stderr}");
    assert_eq!(docs.len(), 4);
    for (doc, input) in docs.iter().zip(&inputs) {
        assert_eq!(doc["id"], input.display().to_string(), "input order is kept");
    }
    let edgar = &docs[0]["metadata"]["pages"][0];
    assert_eq!(edgar["route"], "text_layer");
    assert!(docs[0]["text"].as_str().unwrap().contains("Edgar"));
    assert_eq!(docs[1]["metadata"]["error"]["kind"], "corrupt");
    for doc in &docs[2..] {
        let page = &doc["metadata"]["pages"][0];
        assert_eq!(page["route"], "ocr");
        assert_eq!(page["generated_tokens"], 8);
        assert_eq!(page["finish_reason"], "length");
        assert!(page.get("error").is_none(), "{page}");
    }
}

#[test]
fn without_a_model_scanned_pages_say_why_and_keep_their_text_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = [shared("small_page_size.pdf"), shared("olmo-page-1.pdf")];
    let (ok, docs, stderr) = run("vellum-test/not-in-any-cache", &tmp.path().join("out"), &inputs);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("not usable"), "{stderr}");
    let scanned = &docs[0]["metadata"]["pages"][0];
    assert_eq!(scanned["route"], "ocr");
    assert!(scanned["error"].as_str().unwrap().contains("no model is available"));
    assert!(scanned["error"].as_str().unwrap().contains("not available offline"));
    // Its old OCR layer is kept as the page's text.
    assert!(!scanned["text"].as_str().unwrap().is_empty());
    assert_eq!(docs[1]["metadata"]["pages"][0]["route"], "text_layer");
}
