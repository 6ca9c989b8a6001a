//! `ocr bench` (throughput, the transformers peer) and `ocr __selftest`: flags onto
//! [`vellum::bench`], results printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::args::{positive, DeviceArgs};
use crate::setup;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    suite: Option<crate::score::BenchSuite>,
    #[arg(long, required_unless_present = "peer")]
    model: Option<String>,
    /// Measure HF transformers beside vellum in one run, on the same model and requests:
    /// runs tests/reference/bench_vs_transformers.py, which writes the benchmark model, runs
    /// this binary's `bench` on it (f32, --dtype bf16, and --quantization int8 / bf16 where the CPU
    /// runs them), then
    /// transformers in f32 and bf16, and prints the ratios against the faster of the two.
    #[arg(long, value_enum, conflicts_with = "model")]
    peer: Option<Peer>,
    /// The Python with torch and transformers (default: $VELLUM_PYTHON, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// With --peer: also write the measurements as JSON, and beside it (same name, .png) a bar
    /// chart of their tokens/s.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With --peer: the dtypes transformers runs in; the fastest is the anchor.
    #[arg(long, default_value = "float32,bfloat16")]
    peer_dtypes: String,
    /// With --peer: also run llama.cpp's server (GGUF f16 and Q8_0, one slot per request) on the
    /// same requests; DIR is a llama.cpp source tree with a CPU build of build/bin/llama-server.
    #[arg(long, value_name = "DIR", requires = "peer")]
    llama_cpp: Option<PathBuf>,
    /// Batch sizes for the decode measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64", value_parser = positive)]
    batches: Vec<usize>,
    /// Tokens each sequence decodes in the decode measurement.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// OCR-like requests (distinct page images) for the batched vs one-at-a-time measurement.
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Side of the square page images (532 px → 361 image tokens, ≈ 400 with the prompt).
    #[arg(long, default_value_t = 532)]
    image_size: u32,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[command(flatten)]
    place: DeviceArgs,
    /// `finepdfs`: instead of the measurements above, --pages Letter-size pages with 300–750
    /// output tokens each through one engine (pages/s, prefill and decode tokens/s, KV use).
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    #[arg(long, default_value_t = 64)]
    pages: usize,
    /// Sequences the engine runs at once (the finepdfs workload).
    #[arg(long, default_value_t = 64)]
    max_num_seqs: usize,
    #[arg(long, default_value_t = 8096)]
    max_context: usize,
    /// Share of the device's free memory the KV cache may take (the finepdfs workload).
    #[arg(long, default_value_t = 0.8)]
    kv_cache_fraction: f64,
    /// Draws the finepdfs output lengths.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Peer {
    Transformers,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Workload {
    Finepdfs,
}

#[derive(clap::Args)]
pub struct SelftestArgs {
    /// cpu, cuda or cuda:N (the kernel checks need a CUDA device).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// The repository's tests/fixtures.
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: PathBuf,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if let Some(crate::score::BenchSuite::Olmocr(args)) = args.suite {
        return crate::score::bench_olmocr(args);
    }
    if let Some(Peer::Transformers) = args.peer {
        run_bench_peer(&args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let model_name = args.model.context("--model is required")?;
    let model = args.place.open_model(&model_name)?;
    if let Some(Workload::Finepdfs) = args.workload {
        let w = vellum::bench::finepdfs_workload(
            &model,
            args.pages,
            args.max_num_seqs,
            args.max_context,
            args.kv_cache_fraction,
            args.seed,
        )?;
        eprintln!(
            "{} pages ({:.0} prompt tokens each, {} generated): {:.2} pages/s, {:.0} generated tokens/s; \
             prefill {:.0} tokens/s; decode at {} sequences {:.0} tokens/s; KV peak {:.0}% of {} blocks",
            w.pages,
            w.prompt_tokens_mean,
            w.new_tokens.iter().sum::<usize>(),
            w.pages_per_second,
            w.generated_tokens_per_second,
            w.prefill.tokens_per_second,
            w.decode.batch,
            w.decode.tokens_per_second,
            w.kv_peak_utilisation * 100.0,
            w.kv_blocks
        );
        println!("{}", serde_json::json!({ "finepdfs": w }));
        return Ok(ExitCode::SUCCESS);
    }
    let settings = vellum::bench::throughput::Settings {
        batches: args.batches.clone(),
        decode_tokens: args.decode_tokens,
        requests: args.requests,
        image_size: args.image_size,
        new_tokens: args.new_tokens,
        prompt: vellum::ROLMOCR_PROMPT.to_string(),
    };
    // A fast mode is measured against the f32 model.
    let f32_place = DeviceArgs {
        quantization: None,
        ..args.place.clone()
    };
    let open_f32 = || f32_place.open_model(&model_name);
    let reference = args
        .place
        .quantization
        .map(|q| (vellum::Quantization::from(q).name(), &open_f32 as _));
    let results = vellum::bench::throughput::measure(&model, reference, &settings, |line| eprintln!("{line}"))?;
    let results = serde_json::to_value(results)?;
    println!("{results}");
    Ok(ExitCode::SUCCESS)
}

/// `bench --peer transformers`: the reference script measures both sides in one run.
fn run_bench_peer(args: &BenchArgs) -> Result<()> {
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var_os("VELLUM_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import torch, transformers; transformers.Qwen2_5_VLForConditionalGeneration",
        ])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(setup(anyhow::anyhow!(
            "the transformers peer needs a Python with torch and transformers (>= 4.49): {} has not \
             (pass --python or set VELLUM_PYTHON)",
            python.display()
        )));
    }
    let script = [
        PathBuf::from("tests/reference/bench_vs_transformers.py"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/bench_vs_transformers.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| {
        setup(anyhow::anyhow!(
            "tests/reference/bench_vs_transformers.py not found: run from the repository"
        ))
    })?;
    if let Some(dir) = &args.llama_cpp {
        for needed in ["build/bin/llama-server", "convert_hf_to_gguf.py"] {
            if !dir.join(needed).is_file() {
                return Err(setup(anyhow::anyhow!(
                    "{} has no {needed}: want a llama.cpp source tree with llama-server built \
                     (see tests/reference/bench_vs_transformers.py)",
                    dir.display()
                )));
            }
        }
    }
    // The chart goes beside the JSON; it must not be the JSON.
    let chart = args.json.as_ref().map(|json| json.with_extension("png"));
    if let (Some(json), Some(chart)) = (&args.json, &chart) {
        if json == chart {
            return Err(setup(anyhow::anyhow!(
                "--json {} would be overwritten by the chart: name it .json",
                json.display()
            )));
        }
    }
    // vellum's modes: f32, the fast modes this CPU runs, and the bf16 dtype.
    let mut modes = vec!["none"];
    if vellum::Quantization::Int8.supported() {
        modes.push("int8");
    }
    if vellum::Quantization::Bf16.supported() {
        modes.push("bf16-linear");
    }
    modes.push("bf16");
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--ocr")
        .arg(std::env::current_exe()?)
        .args(["--requests", &args.requests.to_string()])
        .args(["--new-tokens", &args.new_tokens.to_string()])
        .args(["--dtypes", &args.peer_dtypes])
        .args(["--quantizations", &modes.join(",")]);
    if let Some(json) = &args.json {
        command.arg("--out").arg(json);
    }
    if let Some(dir) = &args.llama_cpp {
        command.arg("--llama-cpp").arg(dir);
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        anyhow::bail!("{} failed ({status})", script.display());
    }
    if let (Some(json), Some(chart)) = (&args.json, &chart) {
        let results = std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let png = vellum::bench::peer::chart(&results)
            .and_then(|c| c.png())
            .with_context(|| format!("charting {}", json.display()))?;
        std::fs::write(chart, png).with_context(|| format!("writing {}", chart.display()))?;
        eprintln!("results: {}, chart: {}", json.display(), chart.display());
    }
    Ok(())
}

pub fn selftest(args: SelftestArgs) -> Result<ExitCode> {
    let device = vellum::device::parse(&args.device)?;
    let mut checks = Vec::new();
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        checks.extend(vellum::selftest::kernels(&device)?);
    }
    if device.is_cpu() {
        eprintln!("kernel checks skipped: they need a CUDA device");
    }
    checks.extend(vellum::selftest::parity(&device, &args.fixtures)?);
    for c in &checks {
        println!("{}", serde_json::to_string(c)?);
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
    eprintln!(
        "{} checks, {} failed{}",
        checks.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
