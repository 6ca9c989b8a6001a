//! Does a document need OCR, or is its text layer good? FinePDFs answers with an XGBoost
//! classifier over features of up to 8 sampled pages and sends a document to OCR when
//! p ≥ 0.2 or any of its text is garbled. vellum computes its features with pdfium (which
//! differ from PyMuPDF's, so FinePDFs' model does not carry over as is) and decides with
//! the rules below by default, or with an XGBoost JSON model when given one.
//!
//! The default rules, per sampled page, first match wins:
//! 1. any U+FFFD in the text layer → OCR ("garbled text layer"); text that is not language
//!    (see `super::language`: a broken font encoding) → OCR likewise;
//! 2. at least half the characters invisible (render mode 3) over an image covering ≥ 50%
//!    of the page → OCR ("an earlier OCR's invisible text over a scan");
//! 3. fewer than 16 visible characters: → OCR if images cover ≥ 5% of the page or it has
//!    ≥ 200 vector paths (a scan, or text drawn as outlines), else text ("blank page");
//! 4. one image covering ≥ 80% of the page and fewer than 100 visible characters → OCR;
//! 5. otherwise → text layer.
//!
//! The document's probability is the share of sampled pages sent to OCR; it needs OCR when that
//! is ≥ 0.2 (FinePDFs' threshold) or any sampled text is garbled or not language.

use std::path::Path;

use serde::Serialize;

use super::document::{DocumentInfo, InputKind};
use super::features::PageFeatures;
use super::worker::Worker;
use super::xgboost::XgbModel;
use super::PdfError;

/// FinePDFs sends a document to OCR from this probability up.
pub const OCR_THRESHOLD: f32 = 0.2;
/// Pages sampled per document.
pub const SAMPLED_PAGES: usize = 8;

/// Producers that mark a document as scanned.
const SCANNER_PRODUCERS: &[&str] = &[
    "scan",
    "canon",
    "xerox",
    "ricoh",
    "konica",
    "kyocera",
    "epson",
    "brother",
    "sharp",
    "toshiba",
    "fujitsu",
    "kodak",
    "hp digital sending",
    "paper capture",
    "abbyy",
    "omnipage",
    "readiris",
    "paperport",
    "kofax",
    "capture",
];

/// Up to `k` page numbers (1-based), evenly spread from the first page to the last.
pub fn sample_pages(pages: usize, k: usize) -> Vec<usize> {
    if pages <= k {
        return (1..=pages).collect();
    }
    let mut picked: Vec<usize> = (0..k).map(|i| 1 + i * (pages - 1) / (k - 1)).collect();
    picked.dedup();
    picked
}

pub fn is_scanner_producer(info: &DocumentInfo) -> bool {
    [&info.producer, &info.creator]
        .into_iter()
        .flatten()
        .any(|p| SCANNER_PRODUCERS.iter().any(|s| p.to_lowercase().contains(s)))
}

/// The routing decision for one page, and why.
pub fn page_route(f: &PageFeatures) -> (bool, &'static str) {
    let visible = f.chars.saturating_sub(f.invisible_chars);
    if f.garbled_chars > 0 {
        return (true, "garbled text layer");
    }
    if f.word_counts().not_language() {
        return (true, "text layer is not language (a broken font encoding)");
    }
    if f.chars > 0 && f.invisible_chars * 2 >= f.chars && f.max_image_area_ratio >= 0.5 {
        return (true, "an earlier OCR's invisible text over a scan");
    }
    if visible < 16 {
        return if f.image_area_ratio >= 0.05 || f.path_objects >= 200 {
            (true, "no usable text layer over images or drawings")
        } else {
            (false, "blank page")
        };
    }
    if f.max_image_area_ratio >= 0.8 && visible < 100 {
        return (true, "a full-page image with little text");
    }
    (false, "text layer")
}

/// One number read off a page's features.
type PageMetric = fn(&PageFeatures) -> f32;

fn ratio(a: u32, b: u32) -> f32 {
    if b > 0 {
        a as f32 / b as f32
    } else {
        0.0
    }
}

/// Named document features: the document's own, and mean/min/max over the sampled pages.
/// Serialised as one JSON object, name → value, in order.
#[derive(Debug, Clone)]
pub struct DocumentFeatures {
    pub names: Vec<String>,
    pub values: Vec<f32>,
}

impl Serialize for DocumentFeatures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.names.len()))?;
        for (name, value) in self.names.iter().zip(&self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl DocumentFeatures {
    pub fn new(info: &DocumentInfo, pages: &[PageFeatures]) -> Self {
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut push = |name: String, value: f32| {
            names.push(name);
            values.push(value);
        };
        push("num_pages".into(), info.pages as f32);
        push("is_image_input".into(), (info.kind == InputKind::Image) as u8 as f32);
        push("scanner_producer".into(), is_scanner_producer(info) as u8 as f32);
        let chars: u32 = pages.iter().map(|p| p.chars).sum();
        let garbled: u32 = pages.iter().map(|p| p.garbled_chars).sum();
        push("garbled_ratio".into(), ratio(garbled, chars));
        let not_language = pages.iter().filter(|p| p.word_counts().not_language()).count();
        push(
            "not_language_ratio".into(),
            not_language as f32 / pages.len().max(1) as f32,
        );
        let per_page: [(&str, PageMetric); 16] = [
            ("chars", |p| p.chars as f32),
            ("alnum_ratio", |p| ratio(p.alnum_chars, p.chars)),
            ("invisible_ratio", |p| ratio(p.invisible_chars, p.chars)),
            ("text_objects", |p| p.text_objects as f32),
            ("fonts", |p| p.fonts as f32),
            ("text_area_ratio", |p| p.text_area_ratio),
            ("image_objects", |p| p.image_objects as f32),
            ("image_area_ratio", |p| p.image_area_ratio),
            ("max_image_area_ratio", |p| p.max_image_area_ratio),
            ("path_objects", |p| p.path_objects as f32),
            ("annotations", |p| p.annotations as f32),
            ("chars_per_square_inch", |p| {
                p.chars as f32 / (p.width_pt * p.height_pt / 5184.0).max(1e-3)
            }),
            ("aspect_ratio", |p| p.height_pt / p.width_pt.max(1e-3)),
            ("routed_to_ocr", |p| page_route(p).0 as u8 as f32),
            ("function_word_ratio", |p| ratio(p.function_words, p.words)),
            ("vowel_word_ratio", |p| ratio(p.vowel_words, p.words)),
        ];
        for (name, f) in per_page {
            let v: Vec<f32> = pages.iter().map(f).collect();
            let n = v.len().max(1) as f32;
            push(format!("{name}_mean"), v.iter().sum::<f32>() / n);
            push(
                format!("{name}_min"),
                v.iter().copied().fold(f32::INFINITY, f32::min).min(f32::MAX),
            );
            push(format!("{name}_max"), v.iter().copied().fold(0.0, f32::max));
        }
        Self { names, values }
    }

    pub fn get(&self, name: &str) -> Option<f32> {
        self.names.iter().position(|n| n == name).map(|i| self.values[i])
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PageRoute {
    pub page: usize,
    pub needs_ocr: bool,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteDecision {
    pub needs_ocr: bool,
    pub probability: f32,
    pub router: &'static str,
    pub reasons: Vec<String>,
    pub sampled_pages: Vec<usize>,
    pub page_routes: Vec<PageRoute>,
}

/// Which model decides.
pub enum Router {
    Rules,
    Xgboost(XgbModel),
}

impl Router {
    /// Decides from the features of the sampled pages (`pages[i]` is page `sampled[i]`).
    pub fn route(
        &self,
        info: &DocumentInfo,
        sampled: &[usize],
        pages: &[PageFeatures],
    ) -> (RouteDecision, DocumentFeatures) {
        let features = DocumentFeatures::new(info, pages);
        let page_routes: Vec<PageRoute> = sampled
            .iter()
            .zip(pages)
            .map(|(&page, f)| {
                let (needs_ocr, reason) = page_route(f);
                PageRoute {
                    page,
                    needs_ocr,
                    reason,
                }
            })
            .collect();
        let garbled = features.get("garbled_ratio").unwrap_or(0.0) > 0.0;
        let not_language = features.get("not_language_ratio").unwrap_or(0.0) > 0.0;
        let (probability, router) = match self {
            Router::Rules => {
                let flagged = page_routes.iter().filter(|r| r.needs_ocr).count();
                (flagged as f32 / page_routes.len().max(1) as f32, "rules")
            }
            Router::Xgboost(model) => (
                model.predict(&model.arrange(&features.names, &features.values)),
                "xgboost",
            ),
        };
        let mut reasons = Vec::new();
        if garbled {
            reasons.push("garbled text in the sampled pages".to_string());
        }
        if not_language {
            reasons.push("sampled text that is not language (a broken font encoding)".to_string());
        }
        if probability >= OCR_THRESHOLD {
            reasons.push(format!("p(needs OCR) = {probability:.2} ≥ {OCR_THRESHOLD}"));
        }
        if is_scanner_producer(info) {
            reasons.push(format!(
                "produced by a scanner ({})",
                info.producer.as_deref().or(info.creator.as_deref()).unwrap_or("")
            ));
        }
        let decision = RouteDecision {
            needs_ocr: garbled || not_language || probability >= OCR_THRESHOLD,
            probability,
            router,
            reasons,
            sampled_pages: sampled.to_vec(),
            page_routes,
        };
        (decision, features)
    }
}

/// A routed document: what it is, the decision, and the features behind it.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentRoute {
    pub info: DocumentInfo,
    pub decision: RouteDecision,
    pub features: DocumentFeatures,
    /// The text layers of the sampled pages (1-based), read for the features: whoever needs
    /// every page's text takes these instead of reading them again.
    #[serde(skip)]
    pub sampled_texts: std::collections::BTreeMap<usize, String>,
}

/// Opens `path` in `worker`, reads the sampled pages' features and decides.
pub fn route_document(
    worker: &mut Worker,
    router: &Router,
    path: &Path,
    password: Option<&str>,
) -> Result<DocumentRoute, PdfError> {
    let info = worker.info(path, password)?;
    let sampled = sample_pages(info.pages, SAMPLED_PAGES);
    let read = sampled
        .iter()
        .map(|&p| worker.text(path, password, p))
        .collect::<Result<Vec<_>, _>>()?;
    let pages: Vec<PageFeatures> = read.iter().map(|t| t.features.clone()).collect();
    let (decision, features) = router.route(&info, &sampled, &pages);
    Ok(DocumentRoute {
        info,
        decision,
        features,
        sampled_texts: sampled.iter().copied().zip(read.into_iter().map(|t| t.text)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(chars: u32, image: f32) -> PageFeatures {
        PageFeatures {
            width_pt: 612.0,
            height_pt: 792.0,
            chars,
            image_area_ratio: image,
            max_image_area_ratio: image,
            ..Default::default()
        }
    }

    #[test]
    fn samples_spread_over_the_document() {
        assert_eq!(sample_pages(3, 8), vec![1, 2, 3]);
        assert_eq!(sample_pages(100, 8), vec![1, 15, 29, 43, 57, 71, 85, 100]);
    }

    #[test]
    fn each_rule_fires_on_its_case() {
        assert_eq!(page_route(&page(2000, 0.0)), (false, "text layer"));
        assert!(page_route(&page(0, 1.0)).0);
        assert_eq!(page_route(&page(0, 0.0)), (false, "blank page"));
        assert_eq!(
            page_route(&PageFeatures {
                garbled_chars: 1,
                ..page(500, 0.0)
            })
            .1,
            "garbled text layer"
        );
        assert_eq!(
            page_route(&PageFeatures {
                invisible_chars: 900,
                ..page(1000, 0.95)
            })
            .1,
            "an earlier OCR's invisible text over a scan"
        );
        assert_eq!(page_route(&page(40, 0.9)).1, "a full-page image with little text");
        assert!(
            page_route(&PageFeatures {
                path_objects: 500,
                ..page(0, 0.0)
            })
            .0
        );
    }

    #[test]
    fn one_scanned_page_in_five_sends_the_document_to_ocr() {
        let info = DocumentInfo {
            kind: InputKind::Pdf,
            pages: 5,
            producer: None,
            creator: None,
        };
        let pages = [
            page(2000, 0.0),
            page(2000, 0.0),
            page(0, 1.0),
            page(2000, 0.0),
            page(2000, 0.0),
        ];
        let (d, f) = Router::Rules.route(&info, &[1, 2, 3, 4, 5], &pages);
        assert!(d.needs_ocr && (d.probability - 0.2).abs() < 1e-6, "{d:?}");
        assert_eq!(f.get("num_pages"), Some(5.0));
        let (d, _) = Router::Rules.route(&info, &[1, 2], &pages[..2]);
        assert!(!d.needs_ocr);
    }
}
