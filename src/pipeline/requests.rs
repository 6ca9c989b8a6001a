//! A JSONL file of generation requests (`{"id", "image", "page"?, "prompt"?, "max_new_tokens"?,
//! "temperature"?}` per line; `image` is a page image or a PDF, `page` 1-based) through one engine: everything is submitted first so the engine
//! batches it, then the results come back in input order, one JSON object each — the generation
//! with its id, or the id and why that request failed (the others go on).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::DynamicImage;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, RequestHandle};

#[derive(Deserialize)]
struct RequestLine {
    id: Value,
    image: PathBuf,
    page: Option<usize>,
    prompt: Option<String>,
    max_new_tokens: Option<usize>,
    temperature: Option<f64>,
}

/// Runs the requests of `path` with `defaults` where a line says nothing (its prompt: `prompt`,
/// else the model's default instruction), calling `emit` with each result in input order.
/// Returns how many failed. Image paths are taken as given, else relative to the file; `load`
/// reads page `page` of one (as every command reads its inputs).
pub fn run(
    engine: &Engine,
    path: &Path,
    defaults: &SamplingParams,
    prompt: Option<&str>,
    mut load: impl FnMut(&Path, usize) -> Result<DynamicImage>,
    mut emit: impl FnMut(Value),
) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let default_prompt = prompt.unwrap_or(engine.model().info().default_instruction);
    let submitted: Vec<(Value, Result<RequestHandle>)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let req: RequestLine = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        serde_json::json!(n + 1),
                        Err(anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1)),
                    )
                }
            };
            let image_path = if req.image.is_relative() && !req.image.exists() {
                base.join(&req.image)
            } else {
                req.image.clone()
            };
            let params = SamplingParams {
                max_new_tokens: req.max_new_tokens.or(defaults.max_new_tokens),
                temperature: req.temperature.unwrap_or(defaults.temperature),
                ..defaults.clone()
            };
            let handle = load(&image_path, req.page.unwrap_or(1))
                .and_then(|img| engine.submit(&img, req.prompt.as_deref().unwrap_or(default_prompt), params));
            (req.id, handle)
        })
        .collect();
    let mut failed = 0;
    for (id, handle) in submitted {
        emit(match handle.and_then(|h| Ok(h.wait()?)) {
            Ok(out) => {
                let mut v = serde_json::to_value(&out)?;
                v["id"] = id;
                v
            }
            Err(e) => {
                failed += 1;
                serde_json::json!({"id": id, "error": format!("{e:#}")})
            }
        });
    }
    Ok(failed)
}
