//! What olmocr's `format` and `footnote` tests look for in the markdown: the texts set in a
//! heading, bold or italics (markdown or HTML), and where a footnote marker appears
//! (`[^m]`, `<sup>m</sup>`, or Unicode superscript digits). The patterns are olmocr's, with its
//! quirks (`<b[^>]*>` also opens at `<br>`, `<i[^>]*>` at `<img>`).

use std::sync::LazyLock;

use fancy_regex::Regex as FancyRegex;
use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Heading,
    Bold,
    Italic,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "heading" => Ok(Format::Heading),
            "bold" => Ok(Format::Bold),
            "italic" => Ok(Format::Italic),
            other => Err(format!(
                "Invalid format type: {other}. Must be 'heading', 'bold', or 'italic'"
            )),
        }
    }
}

fn regexes(patterns: &[&str]) -> Vec<Regex> {
    patterns.iter().map(|p| Regex::new(p).unwrap()).collect()
}

static HEADING: LazyLock<Vec<Regex>> =
    LazyLock::new(|| regexes(&[r"(?m)^#{1,6}\s+(.+?)$", r"(?is)<h[1-6][^>]*>(.*?)</h[1-6]>"]));
static BOLD: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    regexes(&[
        r"(?s)\*\*(.*?)\*\*",
        r"(?s)__(.*?)__",
        r"(?is)<b[^>]*>(.*?)</b>",
        r"(?is)<strong[^>]*>(.*?)</strong>",
    ])
});
// Single `*` or `_` not part of `**` or `__`: lookarounds, which only fancy-regex has.
static ITALIC_MARKDOWN: LazyLock<Vec<FancyRegex>> = LazyLock::new(|| {
    [
        r"(?s)(?<!\*)\*(?!\*)(.*?)(?<!\*)\*(?!\*)",
        r"(?s)(?<!_)_(?!_)(.*?)(?<!_)_(?!_)",
    ]
    .iter()
    .map(|p| FancyRegex::new(p).unwrap())
    .collect()
});
static ITALIC_HTML: LazyLock<Vec<Regex>> =
    LazyLock::new(|| regexes(&[r"(?is)<i[^>]*>(.*?)</i>", r"(?is)<em[^>]*>(.*?)</em>"]));

/// The texts of `content` set in `format`, pattern by pattern in olmocr's order.
pub fn formatted_texts(content: &str, format: Format) -> Vec<String> {
    let plain = |patterns: &[Regex]| -> Vec<String> {
        patterns
            .iter()
            .flat_map(|p| p.captures_iter(content).map(|c| c[1].to_string()))
            .collect()
    };
    match format {
        Format::Heading => plain(&HEADING),
        Format::Bold => plain(&BOLD),
        Format::Italic => {
            let mut texts: Vec<String> = ITALIC_MARKDOWN
                .iter()
                .flat_map(|p| {
                    p.captures_iter(content)
                        .filter_map(|c| c.ok()?.get(1).map(|m| m.as_str().to_string()))
                })
                .collect();
            texts.extend(plain(&ITALIC_HTML));
            texts
        }
    }
}

const SUPERSCRIPTS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];

/// Where `marker` appears as a footnote mark, as (start, end) character offsets (Python's string
/// indices): `[^marker]` not followed by `:` (that is the footnote's definition),
/// `<sup …>marker</sup>` (any case), and for digit markers the Unicode superscript digits.
pub fn footnote_marks(content: &str, marker: &str) -> Vec<(usize, usize)> {
    let mut marks = Vec::new();
    let reference = format!("[^{marker}]");
    marks.extend(
        literal_matches(content, &reference)
            .into_iter()
            .filter(|&(_, end)| !content[end..].starts_with(':')),
    );
    let sup = Regex::new(&format!(r"(?i)<sup[^>]*>{}</sup>", regex::escape(marker))).unwrap();
    marks.extend(sup.find_iter(content).map(|m| (m.start(), m.end())));
    if marker.chars().all(|c| c.is_ascii_digit()) {
        let superscript: String = marker
            .chars()
            .map(|c| SUPERSCRIPTS[c as usize - '0' as usize])
            .collect();
        marks.extend(literal_matches(content, &superscript));
    }
    let to_chars = |byte: usize| content[..byte].chars().count();
    marks.into_iter().map(|(s, e)| (to_chars(s), to_chars(e))).collect()
}

/// Non-overlapping occurrences of `needle`, left to right, as byte ranges.
fn literal_matches(content: &str, needle: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = content[from..].find(needle) {
        out.push((from + i, from + i + needle.len()));
        from += i + needle.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_marks_are_found_as_olmocr_finds_them() {
        let md = "# Title\n\nSome **bold** and *it* and __b2__ with <em>em</em>.\n";
        assert_eq!(formatted_texts(md, Format::Heading), ["Title"]);
        assert_eq!(formatted_texts(md, Format::Bold), ["bold", "b2"]);
        assert_eq!(formatted_texts(md, Format::Italic), ["it", "em"]);
        let notes = "é text[^1] more<sup>1</sup> and ¹\n\n[^1]: the note";
        assert_eq!(footnote_marks(notes, "1"), [(6, 10), (15, 27), (32, 33)]);
    }
}
