//! The `math` test. olmocr renders the expected equation and every equation found in the page
//! with KaTeX in a headless browser and compares the renderings (MathML containment, then the
//! layout of the rendered glyphs). vellum has no browser, so after olmocr's own exact-match
//! shortcut it compares LaTeX token sequences instead, as a stand-in for the rendered glyphs: an
//! equation passes when the expected one's normalised tokens appear contiguously in a candidate
//! equation's. Dropped, because the glyphs they leave are the same: spacing commands,
//! `\left`/`\right`, `\displaystyle`, grouping braces and font or text commands (`\mathcal{I}`
//! and `I`, `\operatorname{Ann}` and `\text{Ann}` render the same characters, which is what
//! olmocr's glyph comparison looks at); `'` is `^\prime`. Anything else KaTeX renders alike from
//! different source (`\frac` vs `\over`, reordered sub/superscripts) fails here, and glyphs in a
//! different layout can pass here, so math scores are approximate.

use std::sync::LazyLock;

use regex::Regex;

static PAREN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)\\\((.+?)\\\)").unwrap());
static BRACKET: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)\\\[(.+?)\\\]").unwrap());
static DOUBLE_DOLLAR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)\$\$(.+?)\$\$").unwrap());
static DOLLAR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)\$(.+?)\$").unwrap());

/// The equations of `content`, found and removed delimiter kind by delimiter kind in olmocr's
/// order, so `$$…$$` is not read again as `$…$`.
pub fn equations(content: &str, ignore_dollar_delimited: bool) -> Vec<String> {
    let mut patterns: Vec<&Regex> = vec![&PAREN, &BRACKET];
    if !ignore_dollar_delimited {
        patterns.extend([&*DOUBLE_DOLLAR, &*DOLLAR]);
    }
    let mut found = Vec::new();
    let mut content = content.to_string();
    for pattern in patterns {
        found.extend(
            pattern
                .captures_iter(&content)
                .map(|c| super::normalize::py_strip(&c[1]).to_string()),
        );
        content = pattern.replace_all(&content, "").into_owned();
    }
    found
}

const DROPPED: &[&str] = &[
    "\\,",
    "\\;",
    "\\:",
    "\\!",
    "\\ ",
    "\\quad",
    "\\qquad",
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\textstyle",
    "\\limits",
    "\\nolimits",
    "\\mathcal",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\mathsf",
    "\\mathtt",
    "\\mathbb",
    "\\mathfrak",
    "\\mathscr",
    "\\mathnormal",
    "\\boldsymbol",
    "\\bm",
    "\\text",
    "\\textrm",
    "\\textbf",
    "\\textit",
    "\\operatorname",
    "\\rm",
    "\\bf",
    "\\it",
    "{",
    "}",
];

fn tokens(latex: &str) -> Vec<String> {
    let chars: Vec<char> = latex.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c.is_whitespace() {
            continue;
        }
        let token = if c == '\\' && i < chars.len() {
            let start = i;
            if chars[i].is_ascii_alphabetic() {
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
            } else {
                i += 1;
            }
            format!("\\{}", chars[start..i].iter().collect::<String>())
        } else {
            c.to_string()
        };
        if token == "'" {
            out.extend(["^".to_string(), "\\prime".to_string()]);
            continue;
        }
        let token = match token.as_str() {
            "\\dfrac" | "\\tfrac" => "\\frac".to_string(),
            "\\lbrace" => "\\{".to_string(),
            "\\rbrace" => "\\}".to_string(),
            _ => token,
        };
        if !DROPPED.contains(&token.as_str()) {
            out.push(token);
        }
    }
    out
}

/// Whether `content` holds the equation `expected`: olmocr's exact match, else token containment.
pub fn contains_equation(content: &str, expected: &str, ignore_dollar_delimited: bool) -> bool {
    let found = equations(content, ignore_dollar_delimited);
    if found.iter().any(|e| e == expected) {
        return true;
    }
    let want = tokens(expected);
    !want.is_empty()
        && found
            .iter()
            .any(|e| tokens(e).windows(want.len()).any(|w| w == want.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equations_are_found_and_compared_by_tokens() {
        let page = r"Text $$ a^{2} + b^2 $$ and \( \frac{1}{2} \) and $x$.";
        assert_eq!(equations(page, false), ["\\frac{1}{2}", "a^{2} + b^2", "x"]);
        assert!(contains_equation(page, "a^2+b^{2}", false));
        assert!(contains_equation(page, r"\dfrac{1}{2}", false));
        assert!(!contains_equation(page, "a^3", false));
        assert!(contains_equation(
            r"\[ \lambda_{g'} + \mathcal{I}_i \]",
            r"\lambda_{g^{\prime}}+I_{i}",
            false
        ));
        assert!(!contains_equation(page, "x", true));
    }
}
