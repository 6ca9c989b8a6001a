//! The fork's pretrained start (scripts/vis_tok_train.py, Stage 1): SAM ViT-B from transformers'
//! `SamModel` (facebook/sam-vit-base), CLIP-L from `CLIPModel` (openai/clip-vit-large-patch14)
//! and nanochat's GPT (nanochat-students/base-d20, `pytorch_model.bin`), renamed as
//! nanochat/deepencoder/load_pretrained.py renames them, then `wte` and `lm_head` grown to the
//! tokenizer's size. What the fork does not load keeps the fork's init:
//! - SAM's `net_2`/`net_3` and the projector: PyTorch's default for `nn.Conv2d`/`nn.Linear`,
//!   U(±1/√fan_in) for weights and bias (the fork never calls an init on them);
//! - `image_newline`, `view_separator`: N(0, 1/√n_embd) (`NanoDeepseekOCR.__init__`);
//! - the new rows of `wte` and `lm_head`: N(0, 0.02) (vis_tok_train.py).
//!
//! Two differences, on purpose: a GPT tensor missing from the checkpoint is an error (the fork's
//! `load_state_dict(strict=False)` would keep its random init silently), and the GPT's head
//! count (which the weights cannot tell) comes from the checkpoint's config.json when it has
//! one, the fork's 16 otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use tokenizers::Tokenizer;

use super::convert::{count, infer_config};
use super::init::{normal, uniform};
use super::Config;

pub const SAM_ID: &str = "facebook/sam-vit-base";
pub const CLIP_ID: &str = "openai/clip-vit-large-patch14";
pub const GPT_ID: &str = "nanochat-students/base-d20";
/// vis_tok_train.py's `num_heads` for base-d20.
pub const FORK_N_HEAD: usize = 16;

const WEIGHTS: &[&str] = &["model.safetensors", "pytorch_model.bin"];

/// Where the three checkpoints come from (hub ids or directories) and how to build the model.
#[derive(Debug, Clone)]
pub struct Sources {
    pub sam: String,
    pub clip: String,
    pub gpt: String,
    /// tokenizer.json with `<|image|>`: its size is the vocabulary's.
    pub tokenizer: PathBuf,
    /// GPT attention heads; None: the GPT checkpoint's config.json, else [`FORK_N_HEAD`].
    pub n_head: Option<usize>,
    pub base_size: usize,
    /// Seeds the fresh tensors.
    pub seed: u64,
}

impl Sources {
    /// The fork's three checkpoints, base size 1024.
    pub fn new(tokenizer: PathBuf) -> Self {
        Self {
            sam: SAM_ID.into(),
            clip: CLIP_ID.into(),
            gpt: GPT_ID.into(),
            tokenizer,
            n_head: None,
            base_size: 1024,
            seed: 0,
        }
    }
}

/// Every tensor of a checkpoint directory in f32 (nanochat keeps `wte` in bf16; the fork copies
/// it into f32 parameters), integer buffers as they are.
fn read_checkpoint(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let path = WEIGHTS
        .iter()
        .map(|w| dir.join(w))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has neither {}", dir.display(), WEIGHTS.join(" nor ")))?;
    let raw: Vec<(String, Tensor)> = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(&path, &Device::Cpu)?
            .into_iter()
            .collect()
    } else {
        candle_core::pickle::read_all(&path).with_context(|| format!("reading {}", path.display()))?
    };
    raw.into_iter()
        .map(|(name, t)| {
            let t = if t.dtype().is_float() {
                t.to_dtype(DType::F32)?
            } else {
                t
            };
            // torch.compile'd models save their names under _orig_mod. (nanochat strips it too).
            Ok((name.strip_prefix("_orig_mod.").unwrap_or(&name).to_string(), t))
        })
        .collect()
}

fn read_json(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
    ))
}

/// Moves the checkpoint's tensors into the fork's state dict under their new names.
struct Mapper<'a> {
    from: HashMap<String, Tensor>,
    what: &'a str,
    out: &'a mut HashMap<String, Tensor>,
}

impl Mapper<'_> {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.from
            .remove(name)
            .with_context(|| format!("the {} checkpoint has no {name}", self.what))
    }

    fn put(&mut self, from: &str, to: &str) -> Result<()> {
        let t = self.take(from)?;
        self.out.insert(to.to_string(), t);
        Ok(())
    }
}

/// load_sam_weights_from_hf: `SamModel.vision_encoder` → `sam_model` (net_2/net_3 not there).
fn map_sam(from: HashMap<String, Tensor>, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let depth = count(&from, "vision_encoder.layers");
    let mut m = Mapper { from, what: "SAM", out };
    let (hf, ours) = ("vision_encoder", "sam_model");
    for p in ["weight", "bias"] {
        m.put(
            &format!("{hf}.patch_embed.projection.{p}"),
            &format!("{ours}.patch_embed.proj.{p}"),
        )?;
    }
    m.put(&format!("{hf}.pos_embed"), &format!("{ours}.pos_embed"))?;
    for i in 0..depth {
        let (a, b) = (format!("{hf}.layers.{i}"), format!("{ours}.blocks.{i}"));
        for (x, y) in [
            ("layer_norm1", "norm1"),
            ("layer_norm2", "norm2"),
            ("attn.qkv", "attn.qkv"),
            ("attn.proj", "attn.proj"),
            ("mlp.lin1", "mlp.lin1"),
            ("mlp.lin2", "mlp.lin2"),
        ] {
            for p in ["weight", "bias"] {
                m.put(&format!("{a}.{x}.{p}"), &format!("{b}.{y}.{p}"))?;
            }
        }
        for r in ["rel_pos_h", "rel_pos_w"] {
            m.put(&format!("{a}.attn.{r}"), &format!("{b}.attn.{r}"))?;
        }
    }
    m.put(&format!("{hf}.neck.conv1.weight"), &format!("{ours}.neck.0.weight"))?;
    m.put(&format!("{hf}.neck.conv2.weight"), &format!("{ours}.neck.2.weight"))?;
    for p in ["weight", "bias"] {
        m.put(&format!("{hf}.neck.layer_norm1.{p}"), &format!("{ours}.neck.1.{p}"))?;
        m.put(&format!("{hf}.neck.layer_norm2.{p}"), &format!("{ours}.neck.3.{p}"))?;
    }
    Ok(())
}

/// load_clip_weights_from_hf: `CLIPModel.vision_model` → `vision_model`, q/k/v fused into
/// `qkv_proj` (concatenated on the output dimension, q first); post_layernorm is not used.
fn map_clip(from: HashMap<String, Tensor>, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let layers = count(&from, "vision_model.encoder.layers");
    let mut m = Mapper {
        from,
        what: "CLIP",
        out,
    };
    for name in [
        "embeddings.class_embedding",
        "embeddings.position_embedding.weight",
        "embeddings.patch_embedding.weight",
        "pre_layrnorm.weight",
        "pre_layrnorm.bias",
    ] {
        m.put(&format!("vision_model.{name}"), &format!("vision_model.{name}"))?;
    }
    for i in 0..layers {
        let (a, b) = (
            format!("vision_model.encoder.layers.{i}"),
            format!("vision_model.transformer.layers.{i}"),
        );
        for p in ["weight", "bias"] {
            for x in ["layer_norm1", "layer_norm2", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"] {
                m.put(&format!("{a}.{x}.{p}"), &format!("{b}.{x}.{p}"))?;
            }
            let qkv = ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|x| m.take(&format!("{a}.self_attn.{x}.{p}")))
                .collect::<Result<Vec<_>>>()?;
            m.out
                .insert(format!("{b}.self_attn.qkv_proj.{p}"), Tensor::cat(&qkv, 0)?);
        }
    }
    // The fork's CLIPVisionEmbeddings buffer (persistent, so in its state dict): arange.
    let n = m.out["vision_model.embeddings.position_embedding.weight"].dim(0)?;
    m.out.insert(
        "vision_model.embeddings.position_ids".into(),
        Tensor::arange(0i64, n as i64, &Device::Cpu)?.reshape((1, n))?,
    );
    Ok(())
}

/// load_nanochat_gpt_from_hf: nanochat's state dict under `gpt.` (the names are the same).
fn map_gpt(from: HashMap<String, Tensor>, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let layers = count(&from, "transformer.h");
    let mut m = Mapper { from, what: "GPT", out };
    for name in ["transformer.wte.weight", "lm_head.weight"] {
        m.put(name, &format!("gpt.{name}"))?;
    }
    for i in 0..layers {
        for x in [
            "attn.c_q",
            "attn.c_k",
            "attn.c_v",
            "attn.c_proj",
            "mlp.c_fc",
            "mlp.c_proj",
        ] {
            let name = format!("transformer.h.{i}.{x}.weight");
            m.put(&name, &format!("gpt.{name}"))?;
        }
    }
    Ok(())
}

/// How the GPT's head count was chosen: given, from the checkpoint's config.json, or the fork's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSource {
    Given,
    CheckpointConfig,
    Fork,
}

/// What [`state_dict`] built.
pub struct Initial {
    pub config: Config,
    /// The fork's state dict names.
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: Tokenizer,
    pub head_source: HeadSource,
    /// `wte`'s rows in the GPT checkpoint (the new ones are the tokenizer's beyond them).
    pub pretrained_vocab: usize,
}

/// The fork's initial state dict of the model, and its config.
pub fn state_dict(src: &Sources) -> Result<Initial> {
    if src.base_size == 0 || !src.base_size.is_multiple_of(64) {
        bail!("base size {} is not a multiple of 64", src.base_size);
    }
    let tokenizer = Tokenizer::from_file(&src.tokenizer)
        .map_err(|e| anyhow::anyhow!("loading {}: {e}", src.tokenizer.display()))?;
    let image_token_id = tokenizer
        .token_to_id("<|image|>")
        .with_context(|| format!("{} has no <|image|> token", src.tokenizer.display()))?;
    let eos: Vec<u32> = tokenizer.token_to_id("<|assistant_end|>").into_iter().collect();
    let resolve = |spec: &str, what: &str| {
        crate::hub::resolve_checkpoint(spec, WEIGHTS, &["config.json"])
            .with_context(|| format!("the {what} checkpoint"))
    };
    let (sam_dir, clip_dir, gpt_dir) = (
        resolve(&src.sam, "SAM")?,
        resolve(&src.clip, "CLIP")?,
        resolve(&src.gpt, "GPT")?,
    );

    let mut tensors = HashMap::new();
    map_sam(read_checkpoint(&sam_dir)?, &mut tensors)?;
    map_clip(read_checkpoint(&clip_dir)?, &mut tensors)?;
    map_gpt(read_checkpoint(&gpt_dir)?, &mut tensors)?;

    let gpt_config = read_json(&gpt_dir)?;
    let config_heads = gpt_config
        .as_ref()
        .and_then(|c| c.get("n_head").or_else(|| c.get("num_attention_heads")))
        .and_then(|v| v.as_u64())
        .map(|v| v as usize);
    let (n_head, head_source) = match (src.n_head, config_heads) {
        (Some(n), _) => (n, HeadSource::Given),
        (None, Some(n)) => (n, HeadSource::CheckpointConfig),
        (None, None) => (FORK_N_HEAD, HeadSource::Fork),
    };

    // The fresh parts, drawn in a fixed order from the seed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(src.seed);
    let cpu = &Device::Cpu;
    let out_chans = tensors["sam_model.neck.0.weight"].dim(0)?;
    let clip_hidden = tensors["vision_model.embeddings.class_embedding"].dim(0)?;
    let (pretrained_vocab, n_embd) = tensors["gpt.transformer.wte.weight"].dims2()?;
    // sam_vary_sdpa.py: net_2 doubles the neck's channels (256→512), net_3 makes them CLIP's
    // width (512→1024), SAM's map being CLIP's patch embeddings; both 3×3, stride 2, no bias.
    let net_2 = [2 * out_chans, out_chans, 3, 3];
    let net_3 = [clip_hidden, 2 * out_chans, 3, 3];
    let bound = |shape: &[usize]| 1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt();
    tensors.insert(
        "sam_model.net_2.weight".into(),
        uniform(&net_2, bound(&net_2), &mut rng, cpu)?,
    );
    tensors.insert(
        "sam_model.net_3.weight".into(),
        uniform(&net_3, bound(&net_3), &mut rng, cpu)?,
    );
    // The linear projector of [CLIP, SAM] features (nano_deepseek_ocr.py: MlpProjector "linear").
    let projector = [n_embd, clip_hidden + net_3[0]];
    let b = bound(&projector);
    tensors.insert("projector.layers.weight".into(), uniform(&projector, b, &mut rng, cpu)?);
    tensors.insert("projector.layers.bias".into(), uniform(&[n_embd], b, &mut rng, cpu)?);
    let embed_std = 1.0 / (n_embd as f64).sqrt();
    for name in ["image_newline", "view_separator"] {
        tensors.insert(name.into(), normal(&[n_embd], embed_std, &mut rng, cpu)?);
    }
    // vis_tok_train.py: grown only when the tokenizer is larger, new rows N(0, 0.02).
    let vocab = tokenizer.get_vocab_size(true);
    if vocab > pretrained_vocab {
        for name in ["gpt.transformer.wte.weight", "gpt.lm_head.weight"] {
            let rows = normal(&[vocab - pretrained_vocab, n_embd], 0.02, &mut rng, cpu)?;
            let grown = Tensor::cat(&[&tensors[name], &rows], 0)?;
            tensors.insert(name.into(), grown);
        }
    }

    let mut config = infer_config(&tensors, n_head, src.base_size, image_token_id, eos)?;
    // CLIP's heads from its own config when it says (the shapes cannot tell).
    if let Some(heads) = read_json(&clip_dir)?
        .as_ref()
        .and_then(|c| c.pointer("/vision_config/num_attention_heads"))
        .and_then(|v| v.as_u64())
    {
        config.clip.num_heads = heads as usize;
    }
    Ok(Initial {
        config,
        tensors,
        tokenizer,
        head_source,
        pretrained_vocab,
    })
}

/// Builds the fork's initial model and writes it as a model directory (config.json,
/// model.safetensors, tokenizer.json) at `out_dir`.
pub fn write(src: &Sources, out_dir: &Path) -> Result<Initial> {
    let initial = state_dict(src)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    candle_core::safetensors::save(&initial.tensors, out_dir.join("model.safetensors"))?;
    std::fs::write(
        out_dir.join("config.json"),
        serde_json::to_string_pretty(&initial.config)?,
    )?;
    std::fs::copy(&src.tokenizer, out_dir.join("tokenizer.json"))
        .with_context(|| format!("copying {}", src.tokenizer.display()))?;
    Ok(initial)
}
