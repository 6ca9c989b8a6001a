//! `ocr prepare` on olmOCR-mix pages, in the unpacked layout (allenai/olmocr's sample dataset)
//! and as the hub lays it out (tests/reference/make_olmocr_mix_fixture.py: parquet + tarballs):
//! the fork's filters, 150-DPI renders, type-specific prompts, skipped rows reported.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `ocr prepare INPUT --out OUT ARGS...`: train.json, val.json and report.json.
fn prepare(input: &Path, out: &Path, args: &[&str]) -> [serde_json::Value; 3] {
    let status = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("prepare")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    ["train.json", "val.json", "report.json"]
        .map(|f| serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap())
}

#[test]
fn olmocr_pages_become_training_samples() {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/olmocr-format");
    let tmp = tempfile::tempdir().unwrap();
    // A row whose PDF is missing and a row that is not English: skipped, with reasons.
    std::fs::copy(input.join("edgar.md"), tmp.path().join("orphan.md")).unwrap();
    let french = std::fs::read_to_string(input.join("edgar.md"))
        .unwrap()
        .replace("primary_language: en", "primary_language: fr");
    std::fs::write(tmp.path().join("french.md"), french).unwrap();
    std::fs::copy(input.join("edgar.pdf"), tmp.path().join("french.pdf")).unwrap();
    // A document page of reasonable length (untable's own text is over the 10,000 limit).
    let untable = std::fs::read_to_string(input.join("untable.md")).unwrap();
    let short: String = untable
        .replace("is_table: True", "is_table: False")
        .chars()
        .take(600)
        .collect();
    std::fs::write(tmp.path().join("short.md"), short).unwrap();
    std::fs::copy(input.join("untable.pdf"), tmp.path().join("short.pdf")).unwrap();
    for f in [
        "edgar.md",
        "edgar.pdf",
        "untable.md",
        "untable.pdf",
        "blanktext.md",
        "blanktext.pdf",
    ] {
        std::fs::copy(input.join(f), tmp.path().join(f)).unwrap();
    }
    let out = tmp.path().join("out");
    let [train, val, report] = prepare(tmp.path(), &out, &["--num-train", "1", "--num-val", "5"]);
    // edgar is a table page (is_table: True in its front matter), short a document.
    assert_eq!(train[0]["prompt"], "<image>\nConvert this table to HTML.");
    assert_eq!(train[0]["type"], "table");
    assert!(train[0]["answer"].as_str().unwrap().starts_with("Edgar (or Eadgar;"));
    assert_eq!(val.as_array().unwrap().len(), 1);
    assert_eq!(val[0]["prompt"], "<image>\nOCR this document.");
    // 150 DPI: a Letter page is 1275 × 1650 pixels.
    let image = image::open(out.join(train[0]["image"].as_str().unwrap())).unwrap();
    assert_eq!(
        image.width().max(image.height()),
        1650,
        "{}x{}",
        image.width(),
        image.height()
    );
    let skipped: Vec<String> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}: {}", s[0].as_str().unwrap(), s[1].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert!(
        skipped.iter().any(|s| s.starts_with("untable: natural_text has 21626")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|s| s.starts_with("blanktext: natural_text has")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|s| s.starts_with("french: primary_language")),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|s| s.starts_with("orphan: no PDF")), "{skipped:?}");
}

#[test]
fn the_hub_layout_reads_parquet_rows_and_tarball_members() {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/olmocr-mix");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let [train, val, report] = prepare(
        &input,
        &out,
        &["--subset", "00_documents", "--num-train", "1", "--num-val", "3"],
    );
    assert_eq!(train.as_array().unwrap().len(), 1);
    assert_eq!(train[0]["type"], "table");
    assert!(train[0]["answer"].as_str().unwrap().starts_with("Edgar (or Eadgar;"));
    assert_eq!(val.as_array().unwrap().len(), 1, "the other rows are skipped");
    assert_eq!(val[0]["type"], "document");
    assert!(out.join(val[0]["image"].as_str().unwrap()).exists());
    let skipped = report["skipped"].to_string();
    assert!(skipped.contains("missing_p1.pdf is not in"), "{skipped}");
    assert!(
        skipped.contains("blanktext_p1") && skipped.contains("0 characters"),
        "{skipped}"
    );
}

/// `--format olmocr`: olmOCR's v4 no-anchor prompt and its front-matter answer, which for an
/// olmOCR-mix page is that page's own .md (the format the mix was written in), stripped;
/// rendered with the longest side at 1288. `--format rolmocr`: RolmOCR's prompt, plain text.
#[test]
fn qwen_formats_phrase_pages_as_olmocr_and_rolmocr_train_on_them() {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/olmocr-format");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["edgar.md", "edgar.pdf"] {
        std::fs::copy(input.join(f), tmp.path().join(f)).unwrap();
    }
    let md = std::fs::read_to_string(input.join("edgar.md")).unwrap();
    let out = tmp.path().join("olmocr");
    let [train, _, _] = prepare(
        tmp.path(),
        &out,
        &["--num-train", "1", "--num-val", "0", "--format", "olmocr"],
    );
    assert_eq!(train[0]["answer"], md.trim());
    let prompt = train[0]["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<image>\nAttached is one page of a document that you must process."));
    assert_eq!(
        prompt.strip_prefix("<image>\n").unwrap(),
        vellum::train::prepare::OLMOCR_V4_PROMPT
    );
    let image = image::open(out.join(train[0]["image"].as_str().unwrap())).unwrap();
    assert_eq!(image.width().max(image.height()), 1288);

    let out = tmp.path().join("rolmocr");
    let [train, _, _] = prepare(
        tmp.path(),
        &out,
        &["--num-train", "1", "--num-val", "0", "--format", "rolmocr"],
    );
    assert_eq!(train[0]["answer"], md.split("---\n").nth(2).unwrap().trim());
    assert_eq!(train[0]["prompt"], format!("<image>\n{}", vellum::ROLMOCR_PROMPT));
}
