//! `ocr`: the command-line face of vellum.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};

use vellum::generation::{generate, SamplingParams};
use vellum::models::qwen2_5_vl::Model;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
