//! olmOCR's document anchoring: a page's text runs and image boxes with their coordinates, as
//! olmOCR v0.1 puts them in its prompt (allenai/olmocr `olmocr/prompts/anchor.py`, the
//! "pdfreport" engine: `_pdf_report` then `_linearize_pdf_report`), read through pdfium instead
//! of pypdf:
//!
//! ```text
//! Page dimensions: 612.0x792.0
//! [Image 72x100 to 540x400]
//! [72x720]Hello world
//! ```
//!
//! Differences, each deliberate or unavoidable: pypdf reports runs of text as the content stream
//! shows them, pdfium one text object per run or, in PDFs that place glyphs one by one, per
//! glyph; single-glyph objects are joined back into runs (the same baseline, the next starting
//! where the last ended, a space where the gap is wider than a fifth of the glyph height), while
//! objects of several characters stay runs of their own, as pypdf reports them. Run text is not passed
//! through `ftfy.fix_text`; and when everything does not fit in `max_length`, the elements kept
//! after the page's edge elements are the first ones in position order, where olmocr takes a
//! random sample (`random.shuffle`), so its own output is not reproducible there.

use pdfium_render::prelude::*;

/// A page's elements, in content order (olmocr's `PageReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct PageReport {
    /// The MediaBox's upper-right corner.
    pub width: f32,
    pub height: f32,
    /// Run text and its origin (x, y) in PDF user space.
    pub texts: Vec<(String, f32, f32)>,
    /// Image boxes (x0, y0, x1, y1).
    pub images: Vec<[f32; 4]>,
}

/// Reads the text objects and the image objects placed directly on the page.
pub fn page_report(page: &PdfPage) -> PageReport {
    let media = page.boundaries().media().map(|b| b.bounds).ok();
    let (width, height) = media.map_or((page.width().value, page.height().value), |r| {
        (r.right().value, r.top().value)
    });
    let mut report = PageReport {
        width,
        height,
        texts: Vec::new(),
        images: Vec::new(),
    };
    let mut runs = Runs::default();
    for object in page.objects().iter() {
        runs.add(&object, &mut report, 0);
    }
    if let Some((s, x, y, _)) = runs.run {
        report.texts.push((s, x, y));
    }
    report
}

/// Text runs as they are read, single-glyph objects joined (see the module's notes).
#[derive(Default)]
struct Runs {
    /// The run of single glyphs being built: its text, origin, and the box of its last glyph.
    run: Option<(String, f32, f32, [f32; 4])>,
}

fn single(s: &str) -> bool {
    s.trim().chars().count() == 1
}

impl Runs {
    /// Adds one object; text inside form XObjects counts (pypdf reads it), their images do not
    /// (pypdf looks image names up in the page's own resources only).
    fn add(&mut self, object: &PdfPageObject, report: &mut PageReport, depth: usize) {
        match object {
            PdfPageObject::Text(text) => {
                let Ok(b) = object.bounds() else { return };
                let bounds = [b.left().value, b.bottom().value, b.right().value, b.top().value];
                let (x, y) = match text.matrix() {
                    Ok(m) => (m.e(), m.f()),
                    Err(_) => (bounds[0], bounds[1]),
                };
                let content = text.text();
                if let Some((s, _, ry, last)) = self.run.as_mut().filter(|_| single(&content)) {
                    let height = (last[3] - last[1]).max(bounds[3] - bounds[1]).max(1.0);
                    let gap = bounds[0] - last[2];
                    if (y - *ry).abs() < 0.1 * height && gap > -0.2 * height && gap < 1.5 * height {
                        if gap > 0.2 * height && !s.ends_with(' ') && !content.starts_with(' ') {
                            s.push(' ');
                        }
                        s.push_str(&content);
                        *last = bounds;
                        return;
                    }
                }
                if let Some((s, rx, ry, _)) = self.run.take() {
                    report.texts.push((s, rx, ry));
                }
                if single(&content) {
                    self.run = Some((content, x, y, bounds));
                } else {
                    report.texts.push((content, x, y));
                }
            }
            PdfPageObject::Image(_) if depth == 0 => {
                if let Ok(b) = object.bounds() {
                    report
                        .images
                        .push([b.left().value, b.bottom().value, b.right().value, b.top().value]);
                }
            }
            PdfPageObject::XObjectForm(form) if depth < 8 => {
                for inner in form.iter() {
                    self.add(&inner, report, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// olmocr's `_merge_image_elements`: boxes within `tolerance` of each other become one.
fn merge_images(images: &[[f32; 4]], tolerance: f32) -> Vec<[f32; 4]> {
    let n = images.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (images[i], images[j]);
            let h = (a[0].max(b[0]) - a[2].min(b[2])).max(0.0);
            let v = (a[1].max(b[1]) - a[3].min(b[3])).max(0.0);
            if h <= tolerance && v <= tolerance {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                if ri != rj {
                    parent[ri] = rj;
                }
            }
        }
    }
    // Groups in the order of their first member, as the Python dict of roots keeps them.
    let mut groups: Vec<(usize, [f32; 4])> = Vec::new();
    for (i, m) in images.iter().enumerate() {
        let root = find(&mut parent, i);
        match groups.iter_mut().find(|(r, _)| *r == root) {
            Some((_, b)) => *b = [b[0].min(m[0]), b[1].min(m[1]), b[2].max(m[2]), b[3].max(m[3])],
            None => groups.push((root, *m)),
        }
    }
    groups.into_iter().map(|(_, b)| b).collect()
}

/// olmocr's `_cap_split_string`: the head and tail of an over-long string around " ... ",
/// cut at spaces.
fn cap_split(text: &str, max_length: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max_length {
        return text.to_string();
    }
    let keep = (max_length / 2).saturating_sub(3);
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    let head = match head.rsplit_once(' ') {
        Some((h, _)) if !h.is_empty() => h.to_string(),
        _ => head,
    };
    let tail = match tail.split_once(' ') {
        Some((_, t)) if !t.is_empty() => t.to_string(),
        _ => tail,
    };
    format!("{head} ... {tail}")
}

/// olmocr's `_cleanup_element_text` (without ftfy): stripped, brackets and control characters
/// escaped, at most 250 characters.
fn cleanup(text: &str) -> String {
    let mut out = String::new();
    for c in text.trim().chars() {
        match c {
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    cap_split(&out, 250)
}

/// Python's `f"{x:.0f}"`: round half to even.
fn coord(x: f32) -> String {
    format!("{:.0}", crate::imaging::round_half_even(x as f64))
}

/// olmocr's `_linearize_pdf_report`.
pub fn linearize(report: &PageReport, max_length: usize) -> String {
    let mut result = format!("Page dimensions: {:.1}x{:.1}\n", report.width, report.height);
    if max_length < 20 {
        return result;
    }
    let images = merge_images(&report.images, 0.5);
    // (text, position, is an edge element)
    let mut elements: Vec<(String, (f32, f32), bool)> = Vec::new();
    for b in &images {
        let s = format!(
            "[Image {}x{} to {}x{}]\n",
            coord(b[0]),
            coord(b[1]),
            coord(b[2]),
            coord(b[3])
        );
        elements.push((s, (b[0], b[1]), false));
    }
    let texts: Vec<&(String, f32, f32)> = report.texts.iter().filter(|t| !t.0.trim().is_empty()).collect();
    for (text, x, y) in &texts {
        elements.push((
            format!("[{}x{}]{}\n", coord(*x), coord(*y), cleanup(text)),
            (*x, *y),
            false,
        ));
    }
    let total: usize = result.chars().count() + elements.iter().map(|e| e.0.chars().count()).sum::<usize>();
    if total <= max_length {
        for e in &elements {
            result.push_str(&e.0);
        }
        return result;
    }
    // The elements at the page's extremes first (min/max of x0, x1, y0, y1 over images; of x, y
    // over texts; the first such element where several tie, as Python's min/max).
    let edge = |idx: &[usize], key: &dyn Fn(usize) -> f32, max: bool| -> Option<usize> {
        idx.iter().copied().fold(None, |best: Option<usize>, i| match best {
            None => Some(i),
            Some(b) if (max && key(i) > key(b)) || (!max && key(i) < key(b)) => Some(i),
            keep => keep,
        })
    };
    let image_idx: Vec<usize> = (0..images.len()).collect();
    let text_idx: Vec<usize> = (images.len()..elements.len()).collect();
    let image_box = |i: usize, k: usize| images[i][k];
    let text_pos = |i: usize, k: usize| {
        let t = texts[i - images.len()];
        if k == 0 {
            t.1
        } else {
            t.2
        }
    };
    let mut edges: Vec<usize> = Vec::new();
    for (k, max) in [(0, false), (2, true), (1, false), (3, true)] {
        edges.extend(edge(&image_idx, &|i| image_box(i, k), max));
    }
    for (k, max) in [(0, false), (0, true), (1, false), (1, true)] {
        edges.extend(edge(&text_idx, &|i| text_pos(i, k), max));
    }
    for &i in &edges {
        elements[i].2 = true;
    }
    let mut length = result.chars().count()
        + elements
            .iter()
            .filter(|e| e.2)
            .map(|e| e.0.chars().count())
            .sum::<usize>();
    let mut order: Vec<usize> = (0..elements.len()).filter(|&i| !elements[i].2).collect();
    order.sort_by(|&a, &b| {
        elements[a]
            .1
            .partial_cmp(&elements[b].1)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut selected: Vec<usize> = (0..elements.len()).filter(|&i| elements[i].2).collect();
    for i in order {
        let n = elements[i].0.chars().count();
        if length + n > max_length {
            break;
        }
        selected.push(i);
        length += n;
    }
    selected.sort_by(|&a, &b| {
        elements[a]
            .1
            .partial_cmp(&elements[b].1)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for i in selected {
        result.push_str(&elements[i].0);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linearizes_as_olmocr_does() {
        let report = PageReport {
            width: 612.0,
            height: 792.0,
            texts: vec![
                ("Hello [world]\n".into(), 72.4, 720.5),
                ("  ".into(), 1.0, 1.0),
                ("tab\there".into(), 300.0, 100.0),
            ],
            images: vec![
                [72.0, 100.0, 300.0, 400.0],
                [300.2, 100.0, 540.0, 400.0],
                [10.0, 10.0, 20.0, 20.0],
            ],
        };
        assert_eq!(
            linearize(&report, 4000),
            "Page dimensions: 612.0x792.0\n[Image 72x100 to 540x400]\n[Image 10x10 to 20x20]\n\
             [72x720]Hello \\[world\\]\n[300x100]tab\\there\n"
        );
        assert_eq!(linearize(&report, 10), "Page dimensions: 612.0x792.0\n");
        assert_eq!(cap_split("aaaa bbbb cccc dddd", 12), "aaa ... ddd");
    }
}
