//! Text normalisation as olmocr's `bench/tests.py` `normalize_text` does it, step for step: the
//! order matters (emphasis markers are removed before whitespace is collapsed, so `**` pairs
//! never span a line break).

use std::sync::LazyLock;

use regex::{Captures, Regex};
use unicode_normalization::UnicodeNormalization;

static BR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<br/?>").unwrap());
static BOLD_STARS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*\*(.*?)\*\*").unwrap());
static BOLD_UNDERSCORES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"__(.*?)__").unwrap());
static HTML_B: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"</?b>").unwrap());
static HTML_I: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"</?i>").unwrap());
// Python's `(\*\*|__)(.*?)\1` and `(\*|_)(.*?)\1`: the back-reference spelled out as one
// alternative per delimiter (at a given position only one of them can start).
static BOLD_PAIR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*\*(.*?)\*\*|__(.*?)__").unwrap());
static ITALIC_PAIR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*(.*?)\*|_(.*?)_").unwrap());

const REPLACEMENTS: &[(char, char)] = &[
    ('‘', '\''),
    ('’', '\''),
    ('‚', '\''),
    ('“', '"'),
    ('”', '"'),
    ('„', '"'),
    ('＿', '_'),
    ('–', '-'),
    ('—', '-'),
    ('‑', '-'),
    ('‒', '-'),
    ('−', '-'),
    ('\u{b5}', '\u{3bc}'),
];

/// Python's `str.isspace`, which `\s` in a `str` pattern follows: Rust's `char::is_whitespace`
/// plus the four ASCII information separators.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r"\s+", " ", text)`.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if is_py_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// Python's `str.strip()`.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

fn either_group(caps: &Captures) -> String {
    caps.get(1)
        .or_else(|| caps.get(2))
        .map_or("", |m| m.as_str())
        .to_string()
}

pub fn normalize_text(text: &str) -> String {
    let text = BR.replace_all(text, " ");
    let text = BOLD_STARS.replace_all(&text, "$1");
    let text = BOLD_UNDERSCORES.replace_all(&text, "$1");
    let text = HTML_B.replace_all(&text, "");
    let text = HTML_I.replace_all(&text, "");
    let text = BOLD_PAIR.replace_all(&text, either_group);
    let text = ITALIC_PAIR.replace_all(&text, either_group);
    let text: String = collapse_whitespace(&text).nfc().collect();
    text.chars()
        .map(|c| {
            REPLACEMENTS
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| *to)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emphasis_is_removed_before_whitespace_collapses() {
        assert_eq!(normalize_text("**bold** and *it*\n\n  x"), "bold and it x");
        // Values from olmocr's normalize_text. A pair closes on its own line (Python's `.` stops at
        // a newline), so line one's `*` stays; a `**` split over two lines goes as empty italics.
        assert_eq!(normalize_text("*a\nb* c*"), "*a b c");
        assert_eq!(normalize_text("**a\nb**"), "a b");
        assert_eq!(normalize_text("snake_case_name"), "snakecasename");
        assert_eq!(normalize_text("“quoted” – e\u{301}"), "\"quoted\" - é");
    }
}
