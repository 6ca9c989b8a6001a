//! The text layer of a page and the signals routing needs: characters (visible, invisible,
//! garbled), fonts, text boxes and their area, images and how much of the page they cover,
//! vector paths.

use std::collections::BTreeSet;

use pdfium_render::prelude::*;
use serde::{Deserialize, Serialize};

use super::language::WordCounts;

/// One page's text (in pdfium's reading order) and its routing signals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageText {
    pub text: String,
    pub features: PageFeatures,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageFeatures {
    /// Displayed size in points (/Rotate applied).
    pub width_pt: f32,
    pub height_pt: f32,
    /// Characters of the text layer, and among them: U+FFFD (unmappable glyphs), alphanumeric.
    pub chars: u32,
    pub garbled_chars: u32,
    pub alnum_chars: u32,
    /// Characters drawn in text render mode 3 (invisible): typically an OCR layer over a scan.
    pub invisible_chars: u32,
    pub text_objects: u32,
    pub fonts: u32,
    /// Area of text object boxes over the page area (overlaps counted twice; capped at 1).
    pub text_area_ratio: f32,
    pub image_objects: u32,
    /// Area of image boxes clipped to the page, over the page area (capped at 1).
    pub image_area_ratio: f32,
    /// The largest single image's share of the page.
    pub max_image_area_ratio: f32,
    pub path_objects: u32,
    pub annotations: u32,
    /// Latin-script words, and among them function words and words with a vowel (see
    /// `super::language`).
    #[serde(default)]
    pub words: u32,
    #[serde(default)]
    pub function_words: u32,
    #[serde(default)]
    pub vowel_words: u32,
}

impl PageFeatures {
    pub fn word_counts(&self) -> WordCounts {
        WordCounts {
            words: self.words,
            function_words: self.function_words,
            with_vowel: self.vowel_words,
        }
    }
}

fn clipped_area(rect: &PdfRect, page_w: f32, page_h: f32) -> f32 {
    let (l, r) = (rect.left().value.max(0.0), rect.right().value.min(page_w));
    let (b, t) = (rect.bottom().value.max(0.0), rect.top().value.min(page_h));
    ((r - l).max(0.0)) * ((t - b).max(0.0))
}

struct Tally<'a> {
    f: &'a mut PageFeatures,
    fonts: BTreeSet<String>,
    text_area: f32,
    image_area: f32,
}

impl Tally<'_> {
    /// Counts one object, descending into form XObjects (scans often wrap their image in one).
    fn add(&mut self, object: &PdfPageObject, depth: usize) {
        let area = object
            .bounds()
            .map(|q| clipped_area(&q.to_rect(), self.f.width_pt, self.f.height_pt))
            .unwrap_or(0.0);
        match object {
            PdfPageObject::Text(text) => {
                self.f.text_objects += 1;
                self.text_area += area;
                self.fonts.insert(text.font().name());
                if text.render_mode() == PdfPageTextRenderMode::Invisible {
                    self.f.invisible_chars += text.text().chars().filter(|c| !c.is_whitespace()).count() as u32;
                }
            }
            PdfPageObject::Image(_) => {
                self.f.image_objects += 1;
                self.image_area += area;
                let page_area = self.f.width_pt * self.f.height_pt;
                if page_area > 0.0 {
                    self.f.max_image_area_ratio = self.f.max_image_area_ratio.max((area / page_area).min(1.0));
                }
            }
            PdfPageObject::Path(_) => self.f.path_objects += 1,
            PdfPageObject::XObjectForm(form) if depth < 8 => {
                for inner in form.iter() {
                    self.add(&inner, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Extracts the text layer and the routing features of one page.
pub fn page_text(page: &PdfPage) -> Result<PageText, String> {
    let mut f = PageFeatures {
        width_pt: page.width().value,
        height_pt: page.height().value,
        annotations: page.annotations().len() as u32,
        ..Default::default()
    };
    // pdfium ends lines with \r\n (and sometimes a bare \r): one line ending, \n, downstream.
    let text = page
        .text()
        .map_err(|e| format!("pdfium could not read the text layer: {}", super::library::describe(&e)))?
        .all()
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        f.chars += 1;
        if c == '\u{FFFD}' {
            f.garbled_chars += 1;
        } else if c.is_alphanumeric() {
            f.alnum_chars += 1;
        }
    }
    let words = WordCounts::of(&text);
    (f.words, f.function_words, f.vowel_words) = (words.words, words.function_words, words.with_vowel);
    let mut tally = Tally {
        f: &mut f,
        fonts: BTreeSet::new(),
        text_area: 0.0,
        image_area: 0.0,
    };
    for object in page.objects().iter() {
        tally.add(&object, 0);
    }
    let (fonts, text_area, image_area) = (tally.fonts.len() as u32, tally.text_area, tally.image_area);
    let page_area = f.width_pt * f.height_pt;
    f.fonts = fonts;
    if page_area > 0.0 {
        f.text_area_ratio = (text_area / page_area).min(1.0);
        f.image_area_ratio = (image_area / page_area).min(1.0);
    }
    Ok(PageText { text, features: f })
}
