//! What a model's answer means: plain text (RolmOCR, nano DeepSeek-OCR), or olmOCR's structured
//! page response — JSON for olmOCR v0.1, markdown with YAML front matter for olmOCR-2 — read
//! with the semantics of olmocr's `FrontMatterParser` and `PageResponse` (allenai/olmocr,
//! `olmocr/train/front_matter.py`, `olmocr/prompts/prompts.py`). An answer that does not parse
//! is an error, which the document runner treats as a bad page (retries, then fallback).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    Plain,
    /// `{"primary_language", "is_rotation_valid", "rotation_correction", "is_table",
    /// "is_diagram", "natural_text"}` (olmOCR v0.1).
    OlmocrJson,
    /// `---\nprimary_language: en\n...\n---\ntext` (olmOCR-2).
    OlmocrYaml,
}

/// olmOCR's page-level fields (`PageResponse` without its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageFacts {
    pub primary_language: Option<String>,
    pub is_rotation_valid: bool,
    /// Degrees of clockwise rotation the page needs: 0, 90, 180 or 270.
    pub rotation_correction: u32,
    pub is_table: bool,
    pub is_diagram: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub facts: Option<PageFacts>,
}

const FIELDS: [&str; 5] = [
    "primary_language",
    "is_rotation_valid",
    "rotation_correction",
    "is_table",
    "is_diagram",
];

pub fn parse(format: AnswerFormat, raw: &str) -> Result<Answer, String> {
    match format {
        AnswerFormat::Plain => Ok(Answer {
            text: raw.to_string(),
            facts: None,
        }),
        AnswerFormat::OlmocrJson => parse_json(raw),
        AnswerFormat::OlmocrYaml => {
            let (front, text) = front_matter(raw);
            let facts = facts(&front)?;
            Ok(Answer {
                text,
                facts: Some(facts),
            })
        }
    }
}

/// olmOCR v0.1's pipeline: `PageResponse(**json.loads(answer))`, whose checks are strict (booleans
/// must be booleans, the language text or null).
fn parse_json(raw: &str) -> Result<Answer, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let map = value.as_object().ok_or("the answer is not a JSON object")?;
    let field = |name: &str| map.get(name).ok_or(format!("missing required field '{name}'"));
    if let Some(extra) = map
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) && *k != "natural_text")
    {
        return Err(format!("unexpected field '{extra}'"));
    }
    let boolean = |name: &str| field(name)?.as_bool().ok_or(format!("{name} must be a boolean"));
    let text_or_null = |name: &str| match field(name)? {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        _ => Err(format!("{name} must be text or null")),
    };
    let rotation_correction = field("rotation_correction")?
        .as_u64()
        .filter(|r| [0, 90, 180, 270].contains(r))
        .ok_or("rotation_correction must be one of 0, 90, 180, 270")? as u32;
    let facts = PageFacts {
        primary_language: text_or_null("primary_language")?,
        is_rotation_valid: boolean("is_rotation_valid")?,
        rotation_correction,
        is_table: boolean("is_table")?,
        is_diagram: boolean("is_diagram")?,
    };
    Ok(Answer {
        text: text_or_null("natural_text")?.unwrap_or_default(),
        facts: Some(facts),
    })
}

/// `FrontMatterParser._extract_front_matter_and_text`: the YAML between a leading `---\n` and
/// the next `\n---`, and the stripped text after it; without one (or when the YAML does not
/// parse), no fields and the whole answer stripped.
fn front_matter(raw: &str) -> (serde_json::Map<String, Value>, String) {
    if let Some(rest) = raw.strip_prefix("---\n") {
        if let Some(end) = rest.find("\n---") {
            if let Some(map) = yaml_mapping(&rest[..end]) {
                return (map, rest[end + 4..].trim().to_string());
            }
        }
    }
    (serde_json::Map::new(), raw.trim().to_string())
}

/// A flat YAML mapping of scalars as PyYAML's `safe_load` reads it (YAML 1.1 booleans and
/// nulls, integers, quoted and plain strings); None where that is not what the text is.
fn yaml_mapping(text: &str) -> Option<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(':')?;
        if key.starts_with(' ') || key.trim().is_empty() {
            return None;
        }
        let value = value.trim();
        let value = value.split_once(" #").map_or(value, |(v, _)| v.trim());
        map.insert(key.trim().to_string(), yaml_scalar(value)?);
    }
    Some(map)
}

fn yaml_scalar(v: &str) -> Option<Value> {
    Some(match v {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Value::Bool(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Value::Bool(false),
        _ if v.len() >= 2 && (v.starts_with('"') && v.ends_with('"')) => {
            Value::String(serde_json::from_str::<String>(v).ok()?)
        }
        _ if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') => {
            Value::String(v[1..v.len() - 1].replace("''", "'"))
        }
        _ if v.starts_with(['[', '{', '"', '\'', '&', '*', '!', '|', '>', '%', '@', '`']) => return None,
        _ => match v.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(v.to_string()),
        },
    })
}

/// `FrontMatterParser._parse_front_matter` into `PageResponse`: every field present, no other
/// field, strings "true"/"false" and digit strings converted, a boolean language read as none.
fn facts(front: &serde_json::Map<String, Value>) -> Result<PageFacts, String> {
    let field = |name: &str| front.get(name).ok_or(format!("missing required field '{name}'"));
    if let Some(extra) = front.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unexpected field '{extra}'"));
    }
    let boolean = |name: &str| -> Result<bool, String> {
        match field(name)? {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => Ok(s.to_lowercase() == "true"),
            other => Err(format!("{name} is {other}, not a boolean")),
        }
    };
    let primary_language = match field("primary_language")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::String(_) | Value::Bool(_) | Value::Null => None,
        other => return Err(format!("primary_language is {other}, not text")),
    };
    let rotation_correction = match field("rotation_correction")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|r| [0, 90, 180, 270].contains(r))
    .ok_or("rotation_correction must be one of 0, 90, 180, 270")? as u32;
    Ok(PageFacts {
        primary_language,
        is_rotation_valid: boolean("is_rotation_valid")?,
        rotation_correction,
        is_table: boolean("is_table")?,
        is_diagram: boolean("is_diagram")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_its_failures() {
        let ok = "---\nprimary_language: en\nis_rotation_valid: True\nrotation_correction: 0\nis_table: false\nis_diagram: False\n---\n# Title\n\nBody.\n";
        let a = parse(AnswerFormat::OlmocrYaml, ok).unwrap();
        assert_eq!(a.text, "# Title\n\nBody.");
        assert_eq!(a.facts.unwrap().primary_language.as_deref(), Some("en"));
        let rotated = ok.replace(
            "is_rotation_valid: True\nrotation_correction: 0",
            "is_rotation_valid: false\nrotation_correction: 90",
        );
        let f = parse(AnswerFormat::OlmocrYaml, &rotated).unwrap().facts.unwrap();
        assert!(!f.is_rotation_valid && f.rotation_correction == 90);
        for bad in [
            "no front matter at all",
            &ok.replace("is_table: false\n", ""),
            &ok.replace("rotation_correction: 0", "rotation_correction: 45"),
            &ok.replace("is_diagram: False\n", "is_diagram: False\nextra: 1\n"),
        ] {
            assert!(parse(AnswerFormat::OlmocrYaml, bad).is_err(), "{bad}");
        }
    }
}
