//! With the `cuda` feature, compiles every kernels/*.cu to PTX (nvcc from PATH or $NVCC) for
//! CUDA_COMPUTE_CAP (default 90); src/ops/kernels.rs embeds the results. The CPU build does nothing.

use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap = cap.trim_end_matches(['a', 'f']);
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ is part of the crate")
        .map(|e| e.expect("readable kernels/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in sources {
        let ptx = out_dir.join(src.with_extension("ptx").file_name().unwrap());
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                &format!("-arch=compute_{cap}"),
                "-O3",
                "-std=c++17",
                "-Ikernels",
                "-o",
            ])
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {nvcc} ({e}); scripts/setup-cuda installs a CUDA 13.0 toolkit"));
        assert!(status.success(), "{nvcc} --ptx {} failed", src.display());
    }
}
