//! nanochat's GPT (`gpt.*`), the decoder of the nano DeepSeek-OCR. Its reference is
//! nanochat/gpt.py, whose details decide parity:
//! - rotary by −θ on halves (y1 = x1·cos + x2·sin, y2 = −x1·sin + x2·cos), with cos/sin tables
//!   rounded to bf16 whatever the model dtype, applied before QK-norm;
//! - RMSNorm without parameters, eps = the dtype's machine epsilon, also right after the
//!   embedding (so it normalises inserted vision rows too) and before the head;
//! - relu² MLP, untied head, logits soft-capped at 15.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::models::linear::{linear_b, Linear};
use crate::ops::attention::{AttentionCache, ContiguousKvCache};
use crate::ops::rotary::{self, Rotation};
use crate::ops::{activation, norm};

const ROPE_BASE: f32 = 10_000.0;
const SOFTCAP: f64 = 15.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_embd: usize,
}

impl GptConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// Parameter-free RMSNorm over the last dimension, eps = f32 machine epsilon.
fn norm(x: &Tensor) -> Result<Tensor> {
    norm::rms_norm(x, None, f32::EPSILON as f64)
}

/// cos and sin (tokens, head_dim/2) for `positions`, rounded to bf16 as the reference stores them.
fn rotary(positions: &[i64], head_dim: usize, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / ROPE_BASE.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let angles: Vec<f32> = positions
        .iter()
        .flat_map(|&p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let bf16 = |v: f32| half::bf16::from_f32(v).to_f32();
    let cos = angles.iter().map(|a| bf16(a.cos())).collect();
    let sin = angles.iter().map(|a| bf16(a.sin())).collect();
    Ok((
        Tensor::from_vec(cos, (positions.len(), half), device)?,
        Tensor::from_vec(sin, (positions.len(), half), device)?,
    ))
}

/// x (tokens, heads, head_dim); cos/sin (tokens, head_dim/2).
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    rotary::rotate(x, cos, sin, Rotation::NegTheta)
}

struct Block {
    c_q: Linear,
    c_k: Linear,
    c_v: Linear,
    attn_proj: Linear,
    c_fc: Linear,
    mlp_proj: Linear,
    n_head: usize,
    n_kv_head: usize,
}

impl Block {
    fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let (e, hd) = (cfg.n_embd, cfg.head_dim());
        let attn = vb.pp("attn");
        Ok(Self {
            c_q: linear_b(e, cfg.n_head * hd, false, attn.pp("c_q"), Default::default())?,
            c_k: linear_b(e, cfg.n_kv_head * hd, false, attn.pp("c_k"), Default::default())?,
            c_v: linear_b(e, cfg.n_kv_head * hd, false, attn.pp("c_v"), Default::default())?,
            attn_proj: linear_b(e, e, false, attn.pp("c_proj"), Default::default())?,
            c_fc: linear_b(e, 4 * e, false, vb.pp("mlp.c_fc"), Default::default())?,
            mlp_proj: linear_b(4 * e, e, false, vb.pp("mlp.c_proj"), Default::default())?,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layer: usize,
        cache: &mut dyn AttentionCache,
    ) -> Result<Tensor> {
        let (t, e) = x.dims2()?;
        let hd = e / self.n_head;
        let h = norm(x)?;
        let q = self.c_q.forward(&h)?.reshape((t, self.n_head, hd))?;
        let k = self.c_k.forward(&h)?.reshape((t, self.n_kv_head, hd))?;
        let v = self.c_v.forward(&h)?.reshape((t, self.n_kv_head, hd))?;
        let q = norm(&apply_rotary(&q, cos, sin)?)?;
        let k = norm(&apply_rotary(&k, cos, sin)?)?;
        let y = cache.attend(layer, &q, &k, &v)?.reshape((t, e))?;
        let x = (x + self.attn_proj.forward(&y)?)?;
        let m = activation::relu_squared(&self.c_fc.forward(&norm(&x)?)?)?;
        &x + self.mlp_proj.forward(&m)?
    }
}

pub struct Gpt {
    wte: Embedding,
    blocks: Vec<Block>,
    lm_head: Linear,
    head_dim: usize,
}

impl Gpt {
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            wte: embedding(cfg.vocab_size, cfg.n_embd, vb.pp("transformer.wte"))?,
            blocks: (0..cfg.n_layer)
                .map(|i| Block::new(cfg, vb.pp(format!("transformer.h.{i}"))))
                .collect::<Result<_>>()?,
            lm_head: linear_b(cfg.n_embd, cfg.vocab_size, false, vb.pp("lm_head"), Default::default())?,
            head_dim: cfg.head_dim(),
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.wte.forward(ids)
    }

    /// Rows `embeds` (tokens, n_embd) at `positions` on top of `cache`; soft-capped f32 logits
    /// of `logit_rows`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &[i64],
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor> {
        let (cos, sin) = self.rotary_tables(positions, embeds.device())?;
        let mut x = self.input(embeds)?;
        for i in 0..self.blocks.len() {
            x = self.layer(i, &x, &cos, &sin, cache)?;
        }
        self.logits(&x, logit_rows)
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// cos and sin tables for `positions`, as every layer takes them.
    pub fn rotary_tables(&self, positions: &[i64], device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        rotary(positions, self.head_dim, device)
    }

    /// What the first layer takes: the embeddings normalised.
    pub fn input(&self, embeds: &Tensor) -> Result<Tensor> {
        norm(embeds)
    }

    /// Layer `i` alone (a trainer recomputing one layer at a time calls it directly).
    pub fn layer(
        &self,
        i: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut dyn AttentionCache,
    ) -> Result<Tensor> {
        self.blocks[i].forward(x, cos, sin, i, cache)
    }

    /// Soft-capped f32 logits of the rows `rows` of the last layer's output `x`.
    pub fn logits(&self, x: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let rows = x.index_select(&Tensor::new(rows, x.device())?, 0)?;
        let logits = self.lm_head.forward(&norm(&rows)?)?.to_dtype(DType::F32)?;
        activation::softcap(&logits, SOFTCAP)
    }

    /// The full sequence `embeds` (tokens, n_embd) from position 0, as in training: the sum of
    /// the cross-entropies of the rows whose `targets` entry is not −1, and how many there are.
    pub fn loss_sum(&self, embeds: &Tensor, targets: &[i64]) -> Result<(Tensor, usize)> {
        let positions: Vec<i64> = (0..embeds.dim(0)? as i64).collect();
        let (rows, wanted) = target_rows(targets);
        if rows.is_empty() {
            return Ok((Tensor::zeros((), DType::F32, embeds.device())?, 0));
        }
        let mut cache = ContiguousKvCache::new(self.blocks.len());
        let logits = self.forward(embeds, &positions, &mut cache, &rows)?;
        Ok((crate::ops::loss::cross_entropy_sum(&logits, &wanted)?, rows.len()))
    }
}

/// The rows whose `targets` entry is not −1, and those entries: what the loss reads.
pub fn target_rows(targets: &[i64]) -> (Vec<u32>, Vec<u32>) {
    (0..targets.len())
        .filter(|&i| targets[i] >= 0)
        .map(|i| (i as u32, targets[i] as u32))
        .unzip()
}
