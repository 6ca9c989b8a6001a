//! Synthetic OCR pages that vellum renders itself: a few lines of words set in PDF's standard
//! fonts at a few sizes, written as a one-page PDF, rendered through vellum's pdf module and
//! saved as a PNG beside the sample list (the fork's format, so `ocr train` reads it as is).
//! Deterministic in the seed; train and val draw different pages.

use std::path::Path;

use anyhow::{Context, Result};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::data::Sample;
use crate::models::deepseek_ocr::DOCUMENT_INSTRUCTION;
use crate::pdf::document::Input;
use crate::pdf::RenderMode;

const FONTS: [&str; 6] = [
    "Helvetica",
    "Helvetica-Bold",
    "Times-Roman",
    "Times-Bold",
    "Courier",
    "Courier-Bold",
];

/// Common English words (lowercase letters only, so every standard font draws them alike).
const WORDS: &str = "the of and to in is you that it he was for on are as with his they at be this have from \
or one had by word but not what all were we when your can said there use an each which she do how their if \
will up other about out many then them these so some her would make like him into time has look two more \
write go see number no way could people my than first water been call who oil its now find long down day did \
get come made may part over new sound take only little work know place year live me back give most very after \
thing our just name good sentence man think say great where help through much before line right too mean old \
any same tell boy follow came want show also around form three small set put end does another well large must \
big even such because turn here why ask went men read need land different home us move try kind hand picture \
again change off play spell air away animal house point page letter mother answer found study still learn \
should world high every near add food between own below country plant last school father keep tree never start \
city earth eye light thought head under story saw left few while along might close something seem next hard open \
example begin life always those both paper together got group often run important until children side feet car \
mile night walk white sea began grow took river four carry state once book hear stop without second later miss";

/// Page geometry and text amount.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub lines: std::ops::RangeInclusive<usize>,
    pub words_per_line: std::ops::RangeInclusive<usize>,
    /// Font sizes in points, picked per page.
    pub font_sizes: Vec<f32>,
    /// Page size in points.
    pub page: (f32, f32),
    pub dpi: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            lines: 2..=3,
            words_per_line: 2..=3,
            font_sizes: vec![20.0, 24.0, 28.0],
            page: (360.0, 240.0),
            dpi: 96.0,
        }
    }
}

/// A one-page PDF with `lines` in the standard font `font` at `size` points, left-aligned.
fn page_pdf(lines: &[String], font: &str, size: f32, (w, h): (f32, f32)) -> Vec<u8> {
    let leading = size * 1.3;
    let mut content = format!("BT /F1 {size} Tf {leading} TL 24 {} Td\n", h - 24.0 - size);
    for line in lines {
        content.push_str(&format!("({line}) Tj T*\n"));
    }
    content.push_str("ET");
    crate::pdf::write::assemble(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>")
            .into_bytes(),
        format!("<< /Type /Font /Subtype /Type1 /BaseFont /{font} >>").into_bytes(),
        crate::pdf::write::stream("", content.as_bytes()),
    ])
}

/// Writes `<out>/train.json`, `<out>/val.json` and `<out>/images/*.png`.
pub fn generate(out: &Path, num_train: usize, num_val: usize, seed: u64, config: &SynthConfig) -> Result<()> {
    let pdfium = crate::pdf::library::bind().map_err(anyhow::Error::msg)?;
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let images = out.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let scratch = tempfile_path(out);
    for (split, count, salt) in [("train", num_train, 0u64), ("val", num_val, 1)] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(2).wrapping_add(salt));
        let mut samples = Vec::with_capacity(count);
        for i in 0..count {
            let lines: Vec<String> = (0..rng.random_range(config.lines.clone()))
                .map(|_| {
                    let n = rng.random_range(config.words_per_line.clone());
                    (0..n)
                        .map(|_| *words.choose(&mut rng).expect("words"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let font = FONTS.choose(&mut rng).expect("fonts");
            let size = *config.font_sizes.choose(&mut rng).expect("at least one font size");
            std::fs::write(&scratch, page_pdf(&lines, font, size, config.page))?;
            let doc = Input::open(&pdfium, &scratch, None)?;
            let image = doc.render("synthetic page", 1, RenderMode::Dpi { dpi: config.dpi })?;
            let id = format!("{split}_{i:05}");
            let name = format!("images/{id}.png");
            image.save(out.join(&name)).with_context(|| format!("writing {name}"))?;
            samples.push(Sample {
                id,
                kind: "document".into(),
                prompt: format!("<image>\n{DOCUMENT_INSTRUCTION}"),
                answer: lines.join("\n"),
                image: name,
            });
        }
        std::fs::write(
            out.join(format!("{split}.json")),
            serde_json::to_string_pretty(&samples)?,
        )?;
    }
    let _ = std::fs::remove_file(&scratch);
    Ok(())
}

fn tempfile_path(out: &Path) -> std::path::PathBuf {
    out.join(format!(".synth-{}.pdf", std::process::id()))
}
