//! The CUDA kernels' logic without a GPU: kernels/*.cu compiled by the host C++ compiler under
//! tests/kernels_on_cpu/cuda_on_cpu.h (blocks of OS threads, barriers, emulated warp shuffles)
//! and run against double-precision references on fresh random inputs, with the dtypes' bounds
//! (f32 1e-5, bf16 1e-2, f16 2e-3). On a GPU, `ocr __selftest` checks the real thing.

use std::path::Path;
use std::process::Command;

fn compile(cxx: &str, source: &Path, object: &Path, kernel: bool) {
    let mut cmd = Command::new(cxx);
    cmd.args(["-std=c++20", "-O1", "-pthread", "-c"]);
    if kernel {
        cmd.args([
            "-include",
            "tests/kernels_on_cpu/cuda_on_cpu.h",
            "-Ikernels",
            "-x",
            "c++",
        ]);
    }
    let status = cmd
        .arg(source)
        .arg("-o")
        .arg(object)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cxx} (set CXX to a C++20 compiler): {e}"));
    assert!(status.success(), "{cxx} failed on {}", source.display());
}

#[test]
fn kernels_match_double_precision_references_on_the_cpu() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut objects = Vec::new();
    let mut sources: Vec<_> = std::fs::read_dir(root.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    std::thread::scope(|s| {
        for src in &sources {
            let object = dir.path().join(src.with_extension("o").file_name().unwrap());
            objects.push(object.clone());
            let cxx = &cxx;
            s.spawn(move || compile(cxx, src, &object, true));
        }
        let main = dir.path().join("main.o");
        objects.push(main.clone());
        compile(&cxx, &root.join("tests/kernels_on_cpu/main.cpp"), &main, false);
    });
    let exe = dir.path().join("kernels_on_cpu");
    let status = Command::new(&cxx)
        .arg("-pthread")
        .args(&objects)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "linking the emulated kernels failed");
    let out = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "{report}");
    // Every kernel family, every attention variant, was checked.
    for name in [
        "silu_and_mul/bf16",
        "relu_squared/f16",
        "softcap/f32",
        "add_rms_norm/bf16",
        "rotary_neg_theta/bf16",
        "reshape_and_cache/bf16/d128",
        "paged_prefill/bf16/d128",
        "paged_prefill_mma/bf16/d128",
        "varlen_attention_mma/f16/d80",
        "paged_decode/bf16/d80",
        "paged_decode_split/f32/d128",
        "varlen_attention/bf16/d80",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name} missing:\n{report}"
        );
    }
}
