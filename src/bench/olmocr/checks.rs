//! The test definitions of olmocr's `bench/tests.py`: a JSONL line becomes a [`Test`] (with the
//! same validation, so a file olmocr rejects is rejected here) and [`Test::run`] tells whether
//! one markdown output passes it.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use anyhow::{bail, ensure, Result};
use regex::Regex;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::fuzzy::{find_near_matches, partial_ratio, ratio};
use super::markup::{footnote_marks, formatted_texts, Format};
use super::math::contains_equation;
use super::normalize::{collapse_whitespace, normalize_text, py_strip};
use super::table::{parse_html, parse_markdown, Table};

/// Every field any test type has; olmocr's dataclasses reject unknown keys, so does this.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    pdf: String,
    page: u32,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    max_diffs: usize,
    // Review metadata: read (so the key is allowed) and never scored.
    #[serde(default, rename = "checked")]
    _checked: Option<IgnoredAny>,
    #[serde(default, rename = "url")]
    _url: Option<IgnoredAny>,
    text: Option<String>,
    #[serde(default = "yes")]
    case_sensitive: bool,
    first_n: Option<usize>,
    last_n: Option<usize>,
    before: Option<String>,
    after: Option<String>,
    cell: Option<String>,
    // olmocr's table fields may be null (its normalize_text passes None through): no relation.
    up: Option<String>,
    down: Option<String>,
    left: Option<String>,
    right: Option<String>,
    top_heading: Option<String>,
    left_heading: Option<String>,
    #[serde(default)]
    ignore_markdown_tables: bool,
    max_length: Option<usize>,
    #[serde(default)]
    max_length_skips_image_alt_tags: bool,
    #[serde(default = "thirty")]
    max_repeats: usize,
    #[serde(default = "yes")]
    check_disallowed_characters: bool,
    math: Option<String>,
    #[serde(default)]
    ignore_dollar_delimited: bool,
    format: Option<String>,
    marker: Option<String>,
    appears_before_marker: Option<String>,
    appears_after_marker: Option<String>,
}

fn yes() -> bool {
    true
}

fn thirty() -> usize {
    30
}

#[derive(Debug, Clone)]
pub struct Test {
    pub pdf: String,
    pub page: u32,
    pub id: String,
    /// The JSONL `type`: present, absent, order, table, math, baseline, format, footnote.
    pub kind: String,
    pub max_diffs: usize,
    pub check: Check,
}

#[derive(Debug, Clone)]
pub enum Check {
    Presence {
        text: Vec<char>,
        absent: bool,
        case_sensitive: bool,
        first_n: Option<usize>,
        last_n: Option<usize>,
    },
    Order {
        before: Vec<char>,
        after: Vec<char>,
    },
    Table(TableCheck),
    Baseline(Baseline),
    Math {
        math: String,
        ignore_dollar_delimited: bool,
    },
    Format {
        text: String,
        format: Format,
        case_sensitive: bool,
    },
    Footnote {
        marker: String,
        before: Option<String>,
        after: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct TableCheck {
    pub(super) cell: String,
    up: String,
    down: String,
    left: String,
    right: String,
    top_heading: String,
    left_heading: String,
    ignore_markdown_tables: bool,
}

#[derive(Debug, Clone)]
pub struct Baseline {
    pub max_length: Option<usize>,
    pub max_length_skips_image_alt_tags: bool,
    pub max_repeats: usize,
    pub check_disallowed_characters: bool,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            max_length: None,
            max_length_skips_image_alt_tags: false,
            max_repeats: 30,
            check_disallowed_characters: true,
        }
    }
}

fn required(field: Option<String>, name: &str) -> Result<String> {
    field.ok_or_else(|| anyhow::anyhow!("missing field `{name}`"))
}

fn normalized_nonempty(field: Option<String>, name: &str) -> Result<String> {
    let text = normalize_text(&required(field, name)?);
    ensure!(!py_strip(&text).is_empty(), "{name} field cannot be empty");
    Ok(text)
}

impl Test {
    /// One JSONL line, validated as olmocr's dataclasses do.
    pub fn parse(line: &str) -> Result<Self> {
        let l: Line = serde_json::from_str(line)?;
        ensure!(!l.pdf.is_empty(), "PDF filename cannot be empty");
        ensure!(!l.id.is_empty(), "Test ID cannot be empty");
        let check = match l.kind.as_str() {
            "present" | "absent" => Check::Presence {
                text: normalized_nonempty(l.text, "text")?.chars().collect(),
                absent: l.kind == "absent",
                case_sensitive: l.case_sensitive,
                first_n: l.first_n,
                last_n: l.last_n,
            },
            "order" => {
                let before = normalized_nonempty(l.before, "before")?;
                let after = normalized_nonempty(l.after, "after")?;
                ensure!(
                    l.max_diffs <= before.chars().count() / 2 && l.max_diffs <= after.chars().count() / 2,
                    "Max diffs is too large for this test, greater than 50% of the search string"
                );
                Check::Order {
                    before: before.chars().collect(),
                    after: after.chars().collect(),
                }
            }
            "table" => Check::Table(TableCheck {
                cell: normalize_text(&required(l.cell, "cell")?),
                up: normalize_text(l.up.as_deref().unwrap_or_default()),
                down: normalize_text(l.down.as_deref().unwrap_or_default()),
                left: normalize_text(l.left.as_deref().unwrap_or_default()),
                right: normalize_text(l.right.as_deref().unwrap_or_default()),
                top_heading: normalize_text(l.top_heading.as_deref().unwrap_or_default()),
                left_heading: normalize_text(l.left_heading.as_deref().unwrap_or_default()),
                ignore_markdown_tables: l.ignore_markdown_tables,
            }),
            "baseline" => Check::Baseline(Baseline {
                max_length: l.max_length,
                max_length_skips_image_alt_tags: l.max_length_skips_image_alt_tags,
                max_repeats: l.max_repeats,
                check_disallowed_characters: l.check_disallowed_characters,
            }),
            "math" => {
                let math = required(l.math, "math")?;
                ensure!(
                    !py_strip(&math).is_empty(),
                    "Math test must have non-empty math expression"
                );
                Check::Math {
                    math,
                    ignore_dollar_delimited: l.ignore_dollar_delimited,
                }
            }
            "format" => Check::Format {
                text: normalized_nonempty(l.text, "text")?,
                format: required(l.format, "format")?.parse().map_err(anyhow::Error::msg)?,
                case_sensitive: l.case_sensitive,
            },
            "footnote" => {
                let marker = required(l.marker, "marker")?;
                ensure!(!marker.is_empty(), "marker field is required");
                ensure!(!marker.contains(' '), "Marker cannot contain whitespace");
                let optional = |field: Option<String>, name: &str| match field.filter(|t| !t.is_empty()) {
                    Some(t) => normalized_nonempty(Some(t), name).map(Some),
                    None => Ok(None),
                };
                Check::Footnote {
                    marker,
                    before: optional(l.appears_before_marker, "appears_before_marker")?,
                    after: optional(l.appears_after_marker, "appears_after_marker")?,
                }
            }
            other => bail!("Invalid test type: {other}"),
        };
        Ok(Self {
            pdf: l.pdf,
            page: l.page,
            id: l.id,
            kind: l.kind,
            max_diffs: l.max_diffs,
            check,
        })
    }

    pub fn run(&self, content: &str) -> bool {
        match &self.check {
            Check::Presence {
                text,
                absent,
                case_sensitive,
                first_n,
                last_n,
            } => {
                let (query, md) = presence_texts(text, *case_sensitive, *first_n, *last_n, content);
                let threshold = 1.0 - self.max_diffs as f64 / query.len().max(1) as f64;
                let found = partial_ratio(&query, &md) / 100.0 >= threshold;
                found != *absent
            }
            Check::Order { before, after } => {
                let md: Vec<char> = normalize_text(content).chars().collect();
                let befores = find_near_matches(before, &md, self.max_diffs);
                let afters = find_near_matches(after, &md, self.max_diffs);
                befores.iter().any(|b| afters.iter().any(|a| b.0 < a.0))
            }
            Check::Table(t) => t.run(content, self.max_diffs),
            Check::Baseline(b) => b.run(content),
            Check::Math {
                math,
                ignore_dollar_delimited,
            } => contains_equation(content, math, *ignore_dollar_delimited),
            Check::Format {
                text,
                format,
                case_sensitive,
            } => {
                let lower = |t: String| if *case_sensitive { t } else { t.to_lowercase() };
                let search: Vec<char> = lower(text.clone()).chars().collect();
                let threshold = 1.0 - self.max_diffs as f64 / search.len().max(1) as f64;
                formatted_texts(content, *format).into_iter().any(|found| {
                    let found: Vec<char> = lower(normalize_text(&found)).chars().collect();
                    partial_ratio(&search, &found) / 100.0 >= threshold
                })
            }
            Check::Footnote { marker, before, after } => self.footnote(content, marker, before, after),
        }
    }

    /// olmocr's `FootnoteTest.run`: the marker appears, and the texts expected just before and
    /// just after it (letters and digits only, within 200 characters) are found near one of its
    /// occurrences.
    fn footnote(&self, content: &str, marker: &str, before: &Option<String>, after: &Option<String>) -> bool {
        let marks = footnote_marks(content, marker);
        if marks.is_empty() {
            return false;
        }
        let chars: Vec<char> = content.chars().collect();
        let clean = |text: &[char]| -> Vec<char> {
            let kept: String = normalize_text(&text.iter().collect::<String>())
                .chars()
                .filter(|c| ALNUM.is_match(c.encode_utf8(&mut [0; 4])))
                .collect();
            kept.to_lowercase().chars().collect()
        };
        let near = |expected: &String, side: &dyn Fn((usize, usize)) -> Vec<char>, keep_end: bool| {
            let target = clean(&expected.chars().collect::<Vec<_>>());
            let threshold = 1.0 - self.max_diffs as f64 / expected.chars().count().max(1) as f64;
            marks.iter().any(|&mark| {
                let text = side(mark);
                if text.is_empty() {
                    return false;
                }
                let n = text.len().min(target.len() * 2);
                let part = match (n, keep_end) {
                    (0, _) => &text[..],
                    (n, true) => &text[text.len() - n..],
                    (n, false) => &text[..n],
                };
                partial_ratio(&target, part) / 100.0 >= threshold
            })
        };
        let text_before = |(start, _): (usize, usize)| clean(&chars[start.saturating_sub(200)..start]);
        let text_after = |(_, end): (usize, usize)| clean(&chars[end..(end + 200).min(chars.len())]);
        before.as_ref().is_none_or(|b| near(b, &text_before, true))
            && after.as_ref().is_none_or(|a| near(a, &text_after, false))
    }
}

/// Python's `md[:first_n] + md[-last_n:]` (a zero counts as absent, as in olmocr's `if`).
/// What a presence test compares: its text and the output's normalised text (both lowercased
/// unless case-sensitive), the output cut to the test's first/last characters.
pub(super) fn presence_texts(
    text: &[char],
    case_sensitive: bool,
    first_n: Option<usize>,
    last_n: Option<usize>,
    content: &str,
) -> (Vec<char>, Vec<char>) {
    let fold = |s: String| if case_sensitive { s } else { s.to_lowercase() };
    let query = fold(text.iter().collect()).chars().collect();
    let md: Vec<char> = fold(normalize_text(content)).chars().collect();
    (query, window(&md, first_n, last_n))
}

pub(super) fn window(md: &[char], first_n: Option<usize>, last_n: Option<usize>) -> Vec<char> {
    let head = |n: usize| &md[..n.min(md.len())];
    let tail = |n: usize| &md[md.len() - n.min(md.len())..];
    match (first_n.filter(|&n| n > 0), last_n.filter(|&n| n > 0)) {
        (Some(f), Some(l)) => [head(f), tail(l)].concat(),
        (Some(f), None) => head(f).to_vec(),
        (None, Some(l)) => tail(l).to_vec(),
        (None, None) => md.to_vec(),
    }
}

fn similar(expected: &str, cell: &str, max_diffs: usize) -> bool {
    let expected: Vec<char> = expected.chars().collect();
    let threshold = (1.0 - max_diffs as f64 / expected.len().max(1) as f64).max(0.5);
    ratio(&expected, &normalize_text(cell).chars().collect::<Vec<_>>()) / 100.0 >= threshold
}

/// How a cell the table test names relates to the one it looks for.
#[derive(Clone, Copy)]
pub enum Relation {
    Up,
    Down,
    Left,
    Right,
    LeftHeading,
    TopHeading,
}

impl Relation {
    pub fn name(self) -> &'static str {
        match self {
            Relation::Up => "up",
            Relation::Down => "down",
            Relation::Left => "left",
            Relation::Right => "right",
            Relation::LeftHeading => "left heading",
            Relation::TopHeading => "top heading",
        }
    }

    /// The cells of `table` that `cell` is so related to.
    pub fn cells(self, table: &Table, cell: (usize, usize)) -> Vec<(usize, usize)> {
        let linked = |map: &HashMap<(usize, usize), BTreeSet<(usize, usize)>>| map[&cell].iter().copied().collect();
        match self {
            Relation::Up => linked(&table.up),
            Relation::Down => linked(&table.down),
            Relation::Left => linked(&table.left),
            Relation::Right => linked(&table.right),
            Relation::LeftHeading => table.left_headings(cell).into_iter().collect(),
            Relation::TopHeading => table.top_headings(cell).into_iter().collect(),
        }
    }
}

impl TableCheck {
    fn run(&self, content: &str, max_diffs: usize) -> bool {
        self.tables(content).iter().any(|table| self.holds_in(table, max_diffs))
    }

    /// The tables of `content` the test looks in.
    pub(super) fn tables(&self, content: &str) -> Vec<Table> {
        let mut tables = if self.ignore_markdown_tables {
            Vec::new()
        } else {
            parse_markdown(content)
        };
        tables.extend(parse_html(content));
        tables
    }

    /// The relations the test names, with the text it expects in each.
    pub(super) fn expected(&self) -> Vec<(Relation, &str)> {
        [
            (Relation::Up, &self.up),
            (Relation::Down, &self.down),
            (Relation::Left, &self.left),
            (Relation::Right, &self.right),
            (Relation::LeftHeading, &self.left_heading),
            (Relation::TopHeading, &self.top_heading),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(relation, text)| (relation, text.as_str()))
        .collect()
    }

    fn holds_in(&self, table: &Table, max_diffs: usize) -> bool {
        let expected = self.expected();
        table
            .cells
            .iter()
            .filter(|(_, text)| similar(&self.cell, text, max_diffs))
            .any(|&(cell, _)| {
                expected.iter().all(|(relation, text)| {
                    relation
                        .cells(table, cell)
                        .into_iter()
                        .any(|other| similar(text, table.text(other), max_diffs))
                })
            })
    }
}

static IMAGE_TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"!\[.*?\]\(.*?\)").unwrap());
/// Python's `str.isalnum` per character: letters and numbers.
static ALNUM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\p{L}\p{N}]").unwrap());

impl Baseline {
    fn run(&self, content: &str) -> bool {
        self.failure(content).is_none()
    }

    /// Why `content` fails the baseline test, or `None` when it passes.
    pub(super) fn failure(&self, content: &str) -> Option<String> {
        if let Some(max_length) = self.max_length {
            let counted = if self.max_length_skips_image_alt_tags {
                IMAGE_TAG.replace_all(content, "")
            } else {
                content.into()
            };
            let length = ALNUM.find_iter(&counted).count();
            return (length > max_length).then(|| format!("{length} letters and digits, more than {max_length}"));
        }
        if ALNUM.find_iter(content).count() == 0 {
            return Some("no letters or digits".into());
        }
        let repeats = ngram_repeats(content, 5);
        if let Some((size, count)) = repeats.iter().enumerate().find(|(_, &count)| count > self.max_repeats) {
            return Some(format!(
                "its last {} characters repeat {count} times at its end, more than {}",
                size + 1,
                self.max_repeats
            ));
        }
        if !self.check_disallowed_characters {
            return None;
        }
        content
            .chars()
            .find(|&c| disallowed(c))
            .map(|c| format!("a disallowed character, {c} (U+{:04X})", c as u32))
    }
}

/// olmocr's `RepeatDetector.ngram_repeats`: for each n-gram size, how many times the text's last
/// n characters repeat back to back at its end (whitespace collapsed first).
pub fn ngram_repeats(content: &str, max_size: usize) -> Vec<usize> {
    let text: Vec<char> = collapse_whitespace(content).chars().collect();
    (1..=max_size)
        .map(|size| {
            if text.len() < size {
                return 0;
            }
            let target = &text[text.len() - size..];
            let mut count = 0;
            let mut end = text.len();
            while end >= size && &text[end - size..end] == target {
                count += 1;
                end -= size;
            }
            count
        })
        .collect()
}

/// CJK ideographs, kana and emoji: characters olmocr's baseline treats as signs of a model
/// switching script.
fn disallowed(c: char) -> bool {
    matches!(c,
        '\u{4e00}'..='\u{9fff}' | '\u{3040}'..='\u{309f}' | '\u{30a0}'..='\u{30ff}'
        | '\u{1f600}'..='\u{1f64f}' | '\u{1f300}'..='\u{1f5ff}' | '\u{1f680}'..='\u{1f6ff}' | '\u{1f1e0}'..='\u{1f1ff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_detector_matches_olmocr() {
        assert_eq!(ngram_repeats("abab", 3), [1, 2, 1]);
        assert_eq!(ngram_repeats("aabaabaa", 3), [2, 1, 2]);
        assert_eq!(ngram_repeats("abcabcabcabc", 5), [1, 1, 4, 1, 1]);
        assert_eq!(ngram_repeats("abc", 5), [1, 1, 1, 0, 0]);
    }

    #[test]
    fn lines_are_validated_like_olmocr() {
        let order =
            r#"{"pdf": "a.pdf", "page": 1, "id": "t", "type": "order", "before": "ab", "after": "cd", "max_diffs": 2}"#;
        assert!(Test::parse(order).unwrap_err().to_string().contains("too large"));
        assert!(Test::parse(r#"{"pdf": "a.pdf", "page": 1, "id": "t", "type": "present", "txt": "x"}"#).is_err());
        let t = Test::parse(r#"{"pdf": "a.pdf", "page": 1, "id": "t", "type": "absent", "text": "Page 3"}"#).unwrap();
        assert!(t.run("intro\n\nbody"));
        assert!(!t.run("body **Page 3**"));
        let note = r#"{"pdf": "a.pdf", "page": 1, "id": "f", "type": "footnote", "marker": "2", "appears_before_marker": "the end", "appears_after_marker": "See Smith"}"#;
        let t = Test::parse(note).unwrap();
        assert!(t.run("It was the end<sup>2</sup>.\n\n² See Smith (1999)."));
        assert!(!t.run("It was the end.\n\n2 See Smith (1999)."));
        let bold = r#"{"pdf": "a.pdf", "page": 1, "id": "b", "type": "format", "format": "bold", "text": "Results", "case_sensitive": false}"#;
        assert!(Test::parse(bold).unwrap().run("## **RESULTS**"));
    }
}
