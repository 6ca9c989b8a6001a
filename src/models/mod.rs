//! Model architectures, each in the shape of its reference implementation, behind the one
//! interface the engine drives.

pub mod qwen2_5_vl;

use anyhow::Result;
use candle_core::Tensor;
use image::DynamicImage;

use crate::ops::attention::AttentionCache;

/// What the engine needs to know about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: &'static str,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// End-of-generation tokens.
    pub stop_token_ids: Vec<u32>,
    /// The placeholder token image embeddings replace.
    pub image_token_id: u32,
    /// Tokens generation must never emit (their logits are masked).
    pub masked_token_ids: Vec<u32>,
}

/// An image ready for the vision tower.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Patch rows (Qwen2.5-VL) or a pixel tensor, as the model's processor lays it out.
    pub pixel_values: Tensor,
    /// (t, h, w) of the patch grid.
    pub grid_thw: [usize; 3],
    /// Content hash of the processed pixels: the key of the vision-output cache and of the
    /// KV-cache blocks that hold this image's tokens.
    pub hash: u64,
    /// Image tokens in the prompt (rows the vision tower returns).
    pub num_tokens: usize,
}

/// A prompt ready for the model: token ids with the image placeholders expanded, the image, and
/// the positions (three axes for M-RoPE; models with 1D positions use the first).
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub input_ids: Vec<u32>,
    pub image: PreparedImage,
    /// Index of the first image placeholder in `input_ids`.
    pub image_start: usize,
    pub positions: [Vec<i64>; 3],
    /// Generated token n (0-based) sits at position `input_ids.len() + n + rope_delta`.
    pub rope_delta: i64,
}

impl PreparedPrompt {
    /// The token range of the image placeholders.
    pub fn image_span(&self) -> (usize, usize) {
        (self.image_start, self.image_start + self.image.num_tokens)
    }
}

/// The interface the engine drives: a model owns its math and its prompt format; the engine
/// owns scheduling, the KV cache and sampling.
pub trait VisionLanguageModel: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// Image + instruction → token ids, image tensor and positions (runs in the caller's
    /// thread, not the engine's).
    fn prepare(&self, image: &DynamicImage, instruction: &str) -> Result<PreparedPrompt>;
    /// The vision tower over several images at once; one block of rows per image.
    fn encode_images(&self, images: &[&PreparedImage]) -> Result<Vec<Tensor>>;
    /// Text-token embeddings (rows in the model's dtype).
    fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor>;
    /// The decoder over a flat batch of rows at `positions`, on top of `cache`; f32 logits of
    /// the rows in `logit_rows`.
    fn forward(
        &self,
        embeds: &Tensor,
        positions: &[Vec<i64>; 3],
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor>;
    fn decode(&self, tokens: &[u32]) -> Result<String>;
}
