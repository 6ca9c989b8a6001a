//! The Qwen2.5-VL language model (`model.*`, `lm_head`): a Qwen2 decoder with grouped-query
//! attention (q/k/v with bias, o_proj without), M-RoPE, RMSNorm and a SwiGLU MLP.
//!
//! M-RoPE gives every token three positions (t, h, w); `mrope_section` splits the head's rotary
//! frequencies among them (16/24/24 of 64 for RolmOCR), and text tokens carry the same position
//! on all three axes, which makes it plain 1D RoPE for them.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, linear_no_bias, Activation, Embedding, Linear, VarBuilder};

use super::config::TextConfig;
use crate::models::linear::{self, LinearConfig};
use crate::ops::{activation::gated, attention::AttentionCache, norm::RmsNorm, rotary};

/// Per-token (t, h, w) positions → cos/sin tables (tokens, head_dim) in the model dtype.
pub struct MropeEmbedding {
    inv_freq: Vec<f32>,
    /// For each rotary frequency, which axis (0 = t, 1 = h, 2 = w) drives it.
    axis_of_freq: Vec<usize>,
}

impl MropeEmbedding {
    pub fn new(cfg: &TextConfig) -> Self {
        let axis_of_freq = cfg
            .mrope_section
            .iter()
            .enumerate()
            .flat_map(|(axis, &n)| std::iter::repeat_n(axis, n))
            .collect();
        Self {
            inv_freq: rotary::inv_freq(cfg.head_dim(), cfg.rope_theta),
            axis_of_freq,
        }
    }

    /// f32 cos/sin tables for `positions[axis][token]`; the three rows have the same length.
    pub fn cos_sin(&self, positions: &[Vec<i64>; 3], device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let tokens = positions[0].len();
        let angles: Vec<f32> = (0..tokens)
            .flat_map(|i| {
                self.inv_freq
                    .iter()
                    .zip(&self.axis_of_freq)
                    .map(move |(f, &axis)| positions[axis][i] as f32 * f)
            })
            .collect();
        rotary::cos_sin(&angles, tokens, device)
    }
}

struct Attention {
    q_proj: linear::Linear,
    k_proj: linear::Linear,
    v_proj: linear::Linear,
    o_proj: linear::Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let lin = |i, o, bias, name: &str| linear::linear_b(i, o, bias, vb.pp(name), cfg.linear);
        Ok(Self {
            q_proj: lin(h, nh * hd, true, "q_proj")?,
            k_proj: lin(h, nkv * hd, true, "k_proj")?,
            v_proj: lin(h, nkv * hd, true, "v_proj")?,
            o_proj: lin(nh * hd, h, false, "o_proj")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layer: usize,
        cache: &mut dyn AttentionCache,
    ) -> Result<Tensor> {
        let tokens = xs.dim(0)?;
        let q = self
            .q_proj
            .forward(xs)?
            .reshape((tokens, self.num_heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(xs)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let v = self
            .v_proj
            .forward(xs)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let q = rotary::apply(&q, cos, sin)?;
        let k = rotary::apply(&k, cos, sin)?;
        let out = cache.attend(layer, &q, &k, &v)?;
        self.o_proj
            .forward(&out.reshape((tokens, self.num_heads * self.head_dim))?)
    }
}

/// The gated MLP of the decoder (`Qwen2MLP`, no biases) and of the vision blocks
/// (`Qwen2_5_VLMLP`, with biases).
pub(super) struct Mlp {
    gate_proj: linear::Linear,
    up_proj: linear::Linear,
    down_proj: linear::Linear,
    act: Activation,
}

impl Mlp {
    /// `config`: how the model builds its linear layers.
    pub(super) fn new(
        hidden: usize,
        intermediate: usize,
        act: Activation,
        bias: bool,
        config: LinearConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (h, i) = (hidden, intermediate);
        let lin = |a, b, name: &str| linear::linear_b(a, b, bias, vb.pp(name), config);
        Ok(Self {
            gate_proj: lin(h, i, "gate_proj")?,
            up_proj: lin(h, i, "up_proj")?,
            down_proj: lin(i, h, "down_proj")?,
            act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = gated(self.act, &self.gate_proj.forward(xs)?, &self.up_proj.forward(xs)?)?;
        self.down_proj.forward(&hidden)
    }
}

struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.hidden_act,
                false,
                cfg.linear,
                vb.pp("mlp"),
            )?,
            input_layernorm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        layer: usize,
        cache: &mut dyn AttentionCache,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, cos, sin, layer, cache)?;
        let (xs, normed) = self.post_attention_layernorm.forward_residual(&attn, xs)?;
        &xs + self.mlp.forward(&normed)?
    }
}

pub struct TextModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: linear::Linear,
    rope: MropeEmbedding,
}

impl TextModel {
    /// `vb` is rooted at the checkpoint's top level (`model.*` and `lm_head`).
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens = embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let lm_head = if cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb.pp("lm_head"))?
        };
        let lm_head = linear::Linear::new(lm_head, cfg.linear.quantization)?;
        Ok(Self {
            layers: (0..cfg.num_hidden_layers)
                .map(|i| DecoderLayer::new(cfg, m.pp(format!("layers.{i}"))))
                .collect::<Result<_>>()?,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?,
            embed_tokens,
            lm_head,
            rope: MropeEmbedding::new(cfg),
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs `embeds` (tokens, hidden) at `positions` through the decoder on top of what `cache`
    /// holds, and returns the logits (f32) of the rows listed in `logit_rows`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &[Vec<i64>; 3],
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor> {
        let (cos, sin) = self.rope_tables(positions, embeds.device())?;
        let mut xs = embeds.clone();
        for i in 0..self.layers.len() {
            xs = self.layer(i, &xs, &cos, &sin, cache)?;
        }
        self.logits(&xs, logit_rows)
    }

    /// The cos/sin tables of `positions`, for [`TextModel::layer`].
    pub fn rope_tables(&self, positions: &[Vec<i64>; 3], device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        self.rope.cos_sin(positions, device)
    }

    /// Decoder layer `i` alone (a trainer recomputing one layer at a time calls it directly).
    pub fn layer(
        &self,
        i: usize,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut dyn AttentionCache,
    ) -> Result<Tensor> {
        self.layers[i].forward(xs, cos, sin, i, cache)
    }

    /// f32 logits of the rows `rows` of the last layer's output `xs`.
    pub fn logits(&self, xs: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let rows = xs.index_select(&Tensor::new(rows, xs.device())?, 0)?;
        self.lm_head.forward(&self.norm.forward(&rows)?)?.to_dtype(DType::F32)
    }
}
