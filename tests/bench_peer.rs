//! `ocr bench --peer transformers`: it needs a Python with torch and transformers and says so,
//! it hands a llama.cpp tree to the reference script only when the tree has what the script
//! runs, and it charts the script's results beside their JSON.

use std::process::Command;

#[test]
fn bench_peer_without_a_usable_python_says_what_it_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["bench", "--peer", "transformers", "--python", "/nonexistent/python3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("torch and transformers") && err.contains("/nonexistent/python3"),
        "{err}"
    );
}

#[test]
fn bench_peer_charts_the_results_beside_the_json() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // bench_vs_transformers.py's results, as far as the chart reads them.
    let canned = dir.path().join("canned.json");
    std::fs::write(
        &canned,
        r#"{"vellum": {"ocr": {"requests": 16, "new_tokens": 64, "batched_tokens_per_second": 21.2,
            "sequential_tokens_per_second": 17.0}},
           "transformers_batched_seconds": {"float32": 35.7, "bfloat16": 50.1}}"#,
    )
    .unwrap();
    // Stands in for a Python with torch: the probe passes, and "running the script" writes the
    // canned results where --out says.
    let python = dir.path().join("python");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\n[ \"$1\" = -c ] && exit 0\necho \"$@\" > '{}'\nwhile [ $# -gt 1 ]; do\n  [ \"$1\" = --out ] && cp '{}' \"$2\"\n  shift\ndone\nexit 0\n",
            dir.path().join("args").display(),
            canned.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let json = dir.path().join("bench.json");
    let run = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["bench", "--peer", "transformers", "--python"])
        .arg(&python)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("bench.png"), "{err}");
    let chart = image::open(dir.path().join("bench.png")).unwrap();
    assert!(chart.width() >= 640 && (440..1000).contains(&chart.height()));

    // A --json named .png would be overwritten by its chart: refused before anything runs.
    let run = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["bench", "--peer", "transformers", "--python"])
        .arg(&python)
        .arg("--json")
        .arg(dir.path().join("bench.png"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4), "{}", String::from_utf8_lossy(&run.stderr));

    // A llama.cpp tree without a built server is refused before the script runs; a built one is
    // passed on.
    let llama = dir.path().join("llama.cpp");
    std::fs::create_dir_all(llama.join("build/bin")).unwrap();
    std::fs::write(llama.join("convert_hf_to_gguf.py"), "").unwrap();
    let with_llama = || {
        std::fs::remove_file(dir.path().join("args")).ok();
        Command::new(env!("CARGO_BIN_EXE_ocr"))
            .args(["bench", "--peer", "transformers", "--python"])
            .arg(&python)
            .arg("--llama-cpp")
            .arg(&llama)
            .output()
            .unwrap()
    };
    let run = with_llama();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{err}");
    assert!(
        err.contains("build/bin/llama-server") && err.contains("llama.cpp"),
        "{err}"
    );
    assert!(!dir.path().join("args").exists(), "the script ran");
    std::fs::write(llama.join("build/bin/llama-server"), "").unwrap();
    let run = with_llama();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert!(args.contains(&format!("--llama-cpp {}", llama.display())), "{args}");
}
