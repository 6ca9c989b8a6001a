//! `ocr generate`: one image (or a file of requests) through the model, raw: the prompt and
//! sampling as the flags give them, no card.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use vellum::engine::sampler::SamplingParams;
use vellum::pdf::RenderMode;

use crate::args::{positive, temperature, warning_flags, with_flags, DeviceArgs, EngineArgs};

#[derive(clap::Args)]
pub struct GenerateArgs {
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

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut pages = crate::pdf::worker(60.0)?;
    let mut load = |path: &std::path::Path, page: usize| -> Result<vellum::DynamicImage> {
        Ok(vellum::DynamicImage::ImageRgb8(
            pages.render(path, None, page, args.mode)?,
        ))
    };
    // A bad input is found before the model loads (seconds to minutes).
    let image = args.image.as_ref().map(|p| load(p, args.page)).transpose()?;
    let ocr = args
        .engine
        .apply(args.place.builder(&args.model)?)
        .finepdfs_bounds(args.finepdfs)
        .open()
        .map_err(with_flags)?;
    // Raw generation applies no card, so a guessed card is nothing to warn about here.
    for w in ocr.warnings().iter().filter(|w| !w.contains("model card")) {
        eprintln!("warning: {w}{}", warning_flags(w));
    }
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
        let out = ocr
            .generate(&image, args.prompt.as_deref(), params)
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
    let engine = ocr.engine().expect("opened without allow_missing_model");
    let failed = vellum::pipeline::requests::run(engine, requests, &params, args.prompt.as_deref(), load, |line| {
        println!("{line}")
    })?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
