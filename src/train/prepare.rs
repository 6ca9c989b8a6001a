//! olmOCR-mix → the fork's sample format. [`Format::Nano`] is what `scripts/prepare_olmocr.py` makes: English pages
//! with a valid rotation and 50 < len(natural_text) < 10,000 characters, the first page rendered
//! at 150 DPI (through vellum's pdf workers, so a PDF that crashes pdfium costs one row) and
//! saved as JPEG quality 90, with the prompt chosen by content type ("OCR this document." /
//! "Convert this table to HTML." / "Describe this diagram."). The first `num_train` kept rows
//! are the train split, the next `num_val` the val split. [`Format::Olmocr`] and
//! [`Format::Rolmocr`] keep the same rows and render and phrase them for a Qwen model.
//!
//! Input, either layout olmOCR-mix comes in:
//! - as the hub has it: `<subset>_train.parquet` (columns id, url, page_number, pdf_relpath,
//!   primary_language, is_rotation_valid, rotation_correction, is_table, is_diagram,
//!   natural_text; others ignored) with `pdf_relpath` = `pdf_tarballs/<chunk>.tar.gz:<member>`;
//!   each tarball is read once, for the members the kept rows need;
//! - unpacked: a `.md` with YAML front matter beside each `.pdf`, searched recursively, in path
//!   order.
//!
//! Rows that cannot be used are skipped and listed, with the reason, in `<out>/report.json`,
//! never a crash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::data::Sample;
use crate::models::deepseek_ocr::{DIAGRAM_INSTRUCTION, DOCUMENT_INSTRUCTION, TABLE_INSTRUCTION};
use crate::pdf::worker::{Worker, WorkerCommand};
use crate::pdf::RenderMode;

/// One page of olmOCR-mix: its front matter and natural text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub id: String,
    pub pdf: PathBuf,
    pub primary_language: Option<String>,
    pub is_rotation_valid: bool,
    pub rotation_correction: i64,
    pub is_table: bool,
    pub is_diagram: bool,
    pub natural_text: String,
}

/// A `.md` of the unpacked layout: `---`, `key: value` lines, `---`, then the text.
pub fn parse_markdown(md: &str) -> Result<(BTreeMap<String, String>, String)> {
    let rest = md
        .strip_prefix("---\n")
        .context("no YAML front matter (the file does not start with ---)")?;
    let end = rest.find("\n---").context("the front matter is not closed by ---")?;
    let fields = rest[..end]
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    let text = rest[end + 4..].strip_prefix('\n').unwrap_or(&rest[end + 4..]);
    Ok((fields, text.to_string()))
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn rows(dir: &Path) -> Result<Vec<Result<Row, (String, String)>>> {
    let mut mds: Vec<PathBuf> = glob::glob(&format!(
        "{}/**/*.md",
        glob::Pattern::escape(&dir.display().to_string())
    ))?
    .filter_map(|p| p.ok())
    .collect();
    mds.sort();
    Ok(mds
        .into_iter()
        .map(|md| {
            let id = md
                .strip_prefix(dir)
                .unwrap_or(&md)
                .with_extension("")
                .display()
                .to_string();
            let pdf = md.with_extension("pdf");
            let text =
                std::fs::read_to_string(&md).map_err(|e| (id.clone(), format!("reading {}: {e}", md.display())))?;
            let (fields, natural_text) =
                parse_markdown(&text).map_err(|e| (id.clone(), format!("{}: {e}", md.display())))?;
            if !pdf.exists() {
                return Err((id, format!("no PDF beside {}", md.display())));
            }
            Ok(Row {
                id,
                pdf,
                primary_language: fields.get("primary_language").cloned(),
                is_rotation_valid: fields
                    .get("is_rotation_valid")
                    .is_none_or(|v| v.eq_ignore_ascii_case("true")),
                rotation_correction: fields
                    .get("rotation_correction")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                is_table: truthy(fields.get("is_table")),
                is_diagram: truthy(fields.get("is_diagram")),
                natural_text,
            })
        })
        .collect())
}

/// What a sample asks and answers, for the model it trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The vision-tokenizer model's (prepare_olmocr.py): 150 DPI, an instruction by content
    /// type, the natural text.
    Nano,
    /// olmOCR's fine-tuning (`NewYamlFinetuningPromptWithNoAnchoring` + `FrontMatterOutputFormat`
    /// in olmocr/train/dataloader.py): the longest side at 1288, the v4 no-anchor prompt, the
    /// answer as YAML front matter then the natural text.
    Olmocr,
    /// RolmOCR's: the longest side at 1288, RolmOCR's prompt, the plain natural text.
    Rolmocr,
}

/// olmOCR's `build_no_anchoring_v4_yaml_prompt()` (olmocr/prompts/prompts.py).
pub const OLMOCR_V4_PROMPT: &str = "Attached is one page of a document that you must process. \
Just return the plain text representation of this document as if you were reading it naturally. \
Convert equations to LateX and tables to HTML.\n\
If there are any figures or charts, label them with the following markdown syntax \
![Alt text describing the contents of the figure](page_startx_starty_width_height.png)\n\
Return your output as markdown, with a front matter section on top specifying values for the \
primary_language, is_rotation_valid, rotation_correction, is_table, and is_diagram parameters.";

/// `FrontMatterOutputFormat`'s answer: Python's spelling of the values, the whole stripped.
pub fn olmocr_answer(row: &Row) -> String {
    let py = |b: bool| if b { "True" } else { "False" };
    format!(
        "---\nprimary_language: {}\nis_rotation_valid: {}\nrotation_correction: {}\nis_table: {}\nis_diagram: {}\n---\n{}",
        row.primary_language.as_deref().unwrap_or("None"),
        py(row.is_rotation_valid),
        row.rotation_correction,
        py(row.is_table),
        py(row.is_diagram),
        if row.natural_text.trim().is_empty() { "" } else { &row.natural_text }
    )
    .trim()
    .to_string()
}

/// Why a row is left out, or None when prepare_olmocr.py's filters keep it.
pub fn filter(row: &Row) -> Option<String> {
    let len = row.natural_text.chars().count();
    if row.primary_language.as_deref() != Some("en") {
        Some(format!("primary_language is {:?}, not en", row.primary_language))
    } else if !row.is_rotation_valid {
        Some("is_rotation_valid is false".into())
    } else if len <= 50 || len >= 10_000 {
        Some(format!("natural_text has {len} characters (kept: 51..9,999)"))
    } else {
        None
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub kept: usize,
    pub train: usize,
    pub val: usize,
    /// Kept samples by type (document / table / diagram).
    pub types: BTreeMap<String, usize>,
    /// (row id, reason) for every row left out.
    pub skipped: Vec<(String, String)>,
}

/// The rows of `<dir>/<subset>_train.parquet`, their PDFs taken out of the tarballs into
/// `scratch`; reading stops once `wanted` rows pass the filters.
fn hub_rows(dir: &Path, subset: &str, scratch: &Path, wanted: usize) -> Result<Vec<Result<Row, (String, String)>>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let path = dir.join(format!("{subset}_train.parquet"));
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let reader =
        SerializedFileReader::new(file).with_context(|| format!("{} is not a parquet file", path.display()))?;
    let mut rows = Vec::new();
    let mut kept = 0;
    // (tarball, member) of each row that needs its PDF.
    let mut members: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (i, record) in reader.get_row_iter(None)?.enumerate() {
        if kept >= wanted {
            break;
        }
        let record = record.with_context(|| format!("{}: row {i}", path.display()))?;
        let mut row = Row {
            is_rotation_valid: true,
            ..Default::default()
        };
        let mut relpath = String::new();
        for (name, field) in record.get_column_iter() {
            match (name.as_str(), field) {
                ("id", Field::Str(v)) => row.id = v.clone(),
                ("pdf_relpath", Field::Str(v)) => relpath = v.clone(),
                ("primary_language", Field::Str(v)) => row.primary_language = Some(v.clone()),
                ("is_rotation_valid", Field::Bool(v)) => row.is_rotation_valid = *v,
                ("rotation_correction", Field::Int(v)) => row.rotation_correction = *v as i64,
                ("rotation_correction", Field::Long(v)) => row.rotation_correction = *v,
                ("is_table", Field::Bool(v)) => row.is_table = *v,
                ("is_diagram", Field::Bool(v)) => row.is_diagram = *v,
                ("natural_text", Field::Str(v)) => row.natural_text = v.clone(),
                _ => {}
            }
        }
        if row.id.is_empty() {
            row.id = format!("row {i}");
        }
        let Some((tarball, member)) = relpath.split_once(".tar.gz:") else {
            rows.push(Err((
                row.id,
                format!("pdf_relpath {relpath:?} does not name a tarball member"),
            )));
            continue;
        };
        if filter(&row).is_none() {
            kept += 1;
            members
                .entry(format!("{tarball}.tar.gz"))
                .or_default()
                .push((rows.len(), member.to_string()));
        }
        row.pdf = scratch.join(format!("{}.pdf", rows.len()));
        rows.push(Ok(row));
    }
    for (tarball, wanted) in members {
        let path = dir.join(&tarball);
        let mut found = vec![false; wanted.len()];
        let opened = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()));
        if let Ok(file) = opened {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
            for entry in archive
                .entries()
                .with_context(|| format!("reading {}", path.display()))?
            {
                let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
                let name = entry.path()?.to_string_lossy().into_owned();
                for (k, (row, member)) in wanted.iter().enumerate() {
                    if *member == name {
                        let target = scratch.join(format!("{row}.pdf"));
                        let mut out = std::fs::File::create(&target)?;
                        std::io::copy(&mut entry, &mut out)?;
                        found[k] = true;
                        break;
                    }
                }
            }
        }
        for ((row, member), found) in wanted.iter().zip(found) {
            if !found {
                let id = rows[*row].as_ref().map(|r| r.id.clone()).unwrap_or_default();
                rows[*row] = Err((id, format!("{member} is not in {}", path.display())));
            }
        }
    }
    Ok(rows)
}

/// Writes `<out>/train.json`, `<out>/val.json`, `<out>/images/*.jpg` and `<out>/report.json`
/// from `subset` (hub layout; the unpacked layout has no subsets).
pub fn prepare(
    input: &Path,
    out: &Path,
    subset: &str,
    num_train: usize,
    num_val: usize,
    format: Format,
) -> Result<Report> {
    let images = out.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let mut worker = Worker::new(WorkerCommand::locate().map_err(anyhow::Error::msg)?);
    let mut report = Report::default();
    let mut samples = Vec::new();
    let scratch = tempfile::tempdir_in(out)?;
    let wanted = num_train + num_val;
    let rows = if input.join(format!("{subset}_train.parquet")).exists() {
        // As prepare_olmocr.py: half as many rows again as wanted, for rows that fail later.
        hub_rows(input, subset, scratch.path(), wanted + wanted / 2 + 1)?
    } else {
        rows(input)?
    };
    for row in rows {
        if samples.len() >= num_train + num_val {
            break;
        }
        let row = match row {
            Ok(row) => row,
            Err(skip) => {
                report.skipped.push(skip);
                continue;
            }
        };
        if let Some(reason) = filter(&row) {
            report.skipped.push((row.id, reason));
            continue;
        }
        let mode = match format {
            Format::Nano => RenderMode::Dpi { dpi: 150.0 },
            Format::Olmocr | Format::Rolmocr => RenderMode::Olmocr { longest: 1288 },
        };
        let image = match worker.render(&row.pdf, None, 1, mode) {
            Ok(image) => image,
            Err(e) => {
                report.skipped.push((row.id, e.to_string()));
                continue;
            }
        };
        let id = format!("olm_{:05}", samples.len());
        let name = format!("images/{id}.jpg");
        let mut file = std::io::BufWriter::new(std::fs::File::create(out.join(&name))?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 90)
            .encode_image(&image)
            .with_context(|| format!("writing {name}"))?;
        let (kind, instruction) = if row.is_table {
            ("table", TABLE_INSTRUCTION)
        } else if row.is_diagram {
            ("diagram", DIAGRAM_INSTRUCTION)
        } else {
            ("document", DOCUMENT_INSTRUCTION)
        };
        *report.types.entry(kind.into()).or_default() += 1;
        let (prompt, answer) = match format {
            Format::Nano => (instruction, row.natural_text.trim().to_string()),
            Format::Olmocr => (OLMOCR_V4_PROMPT, olmocr_answer(&row)),
            Format::Rolmocr => (crate::ROLMOCR_PROMPT, row.natural_text.trim().to_string()),
        };
        samples.push(Sample {
            id,
            kind: kind.into(),
            prompt: format!("<image>\n{prompt}"),
            answer,
            image: name,
        });
    }
    report.kept = samples.len();
    let val = samples.split_off(num_train.min(samples.len()));
    report.train = samples.len();
    report.val = val.len();
    std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&samples)?)?;
    std::fs::write(out.join("val.json"), serde_json::to_string_pretty(&val)?)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}
