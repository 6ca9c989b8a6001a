//! config.json of a vellum nano DeepSeek-OCR directory (`ocr convert` writes it from a trainer
//! checkpoint; the fork itself keeps its sizes in code).

use serde::{Deserialize, Serialize};

use super::{clip, gpt, sam};

/// config.json of a vellum nano DeepSeek-OCR directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub architectures: Vec<String>,
    /// Images are padded to base_size × base_size (1024; 512/640/1280 for Tiny/Small/Large).
    pub base_size: usize,
    pub image_token_id: u32,
    /// End tokens (`<|assistant_end|>`); the original trainer taught none, so may be empty.
    pub eos_token_ids: Vec<u32>,
    pub sam: sam::SamConfig,
    pub clip: clip::ClipConfig,
    pub gpt: gpt::GptConfig,
}
