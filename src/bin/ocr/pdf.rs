//! `ocr route` and `ocr render`: one pdfium worker, one line (or one PNG) per input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use vellum::pdf::route::{route_document, Router};
use vellum::pdf::worker::{Worker, WorkerCommand};
use vellum::pdf::xgboost::XgbModel;
use vellum::pdf::RenderMode;

use crate::args::with_flags;

#[derive(clap::Args)]
pub struct RouteArgs {
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
pub struct RenderArgs {
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

/// A pdfium worker whose requests may each take `timeout` seconds.
pub fn worker(timeout: f64) -> Result<Worker> {
    let command = WorkerCommand::locate().map_err(anyhow::Error::msg)?;
    let mut worker = Worker::new(command);
    worker.set_timeout(Duration::from_secs_f64(timeout));
    Ok(worker)
}

/// Prints one JSON line per input; a bad input gets an error line and the others go on.
pub fn route(args: RouteArgs) -> Result<ExitCode> {
    let router = match &args.xgboost {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Router::Xgboost(XgbModel::from_json(&text).with_context(|| format!("loading {}", path.display()))?)
        }
        None => Router::Rules,
    };
    let sources = vellum::inputs(&args.inputs).map_err(with_flags)?;
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

pub fn render(args: RenderArgs) -> Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
