//! `ocr`: the command-line face of vellum.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::DType;
use clap::{Parser, Subcommand, ValueEnum};

use vellum::bench::olmocr;
use vellum::engine::kv_cache::CacheBudget;
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig};
use vellum::models::VisionLanguageModel;
use vellum::pdf::route::{route_document, Router};
use vellum::pdf::worker::{Worker, WorkerCommand};
use vellum::pdf::xgboost::XgbModel;
use vellum::pdf::RenderMode;
use vellum::pipeline;
use vellum::pipeline::card::Prompt;
use vellum::pipeline::document::{DocumentResult, OcrOptions, PagePrompt, Recognizer};
use vellum::pipeline::run::{RunObserver, RunOptions, RunStats};
use vellum::pipeline::shard::Shard;

/// A count that must be at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number within `lo..=hi`.
fn within(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be a number from {lo} to {hi}"))
    }
}

fn temperature(s: &str) -> Result<f64, String> {
    within(s, 0.0, 100.0)
}

fn fraction(s: &str) -> Result<f64, String> {
    within(s, 0.0, 1.0)
}

fn learning_rate(s: &str) -> Result<f64, String> {
    within(s, 0.0, 10.0)
}

fn gib(s: &str) -> Result<f64, String> {
    within(s, 1e-3, 1e6)
}

#[derive(Parser)]
#[command(
    name = "ocr",
    version,
    about = "OCR with vision-language models, in-process on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More detail on stderr: -v the pipeline's and engine's phases, -vv everything vellum logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Errors and the final summary only (no progress).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

/// A configuration that cannot work: reported before any document is touched, exit status 4.
#[derive(Debug)]
struct SetupError(anyhow::Error);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for SetupError {}

fn setup(e: impl Into<anyhow::Error>) -> anyhow::Error {
    SetupError(e.into()).into()
}

/// Exit statuses (README "Exit status"): 0 done, 1 documents failed, 2 bad command line (clap),
/// 3 stopped by a signal, 4 bad setup, 5 pages wait for a model.
const EXIT_INTERRUPTED: u8 = 3;
const EXIT_SETUP: u8 = 4;
const EXIT_PENDING: u8 = 5;

#[derive(Subcommand)]
enum Command {
    /// Run the model on one image and print what it generates.
    Generate(GenerateArgs),
    /// OCR documents: text layers where they are good, the model where they are not.
    Run(RunArgs),
    /// Decide, per document, whether it needs OCR; prints one JSON line per input.
    Route(RouteArgs),
    /// Render one page to a PNG, for inspection.
    Render(RenderArgs),
    /// Measure decode and OCR throughput on a model (prints JSON).
    Bench(BenchArgs),
    /// Score OCR outputs on olmOCR-Bench: a table per candidate folder, optionally JSON.
    Score(ScoreArgs),
    /// Turn a nano DeepSeek-OCR trainer checkpoint (step_N.pt) into a model directory.
    Convert(ConvertArgs),
    /// Train a model on the fork's sample format: the nano DeepSeek-OCR model (Stage 1 or 2),
    /// or fine-tune Qwen2.5-VL / Qwen2-VL (RolmOCR, olmOCR) the olmOCR way.
    Train(TrainArgs),
    /// Write synthetic printed pages (words in the standard PDF fonts) as a training set.
    Synth(SynthArgs),
    /// olmOCR-mix pages (the hub's parquet + tarballs, or unpacked) → a training set.
    Prepare(PrepareArgs),
    /// The pdfium worker process (started by vellum itself).
    #[command(name = vellum::pdf::worker::WORKER_SUBCOMMAND, hide = true)]
    PdfWorker,
    /// The GPU machine's checks, from this binary alone: kernels against their CPU twins and the
    /// tiny models against transformers (prints one JSON line per check).
    #[command(name = "__selftest", hide = true)]
    Selftest(SelftestArgs),
}

#[derive(clap::Args)]
struct SelftestArgs {
    /// cpu, cuda or cuda:N (the kernel checks need a CUDA device).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// The repository's tests/fixtures.
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// PDFs and page images, folders of them (searched recursively), glob patterns, or manifests
    /// (.txt/.lst: one path per line; .jsonl: {"path": ...} per line).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// A model directory or hub id. A model that cannot be loaded stops the run before it
    /// starts (exit status 4), unless --allow-no-model.
    #[arg(long)]
    model: String,
    /// If the model cannot be had, take the text layers anyway: documents with pages that need
    /// OCR are left pending (listed in <out>/<rank>/pending.txt, not marked done, exit status 5),
    /// and a rerun with a model OCRs exactly those.
    #[arg(long)]
    allow_no_model: bool,
    /// Attempt again the documents whose latest attempt failed (they are in failed/).
    #[arg(long)]
    retry_failed: bool,
    /// The instruction pages are OCR'd with (default: the model card's).
    #[arg(long)]
    prompt: Option<String>,
    /// First attempt's temperature (default: the model card's; 0 is greedy); retries climb
    /// olmOCR's ladder.
    #[arg(long, value_parser = temperature)]
    temperature: Option<f64>,
    /// The model card (prompt, render size, sampling, answer format): rolmocr, olmocr-v0.1,
    /// olmocr-2 or nano-deepseek-ocr. Default: by hub id, else by architecture.
    #[arg(long)]
    card: Option<String>,
    /// Output: <out>/<rank:05>/<chunk:05>.jsonl[.gz], failed/, progress and stats; `-` prints
    /// each document's text to stdout instead (no folder, nothing to resume).
    #[arg(long)]
    out: PathBuf,
    /// Only these pages of each document: 1-based ranges such as 1-3,7,10-.
    #[arg(long)]
    pages: Option<vellum::pdf::pages::PageRanges>,
    /// This task's rank (default: from a Slurm array job, else 0).
    #[arg(long)]
    rank: Option<usize>,
    /// Tasks in the job (default: from a Slurm array job, else 1).
    #[arg(long)]
    world_size: Option<usize>,
    /// Per page; default: what the context leaves after the prompt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[command(flatten)]
    place: DeviceArgs,
    /// finepdfs, olmocr or dpi=N (default: the model card's).
    #[arg(long)]
    mode: Option<RenderMode>,
    /// Documents per output chunk.
    #[arg(long, default_value_t = 100, value_parser = positive)]
    chunk_size: usize,
    /// Write .jsonl.gz chunks.
    #[arg(long)]
    gzip: bool,
    /// Also write <out>/markdown/<id>.md per document.
    #[arg(long)]
    markdown: bool,
    /// Retries of a bad page (olmOCR's temperature ladder) before it falls back to its text layer.
    #[arg(long, default_value_t = 3)]
    max_retries: usize,
    /// A document with a larger share of fallback OCR pages goes to failed/.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    max_bad_page_rate: f64,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BenchArgs {
    #[command(subcommand)]
    suite: Option<BenchSuite>,
    #[arg(long, required_unless_present = "peer")]
    model: Option<String>,
    /// Measure HF transformers beside vellum in one run, on the same model and requests:
    /// runs tests/reference/bench_vs_transformers.py, which writes the benchmark model, runs
    /// this binary's `bench` on it (f32, then --quantization int8 where the CPU has AVX2), then
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

#[derive(clap::Args)]
struct ScoreArgs {
    /// The benchmark folder: test *.jsonl files (and pdfs/).
    bench_dir: PathBuf,
    /// Folders of `<pdf stem>_pg<page>_repeat<k>.md` outputs, one per OCR system.
    #[arg(required = true)]
    candidates: Vec<PathBuf>,
    /// Also write the scores as JSON: {"candidates": {name: {overall, by_type, tests}}}.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the report into this folder: scores.png (a chart of the scores) and
    /// report.html (the table, the chart, and every failed test with what it expected and the
    /// nearest the output came).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchSuite {
    /// olmOCR-Bench: write vellum's (and tesseract's) outputs for the PDFs of a benchmark folder,
    /// then score them beside the candidate folders the benchmark already has.
    Olmocr(BenchOlmocrArgs),
}

#[derive(clap::Args)]
struct BenchOlmocrArgs {
    /// The benchmark folder: test *.jsonl files, pdfs/, candidate folders.
    bench_dir: PathBuf,
    /// vellum with this model (a directory or hub id), run as `ocr run` runs it; its candidate
    /// folder is vellum_<card>.
    #[arg(long, required_unless_present = "text_layer_only")]
    model: Option<String>,
    /// The model card (default: by hub id, else by architecture).
    #[arg(long, requires = "model")]
    card: Option<String>,
    /// Per page (default: the card's, else what the context leaves).
    #[arg(long, requires = "model")]
    max_new_tokens: Option<usize>,
    /// Retries of a bad page before it falls back to its text layer.
    #[arg(long, default_value_t = 3)]
    max_retries: usize,
    /// vellum's text-layer route alone, no model (with --model it is scored too).
    #[arg(long, conflicts_with = "model")]
    text_layer_only: bool,
    #[command(flatten)]
    place: DeviceArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Also run tesseract on the pages (skipped, with a message, when it is not installed).
    #[arg(long)]
    tesseract: bool,
    /// Where the candidate folders are written (<out>/vellum_text_layer, <out>/tesseract), and
    /// the report on all candidates (<out>/scores.png, <out>/report.html, as `ocr score --report`).
    #[arg(long)]
    out: PathBuf,
    /// Also write the scores as JSON, as `ocr score --json` does.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds a page may take in the pdfium worker.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
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
struct ConvertArgs {
    /// The trainer's checkpoint: a PyTorch state dict (.pt), or the same as .safetensors.
    checkpoint: PathBuf,
    out_dir: PathBuf,
    /// tokenizer.json (from tokenizer.pkl: scripts/tiktoken_to_tokenizer_json.py).
    #[arg(long)]
    tokenizer: PathBuf,
    /// GPT attention heads (the weights cannot tell).
    #[arg(long, default_value_t = 16)]
    n_head: usize,
    /// Images are padded to this square (1024; 512/640/1280 for the Tiny/Small/Large modes).
    #[arg(long, default_value_t = 1024)]
    base_size: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Cosine,
    Step,
    Constant,
    Linear,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum FreezeArg {
    Vision,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The model directory to start from (config.json, model.safetensors, tokenizer.json).
    #[arg(long, required_unless_present = "init_config")]
    model: Option<PathBuf>,
    /// Start from fresh weights (nanochat's init) for this config.json; tokenizer.json beside it.
    #[arg(long, conflicts_with = "model")]
    init_config: Option<PathBuf>,
    /// A directory with train.json / val.json in the fork's format.
    #[arg(long)]
    data: PathBuf,
    /// Where step_N/, best/ and final/ go.
    #[arg(long)]
    out: PathBuf,
    /// The vision-tokenizer model: 1: everything trains; 2: SAM (net_2/net_3 included) frozen.
    #[arg(long, default_value_t = 1)]
    stage: u8,
    /// Qwen2.5-VL: `vision` keeps the vision tower and merger fixed (no gradients computed).
    #[arg(long, value_enum)]
    freeze: Option<FreezeArg>,
    /// Qwen2.5-VL: keep only each decoder layer's input and recompute the layer on the way
    /// back (activation memory of one layer instead of all).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Qwen: train LoRA adapters of rank R on --lora-targets and nothing else; step_N/, best/
    /// and final/ are peft adapter directories (`ocr run --model` serves them unmerged).
    #[arg(long, value_parser = positive)]
    lora: Option<usize>,
    /// The adapters' α (their output is scaled by α/R). Default: R.
    #[arg(long, requires = "lora")]
    lora_alpha: Option<f64>,
    /// Modules that get adapters, by the last part of their name (as peft matches them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj",
        requires = "lora"
    )]
    lora_targets: Vec<String>,
    /// Write final/ as a plain model directory with the adapters merged into the weights.
    #[arg(long, requires = "lora")]
    merge_lora: bool,
    #[arg(long, value_parser = positive)]
    steps: usize,
    /// Samples per micro-batch; a step is batch-size × grad-accum samples.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    batch_size: usize,
    #[arg(long, default_value_t = 1, value_parser = positive)]
    grad_accum: usize,
    /// Token budget of a micro-batch (sequence + each image's encoder cost, (base/16)²).
    #[arg(long, value_parser = positive)]
    batch_tokens: Option<usize>,
    #[arg(long, default_value_t = 5e-5, value_parser = learning_rate)]
    lr: f64,
    #[arg(long, default_value_t = 10)]
    warmup_steps: usize,
    /// Warmup as a fraction of --steps, rounded up (olmOCR: 0.1); replaces --warmup-steps.
    #[arg(long, value_parser = fraction, conflicts_with = "warmup_steps")]
    warmup_ratio: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// StepLR: decay every this many steps after warmup.
    #[arg(long, default_value_t = 2000)]
    lr_decay_step: usize,
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    lr_decay_gamma: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm limit (0: none).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 4096, value_parser = positive)]
    seq_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples in train.json's order, as a DataLoader with shuffle=False, drop_last=True.
    #[arg(long)]
    no_shuffle: bool,
    /// Write a resumable step_N/ every N steps (0: only final/).
    #[arg(long, default_value_t = 0)]
    save_every: usize,
    /// Continue from the newest complete step_N/ under --out.
    #[arg(long)]
    resume: bool,
    /// Validation loss every N steps (0: never); the best model is kept in <out>/best/.
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// Stop after K evaluations without a lower validation loss.
    #[arg(long)]
    patience: Option<usize>,
    /// Also generate on K validation images through the engine (live weights) and report CER/WER.
    #[arg(long, default_value_t = 0)]
    eval_generate: usize,
    /// Stage 2: fraction of steps on text alone, from --text-data (JSONL of {"text"}).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    text_ratio: f64,
    #[arg(long)]
    text_data: Option<PathBuf>,
    #[command(flatten)]
    place: DeviceArgs,
    /// One JSON line per optimizer step: {"step", "loss", "lr", "grad_norm", "tokens"}.
    #[arg(long)]
    log_json: Option<PathBuf>,
}

impl TrainArgs {
    fn config(&self) -> vellum::train::TrainConfig {
        use vellum::train::optim::{AdamWConfig, Schedule};
        let warmup = match self.warmup_ratio {
            Some(ratio) => (self.steps as f64 * ratio).ceil() as usize,
            None => self.warmup_steps,
        };
        vellum::train::TrainConfig {
            data: self.data.clone(),
            out: self.out.clone(),
            stage: self.stage,
            freeze_vision: self.freeze == Some(FreezeArg::Vision),
            gradient_checkpointing: self.gradient_checkpointing,
            lora: self.lora.map(|r| vellum::models::lora::LoraConfig {
                r,
                lora_alpha: self.lora_alpha.unwrap_or(r as f64),
                target_modules: self.lora_targets.clone(),
                base_model_name_or_path: None,
            }),
            merge_lora: self.merge_lora,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            batch_tokens: self.batch_tokens,
            lr: self.lr,
            schedule: match self.schedule {
                ScheduleArg::Cosine => Schedule::Cosine {
                    warmup,
                    steps: self.steps,
                },
                ScheduleArg::Step => Schedule::Step {
                    warmup,
                    decay_step: self.lr_decay_step,
                    gamma: self.lr_decay_gamma,
                },
                ScheduleArg::Constant => Schedule::Constant { warmup },
                ScheduleArg::Linear => Schedule::Linear {
                    warmup,
                    steps: self.steps,
                },
            },
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            grad_clip: self.grad_clip,
            seq_len: self.seq_len,
            seed: self.seed,
            shuffle: !self.no_shuffle,
            save_every: self.save_every,
            eval_every: self.eval_every,
            patience: self.patience,
            eval_generate: self.eval_generate,
            text_ratio: self.text_ratio,
            text_data: self.text_data.clone(),
            log_json: self.log_json.clone(),
        }
    }
}

#[derive(clap::Args)]
struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    num_train: usize,
    #[arg(long, default_value_t = 100)]
    num_val: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct PrepareArgs {
    /// olmOCR-mix as the hub lays it out (<subset>_train.parquet + pdf_tarballs/), or unpacked
    /// (a .md with YAML front matter beside each .pdf).
    input: PathBuf,
    /// The hub layout's subset.
    #[arg(long, default_value = "00_documents")]
    subset: String,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 300)]
    num_train: usize,
    #[arg(long, default_value_t = 10)]
    num_val: usize,
    /// nano: the vision-tokenizer model's samples (150 DPI, instruction by content type);
    /// olmocr: olmOCR's (longest side 1288, v4 prompt, YAML front matter + text); rolmocr:
    /// RolmOCR's (longest side 1288, its prompt, plain text).
    #[arg(long, value_enum, default_value_t = PrepareFormat::Nano)]
    format: PrepareFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrepareFormat {
    Nano,
    Olmocr,
    Rolmocr,
}

fn run_prepare(args: PrepareArgs) -> Result<ExitCode> {
    use vellum::train::prepare::Format;
    let format = match args.format {
        PrepareFormat::Nano => Format::Nano,
        PrepareFormat::Olmocr => Format::Olmocr,
        PrepareFormat::Rolmocr => Format::Rolmocr,
    };
    let report = vellum::train::prepare::prepare(
        &args.input,
        &args.out,
        &args.subset,
        args.num_train,
        args.num_val,
        format,
    )?;
    for (id, reason) in &report.skipped {
        eprintln!("skipped {id}: {reason}");
    }
    eprintln!(
        "{} train + {} val samples in {} ({}); {} rows skipped; report in {}",
        report.train,
        report.val,
        args.out.display(),
        report
            .types
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.skipped.len(),
        args.out.join("report.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_train(args: TrainArgs) -> Result<ExitCode> {
    use vellum::train::trainer::Event;
    let device = vellum::device::parse(&args.place.device)?;
    if args.place.quantization.is_some() {
        anyhow::bail!("--quantization: training runs in f32 (an int8 copy serves, it does not learn)");
    }
    if let Some(dtype) = args.place.dtype.map(DType::from) {
        if dtype != DType::F32 {
            anyhow::bail!(
                "--dtype {dtype:?}: training runs in f32 for now (bf16 with f32 master weights is not built)"
            );
        }
    }
    let started = Instant::now();
    let start = match (&args.model, &args.init_config) {
        (Some(dir), _) => vellum::train::trainer::Start::Model(dir.clone()),
        (None, Some(config)) => vellum::train::trainer::Start::Fresh {
            config: config.clone(),
            seed: args.seed,
        },
        (None, None) => unreachable!("clap requires one"),
    };
    let summary = vellum::train::trainer::run(&start, &device, args.config(), args.resume, |event| match event {
        Event::Resumed {
            from: Some((dir, step)),
        } => eprintln!("resuming from {} (step {step})", dir.display()),
        Event::Resumed { from: None } => eprintln!(
            "--resume: no complete checkpoint in {}; starting from the beginning",
            args.out.display()
        ),
        Event::Step(s) => eprintln!(
            "step {:>5}/{} | loss {:.4} | lr {:.3e} | grad norm {:.3} | {} tokens | {:.1}s",
            s.step + 1,
            args.steps,
            s.loss,
            s.lr,
            s.grad_norm,
            s.tokens,
            started.elapsed().as_secs_f64()
        ),
        Event::Eval(e) => {
            let gen = match (e.cer, e.wer) {
                (Some(c), Some(w)) => format!(" | CER {:.3} | WER {:.3} ({} samples)", c, w, e.samples.len()),
                _ => String::new(),
            };
            eprintln!("eval at step {} | val loss {:.4}{gen}", e.step, e.val_loss)
        }
        Event::Saved(p) => eprintln!("saved {}", p.display()),
    })?;
    eprintln!(
        "done: {} steps{}, best val loss {}, {} samples truncated at --seq-len {}, final model in {}",
        summary.steps,
        if summary.stopped_early {
            " (stopped early: no improvement)"
        } else {
            ""
        },
        summary.best_val_loss.map_or("n/a".into(), |l| format!("{l:.4}")),
        summary.truncated_samples,
        args.seq_len,
        summary.final_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct RouteArgs {
    /// PDFs and page images, folders, globs or manifests, as `run` takes them.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// An XGBoost binary classifier saved as JSON, instead of the default rules.
    #[arg(long)]
    xgboost: Option<PathBuf>,
    #[arg(long)]
    password: Option<String>,
    /// Time bound per page, in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(clap::Args)]
struct RenderArgs {
    input: PathBuf,
    /// 1-based page number.
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// finepdfs, olmocr or dpi=N.
    #[arg(long, default_value = "finepdfs")]
    mode: RenderMode,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    password: Option<String>,
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F32,
    Bf16,
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A model directory, or a hub id (org/name[@revision]) found in the HF cache or downloaded.
    #[arg(long)]
    model: String,
    /// A page image or a PDF (recognised by content, whatever the extension).
    #[arg(
        long,
        visible_alias = "input",
        required_unless_present = "requests",
        conflicts_with = "requests"
    )]
    image: Option<PathBuf>,
    /// The PDF's page (1-based).
    #[arg(long, default_value_t = 1, value_parser = positive)]
    page: usize,
    /// How a PDF page is rendered: finepdfs, olmocr or dpi=N (images are taken as they are).
    #[arg(long, default_value = "finepdfs")]
    mode: RenderMode,
    /// Many requests, one JSON object per line: {"id", "image", "page", "prompt",
    /// "max_new_tokens", "temperature"}; prints one JSON line per request, with its id, in
    /// input order.
    #[arg(long)]
    requests: Option<PathBuf>,
    /// The instruction after the image (default: the model's own; RolmOCR's for Qwen2.5-VL,
    /// "OCR this document." for nano DeepSeek-OCR).
    #[arg(long)]
    prompt: Option<String>,
    /// Default: what the context leaves after the prompt.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// 0 samples greedily.
    #[arg(long, default_value_t = 0.0, value_parser = temperature)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generate through end tokens until --max-new-tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    place: DeviceArgs,
    /// Size the image as FinePDFs did for RolmOCR: between 56 and 2048 merged visual tokens.
    #[arg(long)]
    finepdfs: bool,
    /// Print JSON: prompt_tokens, tokens, logprobs, text, finish_reason.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Where a model runs.
#[derive(clap::Args, Clone)]
struct DeviceArgs {
    /// Default: f32 on the CPU, bf16 on a GPU.
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The CPU fast mode: linear layers in int8 (7-bit weights and activations; AVX2, AVX-512
    /// VNNI or AMX), 2–4.5× f32 end to end; the README's Performance section gives its
    /// accuracy. Qwen-VL models.
    #[arg(long, value_enum)]
    quantization: Option<Quantization>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Quantization {
    Int8,
}

impl DeviceArgs {
    /// The device and the flags' combination for the model `spec`, checked before any model
    /// loads.
    fn check(&self, spec: &str) -> Result<()> {
        let device = vellum::device::parse(&self.device)?;
        if self.quantization == Some(Quantization::Int8) {
            let dtype = self
                .dtype
                .map_or_else(|| vellum::device::default_dtype(&device), DType::from);
            vellum::models::check_int8(spec, &device, dtype)?;
        }
        Ok(())
    }

    /// The model a directory or hub id holds, on this device.
    fn open(&self, spec: &str, finepdfs: bool) -> Result<Arc<dyn VisionLanguageModel>> {
        vellum::models::open(
            spec,
            &vellum::device::parse(&self.device)?,
            self.dtype.map(DType::from),
            self.quantization == Some(Quantization::Int8),
            finepdfs,
        )
    }
}

/// How the engine runs.
#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// KV-cache budget in GiB, reserved at start (default: what --max-num-seqs sequences of
    /// --max-context tokens can use, at most a quarter of the available memory).
    #[arg(long, value_parser = gib)]
    kv_cache_gib: Option<f64>,
    /// Longest prompt plus output, in tokens.
    #[arg(long, default_value_t = 8096, value_parser = positive)]
    max_context: usize,
    /// Sequences decoding at once.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    max_num_seqs: usize,
}

impl EngineArgs {
    fn config(&self) -> EngineConfig {
        let mut config = EngineConfig {
            max_context: self.max_context,
            ..Default::default()
        };
        config.scheduler.max_num_seqs = self.max_num_seqs;
        if let Some(gib) = self.kv_cache_gib {
            config.cache = CacheBudget::Bytes((gib * (1u64 << 30) as f64) as u64);
        }
        config
    }
}

fn run_generate(args: GenerateArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut pages = worker(60.0).map_err(setup)?;
    let mut load = |path: &std::path::Path, page: usize| -> Result<image::DynamicImage> {
        Ok(image::DynamicImage::ImageRgb8(
            pages.render(path, None, page, args.mode)?,
        ))
    };
    // A bad input is found before the model loads (seconds to minutes).
    let image = args.image.as_ref().map(|p| load(p, args.page)).transpose()?;
    let engine = args
        .place
        .open(&args.model, args.finepdfs)
        .and_then(|m| Engine::new(m, args.engine.config()))
        .map_err(setup)?;
    let loaded = started.elapsed();
    let params = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
        ignore_eos: args.ignore_eos,
        ..Default::default()
    };
    let Some(requests) = &args.requests else {
        let path = args.image.as_ref().expect("clap requires --image without --requests");
        let image = image.expect("loaded above");
        let prompt = args
            .prompt
            .as_deref()
            .unwrap_or(engine.model().info().default_instruction);
        let out = engine
            .generate(&image, prompt, params)
            .with_context(|| format!("generating for {}", path.display()))?;
        if args.json {
            println!("{}", serde_json::to_string(&out)?);
        } else {
            println!("{}", out.text);
            eprintln!(
                "{} prompt tokens, {} generated ({:?}); load {:.2}s, total {:.2}s",
                out.prompt_tokens,
                out.tokens.len(),
                out.finish_reason,
                loaded.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let failed = pipeline::requests::run(&engine, requests, &params, args.prompt.as_deref(), load, |line| {
        println!("{line}")
    })?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Everything `run` needs that can be wrong before the first document: inputs, the output
/// folder's sharding, libpdfium, limits, the device and the model.
/// What `run` found ready: its share, the documents, the model (or why not), the pdfium
/// worker and the model card.
type Prepared = (
    Shard,
    Vec<pipeline::sources::Source>,
    Recognizer,
    WorkerCommand,
    pipeline::card::Card,
);

fn prepare_run(args: &RunArgs) -> Result<Prepared> {
    let shard = Shard::resolve(args.rank, args.world_size).map_err(setup)?;
    if let Some(name) = &args.card {
        pipeline::card::for_model("", "", Some(name)).map_err(setup)?;
    }
    let sources = pipeline::sources::collect(&args.inputs).map_err(setup)?;
    if sources.is_empty() {
        return Err(setup(anyhow::anyhow!(
            "no PDFs or images in {} (looked for {})",
            args.inputs.join(", "),
            pipeline::sources::DOCUMENT_EXTENSIONS.join(", ")
        )));
    }
    shard.check_folder(&args.out).map_err(setup)?;
    let worker = WorkerCommand::locate().map_err(|e| setup(anyhow::anyhow!(e)))?;
    let images_only = sources.iter().all(|s| {
        s.path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e != "pdf" && pipeline::sources::DOCUMENT_EXTENSIONS.contains(&e.to_lowercase().as_str()))
    });
    if !images_only {
        Worker::new(worker.clone())
            .check()
            .map_err(|e| setup(anyhow::anyhow!("PDFs need libpdfium: {e}")))?;
    }
    if let Some(n) = args.max_new_tokens {
        if n >= args.engine.max_context {
            return Err(setup(anyhow::anyhow!(
                "--max-new-tokens {n} leaves no room for the prompt in the {}-token context (--max-context)",
                args.engine.max_context
            )));
        }
    }
    args.place.check(&args.model).map_err(setup)?;
    let engine = args
        .place
        .open(&args.model, false)
        .and_then(|m| Engine::new(m, args.engine.config()));
    let engine = engine.and_then(|e| {
        // Fewer tokens than one full-context sequence: long pages would fail one by one.
        if e.cache_tokens() < args.engine.max_context {
            return Err(setup(anyhow::anyhow!(
                "the KV cache holds {} tokens, less than one --max-context {} sequence: give it more \
                 memory (--kv-cache-gib) or lower --max-context",
                e.cache_tokens(),
                args.engine.max_context
            )));
        }
        Ok(e)
    });
    let recognizer =
        match engine {
            Ok(engine) => Recognizer::Engine(Arc::new(engine)),
            Err(e) if e.downcast_ref::<SetupError>().is_some() => return Err(e),
            Err(e) if args.allow_no_model => {
                eprintln!("warning: {e:#}; --allow-no-model: pages that need OCR wait for a model");
                Recognizer::Unavailable(format!("{e:#}"))
            }
            Err(e) => return Err(setup(e.context(
                "the model is needed for scanned pages (--allow-no-model takes text layers and leaves those pending)",
            ))),
        };
    let architecture = match &recognizer {
        Recognizer::Engine(e) => e.model().info().architecture,
        Recognizer::Unavailable(_) => "",
    };
    let (card, warning) = pipeline::card::for_model(&args.model, architecture, args.card.as_deref()).map_err(setup)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok((shard, sources, recognizer, worker, card))
}

fn run_run(args: RunArgs, quiet: bool) -> Result<ExitCode> {
    let (shard, sources, recognizer, worker, card) = prepare_run(&args)?;
    let mut ocr = OcrOptions::new(worker);
    let overrides = CardOverrides {
        prompt: args.prompt.clone(),
        mode: args.mode,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
    };
    apply_card(&mut ocr, &card, &overrides, args.engine.max_context);
    ocr.pages = args.pages.clone();
    ocr.max_retries = args.max_retries;
    // SIGINT/SIGTERM set the run's stop flag: nothing new starts, pages in the engine are
    // cancelled, finished documents are committed, exit 3. A second one exits at once, which
    // the chunk ledger makes safe.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED as i32, ocr.stop.clone())?;
        signal_hook::flag::register(signal, ocr.stop.clone())?;
    }
    let stop = ocr.stop.clone();
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("\nstopping: committing the finished documents (interrupt again to exit now; a rerun continues)");
    });
    if args.out.as_os_str() == "-" {
        return print_documents(&sources, &recognizer, &ocr, args.max_bad_page_rate);
    }
    let options = RunOptions {
        sources,
        out: args.out,
        shard,
        model_name: args.model,
        chunk_size: args.chunk_size,
        gzip: args.gzip,
        markdown: args.markdown,
        max_bad_page_rate: args.max_bad_page_rate,
        retry_failed: args.retry_failed,
    };
    let engine = match &recognizer {
        Recognizer::Engine(e) => Some(e.clone()),
        Recognizer::Unavailable(_) => None,
    };
    let mut progress = Progress::new(engine, quiet);
    let stats = pipeline::run::run(&options, &recognizer, &ocr, &mut progress)?;
    progress.finish();
    let f = &stats.folder;
    eprintln!(
        "rank {}: this run wrote {} documents ({} to failed/, {} pending), {} pages: {} text layer, {} OCR \
         ({} fell back, {} retried), {} tokens; {:.2} pages/s, {:.1} tokens/s",
        stats.rank,
        stats.documents_written,
        stats.documents_failed,
        stats.documents_pending,
        stats.pages,
        stats.pages_text_layer,
        stats.pages_ocr,
        stats.pages_fallback,
        stats.pages_retried,
        stats.generated_tokens,
        stats.pages_per_second,
        stats.tokens_per_second,
    );
    eprintln!(
        "{}: {} of {} documents done, {} failed{}, {} to do{}",
        options.out.join(format!("{:05}", stats.rank)).display(),
        f.done,
        f.documents,
        f.failed,
        if f.failed > 0 && !options.retry_failed {
            " (--retry-failed attempts them again)"
        } else {
            ""
        },
        f.remaining,
        if stats.interrupted {
            "; stopped by a signal: rerun the same command to continue"
        } else if f.pending > 0 {
            "; pending documents wait for a model: rerun with one"
        } else {
            ""
        }
    );
    Ok(if stats.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if f.failed > 0 {
        ExitCode::FAILURE
    } else if f.remaining > 0 {
        ExitCode::from(EXIT_PENDING)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the command line sets over a model card.
#[derive(Default)]
struct CardOverrides {
    prompt: Option<String>,
    mode: Option<RenderMode>,
    temperature: Option<f64>,
    max_new_tokens: Option<usize>,
}

/// The card's prompt, render size, sampling and answer format, where the flags say nothing.
fn apply_card(ocr: &mut OcrOptions, card: &pipeline::card::Card, flags: &CardOverrides, max_context: usize) {
    ocr.mode = flags.mode.unwrap_or(card.render);
    ocr.prompt = match (&flags.prompt, &card.prompt) {
        (Some(p), _) => PagePrompt::Fixed(Some(p.clone())),
        (None, Prompt::Fixed(p)) => PagePrompt::Fixed(Some(p.clone())),
        (None, Prompt::OlmocrAnchored { target_length }) => PagePrompt::Anchored {
            max_length: *target_length,
        },
    };
    ocr.answer = card.answer;
    // A card's cap that leaves the prompt too little of the context gives way to what is left.
    let card_cap = card.sampling.max_new_tokens.filter(|&n| n <= max_context / 2);
    ocr.params.max_new_tokens = flags.max_new_tokens.or(card_cap);
    ocr.params.temperature = flags.temperature.unwrap_or(card.sampling.temperature);
    ocr.params.repetition_penalty = card.sampling.repetition_penalty;
}

/// `run --out -`: each document's text on stdout (a form feed between documents), in input
/// order; problems on stderr.
fn print_documents(
    sources: &[pipeline::sources::Source],
    recognizer: &Recognizer,
    ocr: &OcrOptions,
    max_bad_page_rate: f64,
) -> Result<ExitCode> {
    use std::io::Write;
    let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
    let (mut failed, mut pending, mut printed) = (0, 0, 0);
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    pipeline::document::ocr_documents(&paths, recognizer, ocr, |index, doc| {
        let id = &sources[index].id;
        if let Some(reason) = doc.failure(max_bad_page_rate) {
            eprintln!("{id}: failed: {reason}");
            failed += 1;
        }
        if doc.awaits_model {
            eprintln!("{id}: pages need OCR and there is no model: their text layer is printed");
            pending += 1;
        }
        let separator = if printed > 0 { "\x0c\n" } else { "" };
        printed += 1;
        if let Err(e) = writeln!(stdout, "{separator}{}", doc.text()) {
            write_error.get_or_insert(e);
        }
    });
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("writing to stdout"));
    }
    Ok(if ocr.stop.load(std::sync::atomic::Ordering::Relaxed) {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else if pending > 0 {
        ExitCode::from(EXIT_PENDING)
    } else {
        ExitCode::SUCCESS
    })
}

/// A progress bar on a terminal (documents with an ETA; pages and tokens, live from the
/// engine), one line per document otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    engine: Option<Arc<Engine>>,
    quiet: bool,
    started: Instant,
    pages: Arc<std::sync::atomic::AtomicUsize>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn new(engine: Option<Arc<Engine>>, quiet: bool) -> Self {
        Self {
            bar: None,
            engine,
            quiet,
            started: Instant::now(),
            pages: Default::default(),
            ticker: None,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The bar's message: pages finished, tokens generated so far (retries included) and the rate.
fn rates(pages: usize, tokens: u64, secs: f64) -> String {
    format!(
        "{pages} pages, {tokens} tokens ({:.2} pages/s, {:.1} tokens/s)",
        pages as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9)
    )
}

impl RunObserver for Progress {
    fn started(&mut self, stats: &RunStats) {
        let todo = stats.documents_in_shard - stats.documents_already_done;
        if self.quiet {
            return;
        }
        eprintln!(
            "rank {}/{}: {} documents, {} done by an earlier run, {todo} to do",
            stats.rank, stats.world_size, stats.documents_in_shard, stats.documents_already_done
        );
        self.started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(todo as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} documents, {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        // Pages spend minutes in the engine: keep the token count moving meanwhile.
        if let Some(engine) = self.engine.clone() {
            let (bar, pages, started) = (bar.clone(), self.pages.clone(), self.started);
            self.ticker = Some(std::thread::spawn(move || {
                while !bar.is_finished() {
                    let pages = pages.load(std::sync::atomic::Ordering::Relaxed);
                    bar.set_message(rates(
                        pages,
                        engine.stats().generated_tokens,
                        started.elapsed().as_secs_f64(),
                    ));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }));
        }
        self.bar = Some(bar);
    }

    fn document(&mut self, doc: &DocumentResult) {
        let pages = self
            .pages
            .fetch_add(doc.pages.len(), std::sync::atomic::Ordering::Relaxed)
            + doc.pages.len();
        if self.quiet {
            return;
        }
        let tokens = self.engine.as_ref().map_or(0, |e| e.stats().generated_tokens);
        match &self.bar {
            Some(bar) => {
                bar.set_message(rates(pages, tokens, self.started.elapsed().as_secs_f64()));
                bar.inc(1);
            }
            None => {
                // This document's own numbers: its pages' model time, every attempt's tokens.
                let seconds: f64 = doc.pages.iter().map(|p| p.seconds).sum();
                let doc_tokens: usize = doc.pages.iter().map(|p| p.total_generated_tokens).sum();
                let status = match (&doc.error, doc.awaits_model) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, true) => format!("{} pages, pending: needs a model", doc.pages.len()),
                    (None, false) if doc_tokens == 0 => format!("{} pages, text layer", doc.pages.len()),
                    (None, false) => format!("{} pages, {doc_tokens} tokens in {seconds:.1}s", doc.pages.len()),
                };
                eprintln!("{}: {status}", doc.source.display());
            }
        }
    }
}

fn run_bench(args: BenchArgs) -> Result<()> {
    if let Some(BenchSuite::Olmocr(args)) = args.suite {
        return run_bench_olmocr(args);
    }
    if let Some(Peer::Transformers) = args.peer {
        return run_bench_peer(&args);
    }
    let model_name = args.model.context("--model is required")?;
    let model = args.place.open(&model_name, false)?;
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
        return Ok(());
    }
    let pages = vellum::bench::pages(args.requests.max(1), args.image_size, args.image_size);
    let mut decode = Vec::new();
    let engine = vellum::bench::engine(model.clone(), args.batches.iter().copied().max().unwrap_or(1))?;
    let small = vellum::bench::pages(1, 56, 56).remove(0);
    for &batch in &args.batches {
        let rate = vellum::bench::decode_rate(&engine, &small, batch, args.decode_tokens)?;
        eprintln!("decode batch {batch:>3}: {:8.1} tokens/s", rate.tokens_per_second);
        decode.push(rate);
    }
    drop(engine);
    let ocr = vellum::bench::ocr_throughput(&model, &pages, vellum::ROLMOCR_PROMPT, args.new_tokens)?;
    eprintln!(
        "{} OCR-like requests ({:.0} prompt tokens, {} new): batched {:.1}s, one at a time {:.1}s, speedup {:.2}×",
        ocr.requests, ocr.prompt_tokens_mean, ocr.new_tokens, ocr.batched_seconds, ocr.sequential_seconds, ocr.speedup
    );
    let mut results = serde_json::json!({"decode": decode, "ocr": ocr});
    if args.place.quantization == Some(Quantization::Int8) {
        // The f32 model is the reference: its greedy outputs on a few of the same pages, scored
        // by the int8 model teacher forced.
        let reference = DeviceArgs {
            quantization: None,
            ..args.place.clone()
        }
        .open(&model_name, false)?;
        let reference = vellum::bench::engine(reference, 1)?;
        let sample = &pages[..pages.len().min(4)];
        let f = vellum::bench::fidelity::measure(&reference, &*model, sample, vellum::ROLMOCR_PROMPT, args.new_tokens)?;
        eprintln!(
            "int8 against f32, teacher forced on {} pages: top-1 agreement {:.1}% of {} positions, \
             chosen-token logprob diff max {:.3} mean {:.4}",
            sample.len(),
            100.0 * f.top1_agreement,
            f.positions,
            f.max_logprob_diff,
            f.mean_logprob_diff
        );
        results["quantization"] = "int8".into();
        results["fidelity"] = serde_json::to_value(f)?;
    }
    println!("{results}");
    Ok(())
}

fn run_selftest(args: SelftestArgs) -> Result<ExitCode> {
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

fn worker(timeout: f64) -> Result<Worker> {
    let command = WorkerCommand::locate().map_err(anyhow::Error::msg)?;
    let mut worker = Worker::new(command);
    worker.set_timeout(Duration::from_secs_f64(timeout));
    Ok(worker)
}

/// Prints one JSON line per input; a bad input gets an error line and the others go on.
fn run_route(args: RouteArgs) -> Result<ExitCode> {
    let router = match &args.xgboost {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Router::Xgboost(XgbModel::from_json(&text).with_context(|| format!("loading {}", path.display()))?)
        }
        None => Router::Rules,
    };
    let sources = pipeline::sources::collect(&args.inputs).map_err(setup)?;
    if sources.is_empty() {
        return Err(setup(anyhow::anyhow!(
            "no PDFs or images in {}",
            args.inputs.join(", ")
        )));
    }
    let mut worker = worker(args.timeout)?;
    let mut failed = 0;
    for source in &sources {
        let file = &source.path;
        let line = match route_document(&mut worker, &router, file, args.password.as_deref()) {
            Ok(route) => {
                serde_json::json!({"id": source.id, "file": file, "info": route.info, "decision": route.decision, "features": route.features})
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({"id": source.id, "file": file, "error": e, "message": e.to_string()})
            }
        };
        println!("{line}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_render(args: RenderArgs) -> Result<()> {
    let mut worker = worker(args.timeout)?;
    let image = worker.render(&args.input, args.password.as_deref(), args.page, args.mode)?;
    image
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{} page {}: {}×{} ({}) → {}",
        args.input.display(),
        args.page,
        image.width(),
        image.height(),
        args.mode,
        args.out.display()
    );
    Ok(())
}

fn load_suite(dir: &std::path::Path) -> Result<olmocr::Suite> {
    let suite = olmocr::Suite::load(dir)?;
    if suite.pdfs_from_tests {
        eprintln!(
            "{} has no pdfs/ folder: taking the PDFs the tests name ({})",
            dir.display(),
            suite.pdfs.len()
        );
    }
    Ok(suite)
}

/// Scores each candidate folder, prints its table, and writes the JSON and the report if asked.
fn score_candidates(
    suite: &olmocr::Suite,
    candidates: &[PathBuf],
    json: Option<&std::path::Path>,
    report: Option<&std::path::Path>,
) -> Result<()> {
    let mut reports: Vec<olmocr::Report> = Vec::new();
    for dir in candidates {
        let report = olmocr::score(suite, dir)?;
        if reports.iter().any(|r| r.name == report.name) {
            anyhow::bail!("two candidate folders are named {}", report.name);
        }
        print!("{}", report.table());
        reports.push(report);
    }
    if let Some(path) = json {
        let json = serde_json::to_string_pretty(&olmocr::to_json(&reports))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = report {
        let written = olmocr::report::write(dir, suite, &reports)?;
        eprintln!("report: {}, {}", written.page.display(), written.chart.display());
    }
    Ok(())
}

fn run_score(args: ScoreArgs) -> Result<()> {
    let suite = load_suite(&args.bench_dir)?;
    score_candidates(&suite, &args.candidates, args.json.as_deref(), args.report.as_deref())
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
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--ocr")
        .arg(std::env::current_exe()?)
        .args(["--requests", &args.requests.to_string()])
        .args(["--new-tokens", &args.new_tokens.to_string()])
        .args(["--dtypes", &args.peer_dtypes])
        .args([
            "--quantizations",
            if vellum::ops::int8::supported() {
                "none,int8"
            } else {
                "none"
            },
        ]);
    if let Some(json) = &args.json {
        command.arg("--out").arg(json);
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

/// Writes vellum's (and tesseract's) candidate folders, then scores them after the benchmark's
/// own candidate folders (every subfolder but pdfs/, as benchmark.py takes them).
fn run_bench_olmocr(args: BenchOlmocrArgs) -> Result<()> {
    use olmocr::candidates::{self, System};
    let suite = load_suite(&args.bench_dir)?;
    let mut systems = vec![System::TextLayer];
    if args.tesseract {
        if candidates::tesseract_available() {
            systems.push(System::Tesseract);
        } else {
            eprintln!("tesseract is not installed (apt-get install tesseract-ocr): skipping it");
        }
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&args.bench_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "pdfs"))
        .collect();
    folders.sort();
    let mut worker = worker(args.timeout)?;
    if let Some(spec) = &args.model {
        let engine = args
            .place
            .open(spec, false)
            .and_then(|m| Engine::new(m, args.engine.config()))
            .map_err(setup)?;
        let (card, warning) =
            pipeline::card::for_model(spec, engine.model().info().architecture, args.card.as_deref()).map_err(setup)?;
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        let mut ocr = OcrOptions::new(WorkerCommand::locate().map_err(|e| setup(anyhow::anyhow!(e)))?);
        let overrides = CardOverrides {
            max_new_tokens: args.max_new_tokens,
            ..Default::default()
        };
        apply_card(&mut ocr, &card, &overrides, args.engine.max_context);
        ocr.max_retries = args.max_retries;
        let out = args.out.join(format!("vellum_{}", card.name));
        let started = Instant::now();
        let failed = candidates::write_vellum(&suite, &Recognizer::Engine(Arc::new(engine)), &ocr, &out)?;
        eprintln!(
            "vellum ({} card): {} pages in {:.1}s → {}",
            card.name,
            candidates::pages(&suite).len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
        for f in &failed {
            eprintln!("  {f}");
        }
        folders.push(out);
    }
    for system in systems {
        let out = args.out.join(system.name());
        let started = Instant::now();
        let failed = candidates::write(&suite, system, &mut worker, &out)?;
        eprintln!(
            "{}: {} pages in {:.1}s → {}",
            system.name(),
            candidates::pages(&suite).len(),
            started.elapsed().as_secs_f64(),
            out.display()
        );
        for f in &failed {
            eprintln!("  failed (scored as a blank page): {f}");
        }
        folders.push(out);
    }
    score_candidates(&suite, &folders, args.json.as_deref(), Some(&args.out))
}

/// `-v`/`-vv` or `VELLUM_LOG=<tracing filter>` print the engine's and the pipeline's phases with
/// their durations on stderr; off by default.
fn init_tracing(verbose: u8) {
    let filter = match (std::env::var("VELLUM_LOG"), verbose) {
        (Ok(filter), _) => filter,
        (Err(_), 0) => return,
        (Err(_), 1) => "vellum=debug".to_string(),
        (Err(_), _) => "vellum=trace".to_string(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .try_init();
}

/// glibc hands every large buffer back to the kernel when it is freed, and candle allocates a
/// fresh output for every op: on a CPU run a quarter of the vision tower's time went to page
/// faults and zeroing new pages (1.57 s → 1.05–1.13 s a page on the bench model). Freed memory
/// up to 1 GiB is kept for reuse instead, buffers up to 32 MiB come from the heap, and every
/// thread (the engine's included) allocates from the one heap where that holds.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Run(args) => run_run(args, cli.quiet),
        Command::Route(args) => run_route(args),
        Command::Render(args) => run_render(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => run_bench(args).map(|()| ExitCode::SUCCESS),
        Command::Score(args) => run_score(args).map(|()| ExitCode::SUCCESS),
        Command::Selftest(args) => run_selftest(args),
        Command::Train(args) => run_train(args),
        Command::Prepare(args) => run_prepare(args),
        Command::Synth(args) => {
            vellum::train::synth::generate(&args.out, args.num_train, args.num_val, args.seed, &Default::default()).map(
                |()| {
                    eprintln!(
                        "{} train and {} val pages in {}",
                        args.num_train,
                        args.num_val,
                        args.out.display()
                    );
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Convert(args) => vellum::models::deepseek_ocr::convert::convert_checkpoint(
            &args.checkpoint,
            &args.out_dir,
            &args.tokenizer,
            args.n_head,
            args.base_size,
        )
        .map(|config| {
            eprintln!(
                "{} → {}: SAM {}×{}, CLIP {}×{}, GPT {} layers of {} ({} heads), vocabulary {}, base size {}",
                args.checkpoint.display(),
                args.out_dir.display(),
                config.sam.depth,
                config.sam.embed_dim,
                config.clip.num_layers,
                config.clip.hidden_size,
                config.gpt.n_layer,
                config.gpt.n_embd,
                config.gpt.n_head,
                config.gpt.vocab_size,
                config.base_size
            );
            ExitCode::SUCCESS
        }),
        Command::PdfWorker => vellum::pdf::worker::serve()
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<SetupError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
