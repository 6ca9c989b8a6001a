//! The `math` test. olmocr renders the expected equation and every equation found in the page
//! with KaTeX in a headless browser and compares the renderings (MathML containment, then the
//! layout of the rendered glyphs). vellum has no browser, so after olmocr's own exact-match
//! shortcut it compares LaTeX token sequences instead, as a stand-in for the rendered glyphs: an
//! equation passes when the expected one's normalised tokens appear contiguously in a candidate
//! equation's. Spellings that render alike are made one (`{a \over b}` and `\frac{a}{b}`, `x^b_a`
//! and `x_a^b`, `'` and `^\prime`, `\dfrac` and `\frac`), and dropped, because the glyphs they
//! leave are the same: spacing commands, `\left`/`\right`, `\displaystyle`, grouping braces and
//! font or text commands (`\mathcal{I}` and `I`, `\operatorname{Ann}` and `\text{Ann}` render
//! the same characters, which is what olmocr's glyph comparison looks at).
//!
//! Where it parts from KaTeX (tests/olmocr_bench_score.rs measures it on 210 rewritten
//! equations): `\left[` vs `[` passes here, while KaTeX's taller brackets fail there; other
//! rewrites KaTeX renders alike but this does not know fail here. Math scores are approximate.

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
];

/// A LaTeX token, or a `{…}` group of them.
enum Node {
    Token(String),
    Group(Vec<Node>),
}

/// Commands, single characters and groups; `'` is read as `^\prime`, the `\dfrac`/`\tfrac`
/// spellings as `\frac`.
fn parse(latex: &str) -> Vec<Node> {
    let chars: Vec<char> = latex.chars().collect();
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let token = if c.is_whitespace() {
            continue;
        } else if c == '{' {
            stack.push(Vec::new());
            continue;
        } else if c == '}' {
            if stack.len() > 1 {
                let group = stack.pop().unwrap();
                stack.last_mut().unwrap().push(Node::Group(group));
            }
            continue;
        } else if c == '\\' && i < chars.len() {
            let start = i;
            i += 1;
            if chars[start].is_ascii_alphabetic() {
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            format!("\\{}", chars[start..i].iter().collect::<String>())
        } else {
            c.to_string()
        };
        let top = stack.last_mut().unwrap();
        match token.as_str() {
            "'" => top.extend([Node::Token("^".into()), Node::Token("\\prime".into())]),
            "\\dfrac" | "\\tfrac" => top.push(Node::Token("\\frac".into())),
            "\\lbrace" => top.push(Node::Token("\\{".into())),
            "\\rbrace" => top.push(Node::Token("\\}".into())),
            _ => top.push(Node::Token(token)),
        }
    }
    while stack.len() > 1 {
        let group = stack.pop().unwrap();
        stack.last_mut().unwrap().push(Node::Group(group));
    }
    stack.pop().unwrap()
}

fn is_token(node: Option<&Node>, token: &str) -> bool {
    matches!(node, Some(Node::Token(t)) if t == token)
}

/// Rewrites what renders alike into one spelling: `{a \over b}` as `\frac{a}{b}`, and a
/// superscript written before its subscript after it.
fn canonical(nodes: Vec<Node>) -> Vec<Node> {
    let mut nodes: Vec<Node> = nodes
        .into_iter()
        .map(|n| match n {
            Node::Group(g) => Node::Group(canonical(g)),
            token => token,
        })
        .collect();
    if let Some(at) = nodes.iter().position(|n| is_token(Some(n), "\\over")) {
        let denominator = nodes.split_off(at + 1);
        nodes.pop();
        nodes = vec![
            Node::Token("\\frac".into()),
            Node::Group(nodes),
            Node::Group(denominator),
        ];
    }
    let mut i = 0;
    while i + 3 < nodes.len() {
        if is_token(nodes.get(i), "^") && is_token(nodes.get(i + 2), "_") {
            nodes[i..i + 4].rotate_left(2);
            i += 4;
        } else {
            i += 1;
        }
    }
    nodes
}

fn flatten(nodes: &[Node], out: &mut Vec<String>) {
    for node in nodes {
        match node {
            Node::Group(g) => flatten(g, out),
            Node::Token(t) if !DROPPED.contains(&t.as_str()) => out.push(t.clone()),
            Node::Token(_) => {}
        }
    }
}

fn tokens(latex: &str) -> Vec<String> {
    let mut out = Vec::new();
    flatten(&canonical(parse(latex)), &mut out);
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
