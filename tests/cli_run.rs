//! `ocr run`: documents in the DataTrove shape, text-layer pages from pdfium, scanned pages
//! through the engine with retries and fallback, bad files in failed/ without stopping the run;
//! a bad setup stops it before any document, and the exit status and stats describe the output
//! folder across runs.

use crate::common;

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

fn stats(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("00000/stats.json")).unwrap()).unwrap()
}

#[test]
fn a_bad_setup_stops_before_any_document_with_exit_status_4() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = common::fixtures().join("models/gqa_window4/model");
    let model = model.to_str().unwrap();
    let inputs = [sample("edgar.pdf"), sample("small_page_size.pdf")];
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let deepseek = common::fixtures().join("../deepseek_ocr/gqa");
    let cases: [(&str, &[PathBuf], &[&str], &str); 10] = [
        ("vellum-test/not-in-any-cache", &inputs, &[], "not available offline"),
        (
            deepseek.to_str().unwrap(),
            &inputs,
            &["--quantization", "int8", "--allow-no-model"],
            "applies to Qwen2-VL and Qwen2.5-VL models",
        ),
        ("./no/such/model", &inputs, &[], "no such model directory"),
        (model, &inputs, &["--device", "cuda"], "cuda feature"),
        (
            model,
            &inputs,
            &["--quantization", "int8", "--dtype", "bf16"],
            "leave the dtype at f32",
        ),
        (
            model,
            &inputs,
            &["--quantization", "bf16", "--dtype", "bf16"],
            "leave the dtype at f32",
        ),
        (model, &inputs, &["--kv-cache-gib", "0.001"], "--kv-cache-gib"),
        (model, &inputs, &["--max-new-tokens", "9000"], "leaves no room"),
        (model, std::slice::from_ref(&empty), &[], "no PDFs or images"),
        (model, &[tmp.path().join("*.nothing")], &[], "matches nothing"),
    ];
    for (model, inputs, extra, message) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
            .arg("run")
            .args(inputs)
            .args(["--model", model, "--out"])
            .arg(&out)
            .args(extra)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?}: nothing is written, nothing marked done");
    }
    // No libpdfium: stopped up front, not one failed document per PDF.
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .args(inputs)
        .args(["--model", model, "--out"])
        .arg(&out)
        .env("PDFIUM_LIB_PATH", tmp.path().join("nowhere"))
        .env("VELLUM_HOME", tmp.path().join("nowhere"))
        .env("LD_LIBRARY_PATH", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("libpdfium was not found") && !stderr.contains("DlOpen"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn pages_without_a_model_stay_pending_and_a_rerun_with_one_does_exactly_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let inputs = [sample("small_page_size.pdf"), sample("failing_anchor_pg4.pdf")];
    let (code, docs, failed, stderr) = run("vellum-test/not-in-any-cache", &out, &inputs, &["--allow-no-model"]);
    assert_eq!(code, Some(5), "pending pages: exit 5: {stderr}");
    assert!(stderr.contains("not available offline"), "{stderr}");
    assert!(failed.is_empty());
    assert_eq!(docs.len(), 1, "only the born-digital document is done");
    assert!(docs[0]["id"].as_str().unwrap().ends_with("failing_anchor_pg4.pdf"));
    let pending = std::fs::read_to_string(out.join("00000/pending.txt")).unwrap();
    assert!(pending.trim().ends_with("small_page_size.pdf"), "{pending}");
    assert_eq!(stats(&out)["folder"]["remaining"], 1);

    let model = common::fixtures().join("models/gqa_window4/model");
    let (code, docs, failed, stderr) = run(
        model.to_str().unwrap(),
        &out,
        &inputs,
        &["--max-bad-page-rate", "1", "--max-retries", "0"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(failed.is_empty());
    assert_eq!(docs.len(), 2, "each document once");
    let scanned = docs
        .iter()
        .find(|d| d["id"].as_str().unwrap().ends_with("small_page_size.pdf"))
        .unwrap();
    assert_eq!(scanned["metadata"]["pages"][0]["attempts"], 1, "OCR'd now");
    let s = stats(&out);
    assert_eq!(s["documents_already_done"], 1);
    assert_eq!(s["pages"], 1, "only the pending page was done again");
    assert_eq!(s["folder"]["done"], 2);
    assert!(!out.join("00000/pending.txt").exists());
}

#[test]
fn exit_status_and_stats_describe_the_folder_and_retry_failed_tries_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = common::fixtures().join("models/gqa_window4/model");
    let model = model.to_str().unwrap();
    let inputs = [sample("edgar_image.pdf"), sample("edgar.pdf")];
    // Retried once at 6 tokens a page, the scanned page never ends: its document fails.
    let (code, _, failed, _) = run(model, &out, &inputs, &["--max-retries", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(failed.len(), 1);
    let s = stats(&out);
    assert_eq!(s["generated_tokens"], 12, "both attempts' tokens are counted");
    assert_eq!(s["folder"]["failed"], 1);
    // A rerun has nothing to do, and still says the folder holds a failure.
    let (code, _, _, _) = run(model, &out, &inputs, &["--max-retries", "1"]);
    assert_eq!(code, Some(1), "the folder still has a failed document");
    let s = stats(&out);
    assert_eq!(s["documents_written"], 0);
    assert_eq!(s["folder"]["failed"], 1);
    assert_eq!(s["folder"]["work"]["generated_tokens"], 12);
    // --retry-failed attempts it again; accepted this time, it counts as done.
    let (code, docs, _, stderr) = run(model, &out, &inputs, &["--retry-failed", "--max-bad-page-rate", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(docs.len(), 2);
    let s = stats(&out);
    assert_eq!(s["documents_written"], 1);
    assert_eq!(
        (s["folder"]["done"].as_u64(), s["folder"]["failed"].as_u64()),
        (Some(2), Some(0))
    );
}

#[test]
fn another_world_size_on_the_same_folder_is_refused_and_paths_name_one_document() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = common::fixtures().join("models/gqa_window4/model");
    let model = model.to_str().unwrap();
    std::fs::create_dir_all(tmp.path().join("bad")).unwrap();
    std::fs::copy(sample("edgar.pdf"), tmp.path().join("bad/good.pdf")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .current_dir(tmp.path())
        .args([
            "run",
            "bad/good.pdf",
            "./bad/good.pdf",
            "bad//good.pdf",
            "--model",
            model,
        ])
        .args(["--out", "out", "--world-size", "2", "--rank", "0"])
        .output()
        .unwrap();
    let code = output.status.code();
    let mut docs = documents(&out.join("00000"));
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .current_dir(tmp.path())
        .args([
            "run",
            "bad/good.pdf",
            "--model",
            model,
            "--out",
            "out",
            "--world-size",
            "2",
            "--rank",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!((code, output.status.code()), (Some(0), Some(0)));
    docs.extend(documents(&out.join("00001")));
    assert_eq!(docs.len(), 1, "one document however its path is written");
    assert_eq!(docs[0]["id"], "bad/good.pdf");
    let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .current_dir(tmp.path())
        .args(["run", "bad/good.pdf", "--model", model, "--out", "out"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("--world-size 2"), "{stderr}");
}

#[test]
fn markdown_and_gzip_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let folder = tmp.path().join("corpus");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::copy(sample("edgar.pdf"), folder.join("sub/edgar.pdf")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args([
            "run",
            folder.to_str().unwrap(),
            "--model",
            "none/none",
            "--allow-no-model",
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
    let md = std::fs::read_to_string(out.join("markdown/corpus/sub/edgar.pdf.md")).unwrap();
    assert!(md.len() > 1000);
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(out.join("00000/00000.jsonl.gz")).unwrap()),
        &mut text,
    )
    .unwrap();
    let doc: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(doc["id"], "corpus/sub/edgar.pdf");
}

#[test]
fn pages_selects_ranges_and_out_dash_prints_the_text() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = common::fixtures().join("models/gqa_window4/model");
    let model = model.to_str().unwrap();
    let form = sample("form_on_later_pages.pdf");
    let (code, docs, _, stderr) = run(model, &out, std::slice::from_ref(&form), &["--pages", "2-3,9"]);
    assert_eq!(code, Some(0), "{stderr}");
    let pages: Vec<u64> = docs[0]["metadata"]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages, [2, 3, 9]);
    let printed = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .arg(&form)
        .args(["--model", model, "--out", "-", "--pages", "2-3,9"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap().trim_end(),
        docs[0]["text"].as_str().unwrap().trim_end()
    );
}

fn into_cache(cache: &Path, repo_id: &str, model: &Path) {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
}

/// Tiny stand-ins under the olmOCR family's hub ids: each runs with its card (olmOCR v0.1 is
/// Qwen2-VL prompted with the page's anchor text; olmOCR-2 is Qwen2.5-VL with the v4 prompt).
#[test]
fn the_olmocr_family_runs_by_hub_id_with_its_card() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    into_cache(
        &cache,
        "allenai/olmOCR-2-7B-1025",
        &fixtures.join("qwen2_5_vl/models/gqa_window4/model"),
    );
    into_cache(
        &cache,
        "allenai/olmOCR-7B-0225-preview",
        &fixtures.join("qwen2_vl/models/gqa/model"),
    );
    into_cache(
        &cache,
        "allenai/olmOCR-2-7B-1025-FP8",
        &fixtures.join("qwen2_5_vl/fp8/model"),
    );
    // A garbled text layer: routed to OCR, and a long anchor text for olmOCR v0.1's prompt.
    let page = sample("dolma-page-1.pdf");
    let prompt_tokens = |model: &str, extra: &[&str]| {
        let out = tmp
            .path()
            .join(format!("{}{}", model.replace('/', "_"), extra.join("_")));
        let output = Command::new(env!("CARGO_BIN_EXE_ocr"))
            .arg("run")
            .arg(&page)
            .args([
                "--model",
                model,
                "--out",
                out.to_str().unwrap(),
                "--max-new-tokens",
                "4",
            ])
            .args(["--max-retries", "0", "--max-bad-page-rate", "1"])
            .args(extra)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(0), "{model}: {stderr}");
        let docs = documents(&out.join("00000"));
        (
            docs[0]["metadata"]["pages"][0]["prompt_tokens"].as_u64().unwrap(),
            stderr,
        )
    };
    let (v2, stderr) = prompt_tokens("allenai/olmOCR-2-7B-1025", &[]);
    assert!(!stderr.contains("no model card"), "{stderr}");
    let (fp8, stderr) = prompt_tokens("allenai/olmOCR-2-7B-1025-FP8", &[]);
    assert!(!stderr.contains("no model card") && fp8 == v2, "{stderr}");
    let (v01, stderr) = prompt_tokens("allenai/olmOCR-7B-0225-preview", &[]);
    assert!(!stderr.contains("no model card"), "{stderr}");
    assert!(
        v01 > v2 + 500,
        "the anchor text is in v0.1's prompt: {v01} vs {v2} tokens"
    );
    // A local copy says which card it runs with; --card chooses.
    let local = fixtures.join("qwen2_5_vl/models/gqa_window4/model");
    let (_, stderr) = prompt_tokens(local.to_str().unwrap(), &[]);
    assert!(stderr.contains("running it as RolmOCR"), "{stderr}");
    let (with_card, stderr) = prompt_tokens(local.to_str().unwrap(), &["--card", "olmocr-2"]);
    assert!(!stderr.contains("no model card") && with_card == v2, "{stderr}");
}
