//! Trainer checkpoints (`checkpoints/step_N.pt`: a pickled state dict of NanoDeepseekOCR) to a
//! vellum model directory: the same tensors as model.safetensors, a config.json whose sizes are
//! read off the tensor shapes, and the tokenizer.
//!
//! Shapes cannot tell the GPT's head count (c_q is n_embd × n_embd either way): it is given
//! (the tier-2 fork uses 16). CLIP's heads follow CLIP-L's head width of 64; SAM's come from
//! its relative-position tables, and its global blocks are those whose tables span the whole
//! map rather than a window.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use tokenizers::Tokenizer;

use super::clip::ClipConfig;
use super::gpt::GptConfig;
use super::sam::SamConfig;
use super::{Config, ARCHITECTURE};

pub(super) fn count(tensors: &HashMap<String, Tensor>, prefix: &str) -> usize {
    (0..)
        .take_while(|i| tensors.keys().any(|k| k.starts_with(&format!("{prefix}.{i}."))))
        .count()
}

fn shape<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a [usize]> {
    Ok(tensors
        .get(name)
        .with_context(|| format!("the checkpoint has no {name}"))?
        .dims())
}

/// The config of a state dict.
pub fn infer_config(
    tensors: &HashMap<String, Tensor>,
    n_head: usize,
    base_size: usize,
    image_token_id: u32,
    eos: Vec<u32>,
) -> Result<Config> {
    let pos = shape(tensors, "sam_model.pos_embed")?;
    let (grid, embed_dim) = (pos[1], pos[3]);
    let patch_size = shape(tensors, "sam_model.patch_embed.proj.weight")?[2];
    let depth = count(tensors, "sam_model.blocks");
    let mut global_attn_indexes = Vec::new();
    let mut window_size = 14;
    let mut head_dim = embed_dim;
    for i in 0..depth {
        let rel = shape(tensors, &format!("sam_model.blocks.{i}.attn.rel_pos_h"))?;
        head_dim = rel[1];
        if rel[0] == 2 * grid - 1 {
            global_attn_indexes.push(i);
        } else {
            window_size = rel[0].div_ceil(2);
        }
    }
    let sam = SamConfig {
        img_size: grid * patch_size,
        patch_size,
        embed_dim,
        depth,
        num_heads: embed_dim / head_dim,
        window_size,
        global_attn_indexes,
        out_chans: shape(tensors, "sam_model.neck.0.weight")?[0],
        net_2_chans: shape(tensors, "sam_model.net_2.weight")?[0],
        net_3_chans: shape(tensors, "sam_model.net_3.weight")?[0],
    };
    let hidden_size = shape(tensors, "vision_model.embeddings.class_embedding")?[0];
    let clip = ClipConfig {
        hidden_size,
        num_layers: count(tensors, "vision_model.transformer.layers"),
        num_heads: (hidden_size / 64).max(1),
        ffn_hidden_size: shape(tensors, "vision_model.transformer.layers.0.mlp.fc1.weight")?[0],
        num_positions: shape(tensors, "vision_model.embeddings.position_embedding.weight")?[0],
    };
    let wte = shape(tensors, "gpt.transformer.wte.weight")?;
    let (vocab_size, n_embd) = (wte[0], wte[1]);
    if n_head == 0 || !n_embd.is_multiple_of(n_head) {
        bail!("--n-head {n_head} does not divide the GPT width {n_embd}");
    }
    let head_dim = n_embd / n_head;
    let gpt = GptConfig {
        vocab_size,
        n_layer: count(tensors, "gpt.transformer.h"),
        n_head,
        n_kv_head: shape(tensors, "gpt.transformer.h.0.attn.c_k.weight")?[0] / head_dim,
        n_embd,
    };
    if image_token_id as usize >= vocab_size {
        bail!("the tokenizer's <|image|> is id {image_token_id}, outside the model's {vocab_size}-row vocabulary");
    }
    Ok(Config {
        architectures: vec![ARCHITECTURE.to_string()],
        base_size,
        image_token_id,
        eos_token_ids: eos,
        sam,
        clip,
        gpt,
    })
}

/// `ocr convert`: reads `checkpoint` (a .pt state dict, or .safetensors) and writes `out_dir`.
pub fn convert_checkpoint(
    checkpoint: &Path,
    out_dir: &Path,
    tokenizer: &Path,
    n_head: usize,
    base_size: usize,
) -> Result<Config> {
    if base_size == 0 || !base_size.is_multiple_of(64) {
        bail!("--base-size {base_size} is not a multiple of 64");
    }
    let tensors: HashMap<String, Tensor> = if checkpoint.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(checkpoint, &candle_core::Device::Cpu)?
    } else {
        candle_core::pickle::read_all(checkpoint)
            .with_context(|| format!("{} is not a PyTorch state dict", checkpoint.display()))?
            .into_iter()
            .collect()
    };
    let tok = Tokenizer::from_file(tokenizer).map_err(|e| anyhow::anyhow!("loading {}: {e}", tokenizer.display()))?;
    let image_token_id = tok
        .token_to_id("<|image|>")
        .with_context(|| format!("{} has no <|image|> token", tokenizer.display()))?;
    let eos: Vec<u32> = tok.token_to_id("<|assistant_end|>").into_iter().collect();
    let config = infer_config(&tensors, n_head, base_size, image_token_id, eos)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    candle_core::safetensors::save(&tensors, out_dir.join("model.safetensors"))?;
    std::fs::write(out_dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::copy(tokenizer, out_dir.join("tokenizer.json"))?;
    Ok(config)
}
