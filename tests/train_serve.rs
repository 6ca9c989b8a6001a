//! Training = serving: for every model card and both model families, the token ids a training
//! example puts before its answer are the ids the engine builds when it serves that page with
//! that card, so a model fine-tuned here is trained on exactly the sequence it is later served.

use std::path::PathBuf;

use candle_core::{DType, Device};
use image::DynamicImage;
use vellum::hub::ModelFiles;
use vellum::models::{deepseek_ocr, qwen2_5_vl, qwen2_vl, VisionLanguageModel};
use vellum::pipeline::card::{self, finetuning_prompt, Card, Prompt};
use vellum::train::data::Sample;
use vellum::train::model::Trainable;

use crate::common;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What the pipeline asks a page with this card (olmOCR v0.1's prompt around an anchor text).
fn served_instruction(card: &Card) -> String {
    match &card.prompt {
        Prompt::Fixed(text) => text.clone(),
        Prompt::OlmocrAnchored { .. } => finetuning_prompt("Page dimensions: 612.0x792.0\n[72x700]Quarterly report"),
    }
}

/// A page as `ocr prepare` and `ocr synth` write it: the image marker, a newline, the instruction.
fn sample(instruction: &str) -> Sample {
    Sample {
        id: "page".into(),
        kind: "document".into(),
        prompt: format!("<image>\n{instruction}"),
        answer: "Quarterly report\nRevenue rose.".into(),
        image: "page.png".into(),
    }
}

/// The ids before the first supervised position, from a training sequence's inputs and targets.
fn trained_prompt(name: &str, input_ids: &[u32], targets: &[i64]) -> Vec<u32> {
    let first = targets
        .iter()
        .position(|&t| t >= 0)
        .unwrap_or_else(|| panic!("{name}: no target"));
    input_ids[..=first].to_vec()
}

fn qwen_cards() -> Vec<Card> {
    card::all()
        .into_iter()
        .filter(|c| c.architecture != "NanoDeepseekOCR")
        .collect()
}

#[test]
fn qwen_training_prompts_are_the_served_prompts_for_every_card() {
    let image = DynamicImage::ImageRgb8(common::open_rgb(
        &fixtures().join("qwen2_5_vl/models/gqa_window4/page_140x196.png"),
    ));
    let qwen2_5 = {
        let files = ModelFiles::from_dir(&fixtures().join("qwen2_5_vl/models/gqa_window4/model")).unwrap();
        qwen2_5_vl::Model::load(&files, DType::F32, &Device::Cpu).unwrap()
    };
    let qwen2 = {
        let dir = fixtures().join("qwen2_vl/models/gqa/model");
        let root = common::read_json(dir.join("config.json"));
        qwen2_vl::load(&ModelFiles::from_dir(&dir).unwrap(), root, DType::F32, &Device::Cpu).unwrap()
    };
    let cards = qwen_cards();
    assert_eq!(cards.len(), 3, "rolmocr, olmocr-v0.1, olmocr-2");
    for (family, model) in [("Qwen2.5-VL", &qwen2_5), ("Qwen2-VL", &qwen2)] {
        for card in &cards {
            let name = format!("{family} / {}", card.name);
            let instruction = served_instruction(card);
            let s = sample(&instruction);
            assert_eq!(s.instruction(), instruction, "{name}");
            let (example, _) = model.example(&s, &image, 4096).unwrap();
            let served = model.prepare(&image, &instruction).unwrap().input_ids;
            assert_eq!(
                trained_prompt(&name, &example.input_ids, &example.targets),
                served,
                "{name}"
            );
        }
    }
}

#[test]
fn nano_training_prompts_are_the_served_prompts() {
    let files = ModelFiles::from_dir(&fixtures().join("deepseek_ocr/gqa")).unwrap();
    let model = deepseek_ocr::Model::load(&files, DType::F32, &Device::Cpu).unwrap();
    let image = image::open(fixtures().join("train/data/images/receipt.png")).unwrap();
    let card = card::all().into_iter().find(|c| c.name == "nano-deepseek-ocr").unwrap();
    // The card's prompt, the model's default, and each page kind's instruction `prepare` writes.
    let mut instructions = vec![served_instruction(&card), model.info().default_instruction.to_string()];
    instructions.extend(
        [
            deepseek_ocr::DOCUMENT_INSTRUCTION,
            deepseek_ocr::TABLE_INSTRUCTION,
            deepseek_ocr::DIAGRAM_INSTRUCTION,
        ]
        .map(String::from),
    );
    for instruction in instructions {
        let s = sample(&instruction);
        let (example, _) = model.example(&s, &image, 4096).unwrap();
        let served = model.prepare(&image, &instruction).unwrap().input_ids;
        assert_eq!(
            trained_prompt(&instruction, &example.input_ids, &example.targets),
            served,
            "{instruction:?}"
        );
    }
}

/// `ocr prepare --format olmocr|rolmocr` phrases pages with the cards' own prompts, byte for byte.
#[test]
fn prepared_prompts_are_the_cards_prompts() {
    let fixed = |name: &str| match card::all().into_iter().find(|c| c.name == name).unwrap().prompt {
        Prompt::Fixed(text) => text,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(vellum::train::prepare::OLMOCR_V4_PROMPT, fixed("olmocr-2"));
    assert_eq!(vellum::ROLMOCR_PROMPT, fixed("rolmocr"));
    assert!(
        vellum::ROLMOCR_PROMPT.ends_with('\n'),
        "the exact prompt, newline and all"
    );
}
