//! A corpus of a few hundred generated PDFs (born-digital, image-only, corrupt) OCR'd by three
//! ranks with a tiny model; one rank is SIGKILLed mid-chunk and restarted with the same command.
//! Every good document must end up exactly once across the ranks, every bad one in failed/ with
//! its reason, and every chunk file must be valid JSONL.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

fn corpus(dir: &Path) -> (Vec<String>, Vec<String>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    std::fs::create_dir_all(dir.join("digital")).unwrap();
    std::fs::create_dir_all(dir.join("scans")).unwrap();
    std::fs::create_dir_all(dir.join("broken")).unwrap();
    for i in 0..180 {
        let lines: Vec<String> = (0..8)
            .map(|l| format!("Document {i} line {l} of a born digital report with plain words"))
            .collect();
        std::fs::write(
            dir.join(format!("digital/{i:03}.pdf")),
            common::pdfgen::text_pdf(&lines),
        )
        .unwrap();
        good.push(format!("corpus/digital/{i:03}.pdf"));
    }
    for i in 0..60 {
        let img = image::RgbImage::from_fn(60, 80, |x, y| {
            image::Rgb([((x * 4 + i) % 256) as u8, (y * 3) as u8, 200])
        });
        std::fs::write(
            dir.join(format!("scans/{i:03}.pdf")),
            common::pdfgen::image_pdf(&img, 300, 400),
        )
        .unwrap();
        good.push(format!("corpus/scans/{i:03}.pdf"));
    }
    for i in 0..20 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            format!("%PDF-1.4\ngarbage {i}").into_bytes()
        } else {
            b"not a pdf at all".to_vec()
        };
        std::fs::write(dir.join(format!("broken/{i:03}.pdf")), bytes).unwrap();
        bad.push(format!("corpus/broken/{i:03}.pdf"));
    }
    (good, bad)
}

fn start(corpus: &Path, out: &Path, rank: usize) -> Child {
    let model = common::fixtures().join("models/gqa_window4/model");
    Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .arg(corpus)
        .args(["--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args([
            "--rank",
            &rank.to_string(),
            "--world-size",
            "3",
            "--chunk-size",
            "7",
            "--max-new-tokens",
            "3",
        ])
        .args([
            "--max-retries",
            "0",
            "--max-bad-page-rate",
            "1",
            "--kv-cache-gib",
            "0.25",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// (id → times seen) over every chunk file under `dir`, checking each line is valid JSON.
fn read_chunks(dir: &Path, seen: &mut HashMap<String, (usize, Value)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(|c: char| c.is_ascii_digit()) {
            assert!(!name.ends_with(".tmp"), "a temporary file survived: {}", path.display());
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let doc: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: invalid JSON line: {e}", path.display()));
            let id = doc["id"].as_str().unwrap().to_string();
            seen.entry(id).or_insert((0, doc)).0 += 1;
        }
    }
}

#[test]
fn three_ranks_one_killed_mid_chunk_every_document_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let (good, bad) = corpus(&dir);
    let mut ranks: Vec<Child> = (0..3).map(|r| start(&dir, &out, r)).collect();

    // Kill rank 1 with SIGKILL once it has committed a chunk and is inside the next one.
    let progress = out.join("00001/progress.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = std::fs::read_to_string(&progress)
            .map(|p| p.lines().count())
            .unwrap_or(0);
        let open_chunk = std::fs::read_dir(out.join("00001"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false);
        if committed >= 1 && open_chunk {
            break;
        }
        assert!(Instant::now() < deadline, "rank 1 never got mid-chunk");
        std::thread::sleep(Duration::from_millis(5));
    }
    ranks[1].kill().unwrap();
    ranks[1].wait().unwrap();
    let killed_with = std::fs::read_to_string(&progress).unwrap().lines().count();
    ranks[1] = start(&dir, &out, 1);
    for (rank, mut child) in ranks.into_iter().enumerate() {
        let status = child.wait().unwrap();
        // Exit 1: the corrupt documents went to failed/.
        assert!(matches!(status.code(), Some(0) | Some(1)), "rank {rank}: {status}");
    }

    let mut written = HashMap::new();
    let mut failed = HashMap::new();
    for rank in 0..3 {
        read_chunks(&out.join(format!("{rank:05}")), &mut written);
        read_chunks(&out.join(format!("failed/{rank:05}")), &mut failed);
    }
    for id in &good {
        let (count, doc) = written.get(id).unwrap_or_else(|| panic!("{id} is missing"));
        assert_eq!(*count, 1, "{id} written {count} times");
        assert!(!failed.contains_key(id), "{id} also in failed/");
        if id.contains("digital") {
            assert!(doc["text"].as_str().unwrap().contains("born digital report"), "{id}");
        } else {
            assert_eq!(doc["metadata"]["pages"][0]["route"], "ocr", "{id}");
            assert_eq!(
                doc["metadata"]["pages"][0]["generated_tokens"], 3,
                "{id}: the model ran"
            );
        }
    }
    for id in &bad {
        let (count, doc) = failed.get(id).unwrap_or_else(|| panic!("{id} is not in failed/"));
        assert_eq!(*count, 1);
        assert!(!doc["metadata"]["failure"].as_str().unwrap().is_empty());
    }
    assert_eq!(written.len(), good.len(), "nothing but the good documents");
    assert_eq!(failed.len(), bad.len());
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(out.join("00001/stats.json")).unwrap()).unwrap();
    assert_eq!(
        stats["documents_already_done"].as_u64().unwrap() as usize,
        killed_with * 7,
        "the restart skipped exactly the committed chunks"
    );
}

#[test]
fn sigterm_finishes_the_current_chunk_and_a_rerun_completes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let (good, bad) = corpus(&dir);
    let model = common::fixtures().join("models/gqa_window4/model");
    let command = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ocr"));
        c.arg("run")
            .arg(&dir)
            .args(["--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args([
                "--chunk-size",
                "1000",
                "--max-new-tokens",
                "3",
                "--max-retries",
                "0",
                "--max-bad-page-rate",
                "1",
            ])
            .stderr(std::process::Stdio::null());
        c
    };
    let mut child = command().spawn().unwrap();
    let rank = out.join("00000");
    // Wait until the (single, large) chunk is open, then ask the run to stop.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_dir(&rank)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(3), "interrupted runs exit with 3");
    let mut first = HashMap::new();
    read_chunks(&rank, &mut first);
    read_chunks(&out.join("failed/00000"), &mut first);
    assert!(
        !first.is_empty() && first.len() < good.len() + bad.len(),
        "the partial chunk was committed: {}",
        first.len()
    );

    let status = command().status().unwrap();
    assert!(
        matches!(status.code(), Some(0) | Some(1)),
        "the rerun finishes: {status}"
    );
    let mut all = HashMap::new();
    read_chunks(&rank, &mut all);
    read_chunks(&out.join("failed/00000"), &mut all);
    assert_eq!(all.len(), good.len() + bad.len());
    assert!(all.values().all(|(n, _)| *n == 1));
}

#[test]
fn sigint_abandons_pages_in_the_engine_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scans");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..8u32 {
        let img = image::RgbImage::from_fn(60, 80, |x, y| image::Rgb([(x * 4 + i) as u8, (y * 3) as u8, 200]));
        std::fs::write(dir.join(format!("{i}.pdf")), common::pdfgen::image_pdf(&img, 300, 400)).unwrap();
    }
    let out = tmp.path().join("out");
    let model = common::fixtures().join("models/gqa_window4/model");
    // Thousands of tokens per page: finishing the pages in the engine would take minutes.
    let child = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .arg("run")
        .arg(&dir)
        .args(["--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--max-new-tokens", "7000", "--max-retries", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the pages reach the engine.
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let waited = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("stopping"),
        "the first interrupt is acknowledged: {stderr}"
    );
    assert!(
        waited < Duration::from_secs(60),
        "pages in the engine are abandoned, not finished ({waited:?})"
    );
    let mut seen = HashMap::new();
    read_chunks(&out.join("00000"), &mut seen);
    read_chunks(&out.join("failed/00000"), &mut seen);
    assert!(
        seen.values()
            .all(|(_, doc)| doc["metadata"]["pages"][0]["finish_reason"] != "cancelled"),
        "no cancelled page is written as done"
    );
    assert!(seen.len() < 8, "the run was cut short");
}
