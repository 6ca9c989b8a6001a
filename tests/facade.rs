//! The library facade gives what `ocr run` gives: the same document lines for born-digital,
//! scanned and broken PDFs and for images, in-process and from a host program that is not
//! `ocr` (examples/embed.rs); a pdfium crash in such a host costs only its document; tokens
//! stream as generated; errors come typed; an embedder's dependency tree has no CLI crates.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MAX_NEW_TOKENS: &str = "6";

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
}

fn model() -> PathBuf {
    common::fixtures().join("models/gqa_window4/model")
}

/// `target/<profile>/examples/<name>`, which `cargo test` builds beside the test binary
/// (`.ci/run` also checks the examples without vellum's default features, as embedders build).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is not built: `cargo test` builds the examples, `cargo test --test integration` alone does not \
         (run `cargo build --examples` first)",
        path.display()
    );
    path
}

/// Inputs of every kind: born digital, scanned, broken, an image.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let corrupt = dir.join("corrupt.pdf");
    std::fs::write(&corrupt, b"%PDF-1.4 nothing else").unwrap();
    let image = dir.join("page.png");
    std::fs::copy(common::fixtures().join("processor/on_grid.png"), &image).unwrap();
    vec![sample("edgar.pdf"), sample("edgar_image.pdf"), corrupt, image]
}

/// A document line without its timings, which no two runs share.
fn untimed(mut doc: Value) -> Value {
    let meta = doc["metadata"].as_object_mut().unwrap();
    meta.remove("seconds");
    for page in meta["pages"].as_array_mut().unwrap() {
        page.as_object_mut().unwrap().remove("seconds");
    }
    doc
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| untimed(serde_json::from_str(l).unwrap()))
        .collect()
}

/// `ocr run`'s documents (done and failed), by id.
fn ocr_run(inputs: &[PathBuf], out: &Path) -> BTreeMap<String, Value> {
    let run = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .args(inputs)
        .args([
            "--model",
            model().to_str().unwrap(),
            "--max-new-tokens",
            MAX_NEW_TOKENS,
            "--out",
        ])
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let mut docs = BTreeMap::new();
    for dir in [out.join("00000"), out.join("failed/00000")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".jsonl") && name.starts_with(|c: char| c.is_ascii_digit()) {
                for doc in lines(&std::fs::read_to_string(&path).unwrap()) {
                    docs.insert(doc["id"].as_str().unwrap().to_string(), doc);
                }
            }
        }
    }
    docs
}

#[test]
fn the_facade_writes_what_ocr_run_writes_in_process_and_from_another_program() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = inputs(tmp.path());
    let specs: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let expected = ocr_run(&inputs, &tmp.path().join("out"));
    assert_eq!(expected.len(), 4);
    let routes: Vec<&Value> = expected.values().map(|d| &d["metadata"]["pages"]).collect();
    assert!(
        routes.iter().any(|p| p[0]["route"] == "text_layer") && routes.iter().any(|p| p[0]["route"] == "ocr"),
        "both routes are exercised: {routes:?}"
    );
    assert!(expected.values().any(|d| d["metadata"]["error"]["kind"] == "corrupt"));

    // From a program that is not `ocr`: its own executable is the pdfium worker.
    let embed = Command::new(example("embed"))
        .args(["--max-new-tokens", MAX_NEW_TOKENS, model().to_str().unwrap()])
        .args(&specs)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("VELLUM_WORKER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&embed.stdout);
    assert_eq!(
        embed.status.code(),
        Some(1),
        "one document failed: {}",
        String::from_utf8_lossy(&embed.stderr)
    );
    let got = lines(&stdout);
    assert_eq!(got.len(), expected.len(), "{stdout}");
    let ids: Vec<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let order: Vec<String> = vellum::inputs(&specs).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, order, "one line per document, in the order of the inputs' ids");
    for doc in &got {
        assert_eq!(doc, &expected[doc["id"].as_str().unwrap()]);
    }

    // In this process, through the same calls.
    let sources = vellum::inputs(&specs).unwrap();
    vellum::check_inputs(&sources).unwrap();
    let ocr = vellum::Ocr::builder(model().to_str().unwrap())
        .max_new_tokens(MAX_NEW_TOKENS.parse().unwrap())
        .open()
        .unwrap();
    for source in &sources {
        let doc = ocr.document(&source.path).unwrap();
        assert_eq!(untimed(ocr.record(source, &doc)), expected[&source.id], "{}", source.id);
    }
}

#[test]
fn a_pdfium_crash_in_a_host_that_is_not_ocr_costs_only_its_document() {
    let tmp = tempfile::tempdir().unwrap();
    let crash = tmp.path().join("crash.pdf");
    std::fs::copy(sample("edgar.pdf"), &crash).unwrap();
    let inputs = [sample("edgar.pdf"), crash, sample("edgar_image.pdf")];
    let run = Command::new(example("embed"))
        .args(["--max-new-tokens", MAX_NEW_TOKENS, model().to_str().unwrap()])
        .args(&inputs)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("VELLUM_WORKER")
        // The worker aborts, as pdfium does on some files, when it opens a file of this name.
        .env("VELLUM_WORKER_ABORT_ON", "crash.pdf")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the host lives on and reports one failure: {stderr}"
    );
    let docs = lines(&String::from_utf8_lossy(&run.stdout));
    assert_eq!(docs.len(), 3, "{stderr}");
    let doc = |name: &str| docs.iter().find(|d| d["id"].as_str().unwrap().ends_with(name)).unwrap();
    let crashed = doc("/crash.pdf");
    assert_eq!(crashed["metadata"]["error"]["kind"], "worker_died", "{crashed:?}");
    assert!(crashed["metadata"]["error"]["file"]
        .as_str()
        .unwrap()
        .ends_with("crash.pdf"));
    for name in ["/edgar.pdf", "/edgar_image.pdf"] {
        assert!(doc(name)["metadata"]["error"].is_null(), "{:?}", doc(name));
        assert!(!doc(name)["metadata"]["pages"].as_array().unwrap().is_empty());
    }
    assert!(doc("/edgar.pdf")["text"].as_str().unwrap().contains("Edgar"));
}

#[test]
fn tokens_stream_as_generated_and_add_up_to_the_generation() {
    let ocr = vellum::Ocr::builder(model().to_str().unwrap())
        .max_new_tokens(24)
        .open()
        .unwrap();
    let image = vellum::image::open(common::fixtures().join("processor/on_grid.png")).unwrap();
    let mut stream = ocr.stream(&image).unwrap();
    let pieces: Vec<String> = stream.by_ref().map(|p| p.unwrap()).collect();
    let streamed = stream.generation().expect("finished").clone();
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(pieces.concat(), streamed.text);
    // The same request unstreamed: the card's prompt and sampling.
    let card_prompt = match &ocr.card().prompt {
        vellum::pipeline::card::Prompt::Fixed(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let params = vellum::engine::sampler::SamplingParams {
        max_new_tokens: Some(24),
        repetition_penalty: ocr.card().sampling.repetition_penalty,
        temperature: ocr.card().sampling.temperature,
        ..Default::default()
    };
    let whole = ocr.generate(&image, Some(&card_prompt), params).unwrap();
    assert_eq!(whole.tokens, streamed.tokens);
    assert_eq!(whole.text, streamed.text);
}

#[test]
fn errors_are_typed_and_name_no_flags() {
    let open = |b: vellum::OcrBuilder| b.open().err().expect("fails");
    let missing = open(vellum::Ocr::builder("/nonexistent/model"));
    assert!(matches!(missing, vellum::Error::ModelNotFound { .. }), "{missing:?}");
    let card = open(vellum::Ocr::builder(model().to_str().unwrap()).card("nope"));
    assert!(matches!(card, vellum::Error::Unsupported(_)), "{card:?}");
    let long = open(
        vellum::Ocr::builder(model().to_str().unwrap())
            .max_context(64)
            .max_new_tokens(64),
    );
    assert!(matches!(long, vellum::Error::InvalidOptions(_)), "{long:?}");
    for e in [&missing, &card, &long] {
        assert!(e.is_setup());
        assert!(!e.to_string().contains("--"), "{e}");
    }
    let empty = tempfile::tempdir().unwrap();
    let none = vellum::inputs(&[empty.path().display().to_string()]).err().unwrap();
    assert!(matches!(none, vellum::Error::NoInputs { .. }), "{none:?}");
    // Without a model, documents still come back; OCR of an image says why it cannot.
    let ocr = vellum::Ocr::builder("/nonexistent/model")
        .allow_missing_model(true)
        .open()
        .unwrap();
    assert!(ocr.model_unavailable().is_some());
    let image = vellum::DynamicImage::new_rgb8(28, 28);
    assert!(matches!(ocr.image(&image), Err(vellum::Error::ModelNotFound { .. })));
}

#[test]
fn cancel_stops_the_work_in_progress() {
    let ocr = vellum::Ocr::builder(model().to_str().unwrap()).open().unwrap();
    let image = vellum::image::open(common::fixtures().join("processor/on_grid.png")).unwrap();
    ocr.cancel();
    assert!(matches!(ocr.image(&image), Err(vellum::Error::Cancelled)));
    assert!(matches!(
        ocr.document(sample("edgar_image.pdf")),
        Err(vellum::Error::Cancelled)
    ));
}

/// What an embedder's `vellum = { ..., default-features = false }` compiles.
#[test]
fn an_embedders_dependency_has_no_cli_crates() {
    let tree = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")])
        .output()
        .unwrap();
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let tree = String::from_utf8_lossy(&tree.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains(&"candle-core") && crates.contains(&"pdfium-render"),
        "{tree}"
    );
    for cli in [
        "clap",
        "indicatif",
        "plotters",
        "criterion",
        "parquet",
        "signal-hook",
        "tracing-subscriber",
    ] {
        assert!(!crates.contains(&cli), "{cli} is in an embedder's build:\n{tree}");
    }
}
