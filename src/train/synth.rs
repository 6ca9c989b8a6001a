//! Synthetic OCR pages that vellum renders itself: a few lines of words set in PDF's standard
//! fonts at a few sizes, written as a one-page PDF, rendered through vellum's pdf module and
//! saved as a PNG beside the sample list (the fork's format, so `ocr train` reads it as is).
//! Deterministic in the seed; train and val draw different pages. Words come from a built-in
//! list of common English words, or from any list (`--words`): pages of words a model never saw,
//! in the same fonts, sizes and layout, test whether it reads or recites.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::data::Sample;
use crate::models::deepseek_ocr::DOCUMENT_INSTRUCTION;
use crate::pdf::document::Input;
use crate::pdf::RenderMode;

/// The standard fonts pages are set in by default.
pub const FONTS: [&str; 6] = [
    "Helvetica",
    "Helvetica-Bold",
    "Times-Roman",
    "Times-Bold",
    "Courier",
    "Courier-Bold",
];

/// Common English words (lowercase letters only, so every standard font draws them alike): the
/// training vocabulary unless a list is given.
pub const WORDS: &str = "the of and to in is you that it he was for on are as with his they at be this have from \
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

/// Page geometry, text amount and vocabulary.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// The words pages are drawn from.
    pub words: Vec<String>,
    /// The words validation pages are drawn from, when not `words`: a model is then scored on
    /// words it never trained on.
    pub val_words: Option<Vec<String>>,
    pub lines: std::ops::RangeInclusive<usize>,
    pub words_per_line: std::ops::RangeInclusive<usize>,
    /// Font sizes in points, picked per page.
    pub font_sizes: Vec<f32>,
    /// Standard fonts, picked per page (a subset of [`FONTS`]).
    pub fonts: Vec<String>,
    /// The text block's left and top margin in points (default: 24 pt on a 240 pt tall page,
    /// in proportion on others).
    pub margin: Option<f32>,
    /// The text block moves by up to this many points each way, right/left and up/down, per
    /// page (0: every page starts at the margin).
    pub jitter: f32,
    /// Page size in points.
    pub page: (f32, f32),
    pub dpi: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            words: WORDS.split_whitespace().map(String::from).collect(),
            val_words: None,
            lines: 2..=3,
            words_per_line: 2..=3,
            font_sizes: vec![20.0, 24.0, 28.0],
            fonts: FONTS.iter().map(|f| f.to_string()).collect(),
            margin: None,
            jitter: 0.0,
            page: (360.0, 240.0),
            dpi: 96.0,
        }
    }
}

/// A word list, one word per line (blank lines skipped). Words are set as PDF literal strings in
/// the standard fonts, so each must be printable ASCII without spaces, parentheses or backslashes.
pub fn read_words(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the word list {}", path.display()))?;
    let mut words = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let word = line.trim();
        if word.is_empty() {
            continue;
        }
        if let Some(c) = word
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '(' | ')' | '\\'))
        {
            bail!(
                "{}:{}: {word:?} has {c:?}; words must be printable ASCII without parentheses or backslashes",
                path.display(),
                n + 1
            );
        }
        words.push(word.to_string());
    }
    if words.is_empty() {
        bail!("{} has no words", path.display());
    }
    Ok(words)
}

/// A one-page PDF with `lines` in the standard font `font` at `size` points, left-aligned at
/// `margin`, the block moved by `(dx, dy)` points.
fn page_pdf(lines: &[String], font: &str, size: f32, (w, h): (f32, f32), margin: f32, (dx, dy): (f32, f32)) -> Vec<u8> {
    let leading = size * 1.3;
    let mut content = format!(
        "BT /F1 {size} Tf {leading} TL {} {} Td\n",
        margin + dx,
        h - margin - size + dy
    );
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
    let val_words = config.val_words.as_ref().unwrap_or(&config.words);
    if config.words.is_empty() || val_words.is_empty() {
        bail!("no words to draw pages from");
    }
    if config.fonts.is_empty() {
        bail!("no fonts to set pages in");
    }
    if let Some(font) = config.fonts.iter().find(|f| !FONTS.contains(&f.as_str())) {
        bail!("{font:?} is not one of the standard fonts {FONTS:?}");
    }
    if config.font_sizes.is_empty() || config.font_sizes.iter().any(|&s| s.is_nan() || s <= 0.0) {
        bail!("font sizes must be positive points");
    }
    if !(config.jitter >= 0.0 && config.jitter.is_finite()) {
        bail!("the jitter must be a finite number of points, at least 0");
    }
    if config.margin.is_some_and(|m| !(m >= 0.0 && m.is_finite())) {
        bail!("the margin must be a finite number of points, at least 0");
    }
    let pdfium = crate::pdf::library::bind().map_err(anyhow::Error::msg)?;
    let images = out.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let scratch = tempfile_path(out);
    for (split, count, salt, words) in [
        ("train", num_train, 0u64, &config.words),
        ("val", num_val, 1, val_words),
    ] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(2).wrapping_add(salt));
        let mut samples = Vec::with_capacity(count);
        for i in 0..count {
            let lines: Vec<String> = (0..rng.random_range(config.lines.clone()))
                .map(|_| {
                    let n = rng.random_range(config.words_per_line.clone());
                    (0..n)
                        .map(|_| words.choose(&mut rng).expect("words").as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let font = config.fonts.choose(&mut rng).expect("at least one font");
            let size = *config.font_sizes.choose(&mut rng).expect("at least one font size");
            let shift = match config.jitter > 0.0 {
                true => (
                    rng.random_range(-config.jitter..=config.jitter),
                    rng.random_range(-config.jitter..=config.jitter),
                ),
                false => (0.0, 0.0),
            };
            let margin = config.margin.unwrap_or(24.0 * config.page.1 / 240.0);
            std::fs::write(&scratch, page_pdf(&lines, font, size, config.page, margin, shift))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_lists_name_the_file_and_line_of_a_bad_word() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words.txt");
        std::fs::write(&path, "alpha\n\n  beta \n").unwrap();
        assert_eq!(read_words(&path).unwrap(), ["alpha", "beta"]);
        std::fs::write(&path, "alpha\nf(x)\n").unwrap();
        let e = read_words(&path).unwrap_err().to_string();
        assert!(e.contains("words.txt:2:") && e.contains("f(x)"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_words(&path).unwrap_err().to_string().contains("has no words"));
    }

    /// scripts/learn's lists: training = the built-in words + letter strings, held-out apart.
    #[test]
    fn learn_word_lists_are_disjoint() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/nano-deepseek-ocr/learn");
        let train = read_words(&dir.join("words-train.txt")).unwrap();
        let held = read_words(&dir.join("words-heldout.txt")).unwrap();
        let builtin: Vec<&str> = WORDS.split_whitespace().collect();
        assert_eq!(&train[..builtin.len()], &builtin[..]);
        let train: std::collections::HashSet<&String> = train.iter().collect();
        assert_eq!(train.len(), builtin.len() + 3000, "no repeats");
        assert!(held.len() >= 200);
        assert!(held.iter().all(|w| !train.contains(w)));
    }

    /// Validation pages draw only from their own list: the model is scored on unseen words.
    #[test]
    fn validation_pages_draw_from_the_held_out_words() {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            words: vec!["alpha".into(), "beta".into()],
            val_words: Some(vec!["gamma".into()]),
            ..Default::default()
        };
        generate(dir.path(), 3, 2, 7, &config).unwrap();
        for (split, allowed) in [("train", &["alpha", "beta"][..]), ("val", &["gamma"][..])] {
            let samples: Vec<Sample> =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join(format!("{split}.json"))).unwrap())
                    .unwrap();
            assert!(!samples.is_empty());
            for s in &samples {
                assert!(
                    s.answer.split_whitespace().all(|w| allowed.contains(&w)),
                    "{split}: {}",
                    s.answer
                );
                assert!(dir.path().join(&s.image).is_file());
            }
        }
    }

    /// One font and no jitter: every page of the same word is the same image; with jitter the
    /// ink moves. A font outside the standard set is refused by name.
    #[test]
    fn fonts_and_jitter_shape_the_layout() {
        let pages = |jitter: f32| {
            let dir = tempfile::tempdir().unwrap();
            let config = SynthConfig {
                words: vec!["ao".into()],
                lines: 1..=1,
                words_per_line: 1..=1,
                font_sizes: vec![40.0],
                fonts: vec!["Times-Roman".into()],
                jitter,
                ..Default::default()
            };
            generate(dir.path(), 4, 1, 3, &config).unwrap();
            (0..4)
                .map(|i| {
                    image::open(dir.path().join(format!("images/train_{i:05}.png")))
                        .unwrap()
                        .to_luma8()
                })
                .collect::<Vec<_>>()
        };
        let fixed = pages(0.0);
        assert!(fixed.iter().all(|p| p == &fixed[0]));
        let moved = pages(20.0);
        assert!(moved.iter().skip(1).any(|p| p != &moved[0]));
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            fonts: vec!["Comic-Sans".into()],
            ..Default::default()
        };
        let e = generate(dir.path(), 1, 1, 0, &config).unwrap_err().to_string();
        assert!(e.contains("Comic-Sans") && e.contains("standard fonts"), "{e}");
        let config = SynthConfig {
            font_sizes: vec![],
            ..Default::default()
        };
        let e = generate(dir.path(), 1, 1, 0, &config).unwrap_err().to_string();
        assert!(e.contains("font sizes"), "{e}");
    }
}
