//! `ocr`: the command-line face of vellum. Each subcommand's file maps its flags onto library
//! calls ([`vellum::Ocr`] for OCR) and prints; the work is the library's.

mod args;
mod bench;
mod eval;
mod generate;
mod init;
mod pdf;
mod progress;
mod run;
mod score;
mod synth;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

fn exit_code(outcome: vellum::pipeline::run::Outcome) -> ExitCode {
    use vellum::pipeline::run::Outcome;
    match outcome {
        Outcome::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
        Outcome::Failed => ExitCode::FAILURE,
        Outcome::Pending => ExitCode::from(EXIT_PENDING),
        Outcome::Done => ExitCode::SUCCESS,
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the model on one image and print what it generates.
    Generate(generate::GenerateArgs),
    /// OCR documents: text layers where they are good, the model where they are not.
    Run(run::RunArgs),
    /// Decide, per document, whether it needs OCR; prints one JSON line per input.
    Route(pdf::RouteArgs),
    /// Render one page to a PNG, for inspection.
    Render(pdf::RenderArgs),
    /// Measure decode and OCR throughput on a model (prints JSON).
    Bench(bench::BenchArgs),
    /// Score OCR outputs on olmOCR-Bench: a table per candidate folder, optionally JSON.
    Score(score::ScoreArgs),
    /// The nano DeepSeek-OCR model's pretrained start as the fork makes it (SAM, CLIP, nanochat's
    /// GPT; fresh parts with the fork's init) → a model directory.
    Init(init::InitArgs),
    /// Turn a nano DeepSeek-OCR trainer checkpoint (step_N.pt) into a model directory.
    Convert(train::ConvertArgs),
    /// Train a model on the fork's sample format: the nano DeepSeek-OCR model (Stage 1 or 2),
    /// or fine-tune Qwen2.5-VL / Qwen2-VL (RolmOCR, olmOCR) the olmOCR way.
    Train(train::TrainArgs),
    /// Write synthetic printed pages (words in the standard PDF fonts) as a training set.
    Synth(synth::SynthArgs),
    /// Score a model's greedy answers on a dataset split (CER, WER), optionally with blank images.
    Eval(eval::EvalArgs),
    /// olmOCR-mix pages (the hub's parquet + tarballs, or unpacked) → a training set.
    Prepare(train::PrepareArgs),
    /// The GPU machine's checks, from this binary alone: kernels against their CPU twins and the
    /// tiny models against transformers (prints one JSON line per check).
    #[command(name = "__selftest", hide = true)]
    Selftest(bench::SelftestArgs),
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

fn main() -> ExitCode {
    vellum::init();
    vellum::tune_allocator();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Run(args) => run::run(args, cli.quiet),
        Command::Route(args) => pdf::route(args),
        Command::Render(args) => pdf::render(args),
        Command::Bench(args) => bench::run(args),
        Command::Score(args) => score::score(args),
        Command::Selftest(args) => bench::selftest(args),
        Command::Train(args) => train::train(args),
        Command::Prepare(args) => train::prepare(args),
        Command::Synth(args) => synth::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Convert(args) => train::convert(args),
        Command::Init(args) => init::init(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let setup = e.downcast_ref::<SetupError>().is_some()
                || e.downcast_ref::<vellum::Error>().is_some_and(vellum::Error::is_setup);
            if setup {
                ExitCode::from(EXIT_SETUP)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
