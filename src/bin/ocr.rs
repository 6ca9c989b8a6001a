//! `ocr`: the command-line face of vellum.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};

use vellum::generation::{generate, SamplingParams};
use vellum::models::qwen2_5_vl::Model;
use vellum::pdf::route::{route_document, Router};
use vellum::pdf::worker::{Worker, WorkerCommand};
use vellum::pdf::xgboost::XgbModel;
use vellum::pdf::RenderMode;

#[derive(Parser)]
#[command(
    name = "ocr",
    version,
    about = "OCR with vision-language models, in-process on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the model on one image and print what it generates.
    Generate(GenerateArgs),
    /// Decide, per document, whether it needs OCR; prints one JSON line per input.
    Route(RouteArgs),
    /// Render one page to a PNG, for inspection.
    Render(RenderArgs),
    /// The pdfium worker process (started by vellum itself).
    #[command(name = vellum::pdf::worker::WORKER_SUBCOMMAND, hide = true)]
    PdfWorker,
}

#[derive(clap::Args)]
struct RouteArgs {
    /// PDFs or page images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
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
    /// The page image (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// The instruction after the image; RolmOCR's by default.
    #[arg(long, default_value = vellum::ROLMOCR_PROMPT)]
    prompt: String,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// 0 samples greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generate through end tokens until --max-new-tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Size the image as FinePDFs did for RolmOCR: between 56 and 2048 merged visual tokens.
    #[arg(long)]
    finepdfs: bool,
    /// Print one JSON object: prompt_tokens, tokens, logprobs, text, finish_reason.
    #[arg(long)]
    json: bool,
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let device = Device::Cpu;
    let started = Instant::now();
    let files = vellum::hub::resolve(&args.model)?;
    let mut model = Model::load(&files, args.dtype.into(), &device)?;
    if args.finepdfs {
        model.image_processor = model.image_processor.clone().with_finepdfs_bounds();
    }
    let loaded = started.elapsed();
    let image = image::open(&args.image)
        .with_context(|| format!("reading image {}", args.image.display()))?;
    let prompt = model
        .prepare(&image, &args.prompt)
        .with_context(|| format!("preparing {}", args.image.display()))?;
    let params = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
        ignore_eos: args.ignore_eos,
    };
    let out = generate(&model, &prompt, &params)?;
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
    Ok(())
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
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Router::Xgboost(
                XgbModel::from_json(&text)
                    .with_context(|| format!("loading {}", path.display()))?,
            )
        }
        None => Router::Rules,
    };
    let mut worker = worker(args.timeout)?;
    let mut failed = 0;
    for input in &args.inputs {
        let line = match route_document(&mut worker, &router, input, args.password.as_deref()) {
            Ok(route) => {
                let features: serde_json::Map<String, serde_json::Value> = route
                    .features
                    .names
                    .iter()
                    .cloned()
                    .zip(route.features.values.iter().map(|v| serde_json::json!(v)))
                    .collect();
                serde_json::json!({"file": input, "info": route.info, "decision": route.decision, "features": features})
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({"file": input, "error": e, "message": e.to_string()})
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
        "{} page {}: {}×{} ({:?}) → {}",
        args.input.display(),
        args.page,
        image.width(),
        image.height(),
        args.mode,
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => run_generate(args).map(|()| ExitCode::SUCCESS),
        Command::Route(args) => run_route(args),
        Command::Render(args) => run_render(args).map(|()| ExitCode::SUCCESS),
        Command::PdfWorker => vellum::pdf::worker::serve()
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
