//! `ocr __selftest`, the GPU machine's check run, works end to end here on the CPU: every tiny
//! fixture case is found, generated and compared (its kernel checks need a CUDA device).

use std::process::Command;

#[test]
fn selftest_runs_every_parity_case_on_the_cpu() {
    let out = Command::new(env!("CARGO_BIN_EXE_ocr"))
        .args(["__selftest", "--device", "cpu", "--fixtures"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let checks: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 5 Qwen2.5-VL cases and 6 nano DeepSeek-OCR cases, tokens and logprobs each.
    assert_eq!(checks.len(), 22, "{stderr}");
    for c in &checks {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert!(stderr.contains("kernel checks skipped"), "{stderr}");
}
