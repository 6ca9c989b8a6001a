//! Model cards: how each known checkpoint is meant to be run — its prompt, how pages are
//! rendered for it, its sampling defaults and what its answer looks like. The cards are the
//! `models/<name>/card.json` files of this repository, built in.
//!
//! A card is chosen by name, else by the hub id the model was given as (or the HF-cache
//! folder it sits in), else by architecture: nano DeepSeek-OCR has its own; any other
//! Qwen2-VL / Qwen2.5-VL checkpoint gets RolmOCR's, with a warning naming the choice.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::answer::AnswerFormat;
use crate::pdf::RenderMode;

const CARDS: [&str; 4] = [
    include_str!("../../models/rolmocr/card.json"),
    include_str!("../../models/olmocr-v0.1/card.json"),
    include_str!("../../models/olmocr-2/card.json"),
    include_str!("../../models/nano-deepseek-ocr/card.json"),
];

/// What a page is asked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// The same instruction for every page.
    Fixed(String),
    /// olmOCR v0.1: the page's anchor text (its text runs and image boxes with coordinates, at
    /// most `target_length` characters) inside [`finetuning_prompt`].
    OlmocrAnchored { target_length: usize },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sampling {
    pub temperature: f64,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default = "no_penalty")]
    pub repetition_penalty: f32,
}

fn no_penalty() -> f32 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct Card {
    pub name: String,
    pub hub_ids: Vec<String>,
    pub architecture: String,
    pub prompt: Prompt,
    #[serde(deserialize_with = "render_mode")]
    pub render: RenderMode,
    pub sampling: Sampling,
    pub answer: AnswerFormat,
}

fn render_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RenderMode, D::Error> {
    let text = String::deserialize(d)?;
    match text.strip_prefix("olmocr=") {
        Some(longest) => longest
            .parse()
            .map(|longest| RenderMode::Olmocr { longest })
            .map_err(serde::de::Error::custom),
        None => text.parse().map_err(serde::de::Error::custom),
    }
}

/// What a caller sets over a card; None keeps the card's.
#[derive(Debug, Clone, Default)]
pub struct CardOverrides {
    pub prompt: Option<String>,
    pub mode: Option<RenderMode>,
    pub temperature: Option<f64>,
    pub max_new_tokens: Option<usize>,
}

/// Every built-in card.
pub fn all() -> Vec<Card> {
    CARDS
        .iter()
        .map(|c| serde_json::from_str(c).expect("the built-in cards parse (tested)"))
        .collect()
}

/// olmocr's `build_finetuning_prompt`: the instruction around a page's anchor text.
pub fn finetuning_prompt(anchor: &str) -> String {
    format!(
        "Below is the image of one page of a document, as well as some raw textual content that was previously \
         extracted for it. Just return the plain text representation of this document as if you were reading it \
         naturally.\nDo not hallucinate.\nRAW_TEXT_START\n{anchor}\nRAW_TEXT_END"
    )
}

/// The card for a model given as `spec` whose config names `architecture`; `chosen` names one. Returns the card and, when it was a guess, a warning saying so.
pub fn for_model(spec: &str, architecture: &str, chosen: Option<&str>) -> Result<(Card, Option<String>)> {
    let cards = all();
    if let Some(name) = chosen {
        return match cards.into_iter().find(|c| c.name == name) {
            Some(card) => Ok((card, None)),
            None => bail!(
                "no model card named {name:?}; the cards are: {}",
                all().iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
    }
    if let Some(id) = crate::hub::repo_id(spec) {
        if let Some(card) = cards
            .iter()
            .find(|c| c.hub_ids.iter().any(|h| h.eq_ignore_ascii_case(&id)))
        {
            return Ok((card.clone(), None));
        }
    }
    if let Some(card) = cards
        .iter()
        .find(|c| c.architecture == architecture && c.hub_ids.is_empty())
    {
        return Ok((card.clone(), None));
    }
    let rolmocr = cards.into_iter().find(|c| c.name == "rolmocr").expect("built in");
    Ok((
        rolmocr,
        Some(format!(
            "no model card for {spec}: running it as RolmOCR (its prompt, the FinePDFs render, plain-text answers); \
             choose another card by name"
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_chosen_by_flag_hub_id_cache_folder_or_architecture() {
        let pick = |spec: &str, arch: &str, flag: Option<&str>| for_model(spec, arch, flag).unwrap();
        assert_eq!(pick("allenai/olmOCR-2-7B-1025-FP8", "", None).0.name, "olmocr-2");
        assert_eq!(
            pick("allenai/olmOCR-7B-0225-preview@main", "", None).0.name,
            "olmocr-v0.1"
        );
        let cached = "/root/.cache/huggingface/hub/models--reducto--RolmOCR/snapshots/abc";
        let (card, warning) = pick(cached, "Qwen2_5_VLForConditionalGeneration", None);
        assert_eq!((card.name.as_str(), warning), ("rolmocr", None));
        assert_eq!(
            pick("runs/s2/best", "NanoDeepseekOCR", None).0.name,
            "nano-deepseek-ocr"
        );
        let (card, warning) = pick("my/finetune", "Qwen2VLForConditionalGeneration", None);
        assert_eq!(card.name, "rolmocr");
        assert!(warning.unwrap().contains("choose another card"));
        assert_eq!(
            pick("my/finetune", "", Some("olmocr-2")).0.render,
            RenderMode::Olmocr { longest: 1288 }
        );
        assert!(for_model("x", "", Some("nope")).is_err());
    }
}
