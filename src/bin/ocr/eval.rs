//! `ocr eval`: a model's greedy answers on a dataset split, scored by CER and WER; `--blank`
//! shows every page as a white image, to measure how much of the score the image earns.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use vellum::train::data::Dataset;
use vellum::train::eval::{self, Images};

use crate::args::DeviceArgs;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A model directory (or hub id).
    #[arg(long)]
    model: String,
    /// A directory with <split>.json in the fork's sample format.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "val")]
    split: String,
    /// At most this many samples, from the start of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Show a white image of each page's size instead of the page.
    #[arg(long)]
    blank: bool,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Also write every sample (reference, output, CER, WER) and the means as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let data = Dataset::open(&args.data, &args.split)?;
    let model = args.device.open_model(&args.model).map_err(crate::setup)?;
    let images = if args.blank { Images::Blank } else { Images::Real };
    let k = args.limit.unwrap_or(data.len());
    let prompts = eval::prompts(model.as_ref(), &data, k, images)?;
    let engine = eval::engine_for(model, &prompts, args.max_new_tokens)?;
    let samples = eval::generate(&engine, &data, prompts, args.max_new_tokens)?;
    let (cer, wer) = eval::means(&samples);
    let (cer, wer) = (cer.unwrap_or(f64::NAN), wer.unwrap_or(f64::NAN));
    println!(
        "{} {} pages{}: CER {cer:.4}, WER {wer:.4}",
        args.data.display(),
        samples.len(),
        if args.blank { " (blank images)" } else { "" }
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": args.model,
            "data": args.data,
            "split": args.split,
            "blank": args.blank,
            "pages": samples.len(),
            "cer": cer,
            "wer": wer,
            "samples": samples,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
