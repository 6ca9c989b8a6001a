//! `ocr synth`: synthetic printed pages as a training set, its flags onto
//! [`vellum::train::synth`].

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use vellum::train::synth::SynthConfig;

#[derive(clap::Args)]
pub struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    num_train: usize,
    #[arg(long, default_value_t = 100)]
    num_val: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw words from this list (one word per line) instead of the built-in training words.
    #[arg(long, value_name = "FILE")]
    words: Option<PathBuf>,
    /// Draw the validation pages' words from this list (held-out words: does the model read
    /// or recite?); by default the same words as training.
    #[arg(long, value_name = "FILE")]
    val_words: Option<PathBuf>,
    /// Lines per page, as MIN-MAX.
    #[arg(long, default_value = "2-3", value_parser = range)]
    lines: RangeInclusive<usize>,
    /// Words per line, as MIN-MAX.
    #[arg(long, default_value = "2-3", value_parser = range)]
    words_per_line: RangeInclusive<usize>,
    /// Page size in points, as WxH (margins scale with the height: 24 pt at 240).
    #[arg(long, default_value = "360x240", value_parser = page)]
    page: (f32, f32),
    /// Font sizes in points, one picked per page.
    #[arg(long, default_value = "20,24,28", value_delimiter = ',')]
    font_sizes: Vec<f32>,
    /// Standard fonts, one picked per page (default: Helvetica, Times and Courier, plain and
    /// bold).
    #[arg(long, value_delimiter = ',')]
    fonts: Option<Vec<String>>,
    /// The text's left and top margin in points [default: 24 pt on a 240 pt tall page, in
    /// proportion on others].
    #[arg(long)]
    margin: Option<f32>,
    /// Move each page's text by up to this many points each way, right/left and up/down.
    #[arg(long, default_value_t = 0.0)]
    jitter: f32,
}

fn page(text: &str) -> Result<(f32, f32), String> {
    let size = text
        .split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse::<f32>().ok()?, h.trim().parse::<f32>().ok()?)));
    match size {
        Some((w, h)) if w > 0.0 && h > 0.0 => Ok((w, h)),
        _ => Err(format!("{text:?}: want WxH in points, e.g. 360x240")),
    }
}

fn range(text: &str) -> Result<RangeInclusive<usize>, String> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let parse = |s: &str| s.trim().parse::<usize>().map_err(|e| format!("{text:?}: {e}"));
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo == 0 || lo > hi {
        return Err(format!("{text:?}: want MIN-MAX with 1 <= MIN <= MAX"));
    }
    Ok(lo..=hi)
}

pub fn run(args: SynthArgs) -> Result<ExitCode> {
    let mut config = SynthConfig {
        lines: args.lines,
        words_per_line: args.words_per_line,
        font_sizes: args.font_sizes,
        page: args.page,
        jitter: args.jitter,
        margin: args.margin,
        ..Default::default()
    };
    if let Some(fonts) = args.fonts {
        config.fonts = fonts;
    }
    if let Some(path) = &args.words {
        config.words = vellum::train::synth::read_words(path)?;
    }
    if let Some(path) = &args.val_words {
        config.val_words = Some(vellum::train::synth::read_words(path)?);
    }
    vellum::train::synth::generate(&args.out, args.num_train, args.num_val, args.seed, &config)?;
    eprintln!(
        "{} train and {} val pages in {}",
        args.num_train,
        args.num_val,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
