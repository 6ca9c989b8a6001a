//! Why a test failed on one output: what the test looks for, and the nearest the output came to
//! it, found with the test's own machinery (the fuzzy window `partial_ratio` scores, the
//! table cell `ratio` is closest to, the equations and formatted texts the test reads), so a
//! reader sees the comparison the score came from.

use super::checks::{presence_texts, Check, Test};
use super::fuzzy::{best_window, partial_ratio, ratio};
use super::markup::{footnote_marks, formatted_texts, Format};
use super::math::equations;
use super::normalize::normalize_text;

/// A label and the text it introduces (empty when the label says it all).
pub struct Part {
    pub label: String,
    pub text: String,
}

fn part(label: impl Into<String>, text: impl Into<String>) -> Part {
    Part {
        label: label.into(),
        text: text.into(),
    }
}

pub struct Explanation {
    pub expected: Vec<Part>,
    pub nearest: Vec<Part>,
}

/// Characters of context shown around a footnote marker, and of a page's end for a baseline.
const CONTEXT: usize = 80;

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

fn string(chars: &[char]) -> String {
    chars.iter().collect()
}

/// The window of `text` nearest to `query`, labelled with its similarity (and where it starts,
/// for order tests, whose verdict depends on it).
fn nearest_window(query: &[char], text: &[char], what: &str, with_position: bool) -> Part {
    match best_window(query, text) {
        None if text.is_empty() => part(format!("{what}: the output is empty"), ""),
        None => part(format!("{what}: nothing similar"), ""),
        Some((start, end, score)) => {
            let at = if with_position {
                format!(" at character {start}")
            } else {
                String::new()
            };
            part(format!("{what}, {score:.0}% similar{at}"), string(&text[start..end]))
        }
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Heading => "heading",
        Format::Bold => "bold",
        Format::Italic => "italic",
    }
}

/// What `test` looks for and, in `content` (an output it failed on), what came nearest.
pub fn explain(test: &Test, content: &str) -> Explanation {
    match &test.check {
        Check::Presence {
            text,
            absent,
            case_sensitive,
            first_n,
            last_n,
        } => {
            let (query, md) = presence_texts(text, *case_sensitive, *first_n, *last_n, content);
            let mut label = String::from(if *absent { "must not appear" } else { "must appear" });
            match (first_n.filter(|&n| n > 0), last_n.filter(|&n| n > 0)) {
                (Some(f), Some(l)) => label += &format!(" in the first {f} or last {l} characters"),
                (Some(f), None) => label += &format!(" in the first {f} characters"),
                (None, Some(l)) => label += &format!(" in the last {l} characters"),
                (None, None) => {}
            }
            if !case_sensitive {
                label += " (any case)";
            }
            if test.max_diffs > 0 {
                label += &format!(", up to {} edits", test.max_diffs);
            }
            let what = if *absent { "found" } else { "nearest" };
            Explanation {
                expected: vec![part(label, string(text))],
                nearest: vec![nearest_window(&query, &md, what, false)],
            }
        }
        Check::Order { before, after } => {
            let md = chars(&normalize_text(content));
            Explanation {
                expected: vec![part("first", string(before)), part("then", string(after))],
                nearest: vec![
                    nearest_window(before, &md, "first", true),
                    nearest_window(after, &md, "then", true),
                ],
            }
        }
        Check::Table(table_check) => {
            let mut expected = vec![part("cell", &table_check.cell)];
            expected.extend(table_check.expected().into_iter().map(|(r, text)| part(r.name(), text)));
            let cell = chars(&table_check.cell);
            let tables = table_check.tables(content);
            let closest = tables
                .iter()
                .flat_map(|t| t.cells.iter().map(move |(c, text)| (t, *c, text)))
                .map(|(t, c, text)| (ratio(&cell, &chars(&normalize_text(text))), t, c, text))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let nearest = match closest {
                None => vec![part("no table found", "")],
                Some((score, table, c, text)) => {
                    let mut parts = vec![part(format!("nearest cell, {score:.0}% similar"), text)];
                    for (relation, _) in table_check.expected() {
                        let texts: Vec<&str> = relation.cells(table, c).into_iter().map(|o| table.text(o)).collect();
                        parts.push(if texts.is_empty() {
                            part(format!("{}: none", relation.name()), "")
                        } else {
                            part(relation.name(), texts.join(" | "))
                        });
                    }
                    parts
                }
            };
            Explanation { expected, nearest }
        }
        Check::Math {
            math,
            ignore_dollar_delimited,
        } => {
            let want = chars(math);
            let nearest = equations(content, *ignore_dollar_delimited)
                .into_iter()
                .map(|e| (ratio(&want, &chars(&e)), e))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            Explanation {
                expected: vec![part("equation", math)],
                nearest: vec![match nearest {
                    None => part("no equations found", ""),
                    Some((score, e)) => part(format!("nearest equation, {score:.0}% similar"), e),
                }],
            }
        }
        Check::Baseline(baseline) => {
            let expected = match baseline.max_length {
                Some(n) => format!("at most {n} letters and digits"),
                None => format!(
                    "text, its end repeated at most {} times{}",
                    baseline.max_repeats,
                    if baseline.check_disallowed_characters {
                        ", no CJK characters or emoji"
                    } else {
                        ""
                    }
                ),
            };
            let page = chars(content);
            let end = string(&page[page.len().saturating_sub(CONTEXT)..]);
            let nearest = match baseline.failure(content) {
                Some(why) => part(format!("{why}; the output ends"), end),
                None => part("passes on this output", ""),
            };
            Explanation {
                expected: vec![part(expected, "")],
                nearest: vec![nearest],
            }
        }
        Check::Format {
            text,
            format,
            case_sensitive,
        } => {
            let fold = |t: String| if *case_sensitive { t } else { t.to_lowercase() };
            let search = chars(&fold(text.clone()));
            let name = format_name(*format);
            let nearest = formatted_texts(content, *format)
                .into_iter()
                .map(|found| (partial_ratio(&search, &chars(&fold(normalize_text(&found)))), found))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            Explanation {
                expected: vec![part(format!("{name} text"), text)],
                nearest: vec![match nearest {
                    None => part(format!("no {name} text"), ""),
                    Some((score, found)) => part(format!("nearest {name} text, {score:.0}% similar"), found),
                }],
            }
        }
        Check::Footnote { marker, before, after } => {
            let mut expected = vec![part("marker", marker)];
            expected.extend(before.iter().map(|b| part("just before it", b)));
            expected.extend(after.iter().map(|a| part("just after it", a)));
            let marks = footnote_marks(content, marker);
            let page = chars(content);
            let nearest = match marks.first() {
                None => part("marker not found", ""),
                Some(&(start, end)) => part(
                    format!("around the first of {} markers", marks.len()),
                    string(&page[start.saturating_sub(CONTEXT)..(end + CONTEXT).min(page.len())]),
                ),
            };
            Explanation {
                expected,
                nearest: vec![nearest],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(line: &str, content: &str) -> Explanation {
        let test = Test::parse(line).unwrap();
        assert!(!test.run(content), "the test must fail on the content");
        explain(&test, content)
    }

    #[test]
    fn nearest_matches_are_what_each_test_compared() {
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "p", "type": "present", "text": "quick brown fox"}"#,
            "The quick brwn fox jumps.",
        );
        assert_eq!(e.expected[0].text, "quick brown fox");
        assert_eq!(e.nearest[0].text, " quick brwn fox");
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "o", "type": "order", "before": "Alpha", "after": "Omega"}"#,
            "Omega first, Alpha last.",
        );
        assert_eq!(e.nearest[0].label, "first, 100% similar at character 13");
        assert_eq!(e.nearest[1].label, "then, 100% similar at character 0");
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "t", "type": "table", "cell": "12", "up": "B"}"#,
            "| A | B |\n|---|---|\n| 12 | 4 |",
        );
        assert_eq!(
            e.expected.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(),
            ["cell", "up"]
        );
        assert_eq!((e.nearest[0].text.as_str(), e.nearest[1].text.as_str()), ("12", "A"));
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "t", "type": "table", "cell": "12", "left": "B"}"#,
            "no tables",
        );
        assert_eq!(e.expected[1].text, "B");
        assert_eq!(e.nearest[0].label, "no table found");
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "m", "type": "math", "math": "a^2 + b^2 = c^2"}"#,
            "$$x = 1$$ and $$a^2 + b^2 = d^2$$",
        );
        assert_eq!(e.nearest[0].text, "a^2 + b^2 = d^2");
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "b", "type": "baseline"}"#,
            &"ab ".repeat(40),
        );
        assert!(e.nearest[0].label.contains("repeat"), "{}", e.nearest[0].label);
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "f", "type": "format", "format": "bold", "text": "Results"}"#,
            "**Resultz** and Results",
        );
        assert_eq!(e.nearest[0].label, "nearest bold text, 92% similar");
        assert_eq!(e.nearest[0].text, "Resultz");
        let e = explained(
            r#"{"pdf": "a.pdf", "page": 1, "id": "n", "type": "footnote", "marker": "2", "appears_before_marker": "the end"}"#,
            "It was the start<sup>2</sup>.",
        );
        assert_eq!(e.expected[1].text, "the end");
        assert_eq!(e.nearest[0].text, "It was the start<sup>2</sup>.");
    }
}
