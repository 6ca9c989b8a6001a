//! The Qwen2.5-VL vision tower (`visual.*`): a ViT over 14×14×2 patches with 2D rotary
//! embeddings, window attention in most blocks and full attention in `fullatt_block_indexes`,
//! RMSNorm, SiLU-gated MLPs with bias, and a merger that folds 2×2 patches into one LM token.
//! Qwen2-VL's tower ([`Tower::Qwen2`]) is the same with LayerNorm, fc1 → QuickGELU → fc2 MLPs
//! and full attention in every block.
//!
//! Tokens are processed in window order (all patches of one 8×8-patch window together) so that
//! window attention is attention over contiguous segments; the merger's output is put back into
//! raster order at the end. Several images go through in one call, packed along the rows.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::linear::{self, LinearConfig};

use super::config::{Tower, VisionConfig};
use super::text::Mlp;
use crate::ops::rotary::{self, Rotation};
use crate::ops::{
    attention::varlen_attention,
    norm::{LayerNorm, RmsNorm},
};

const NORM_EPS: f64 = 1e-6;
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// `proj` is a Conv3d whose kernel equals its stride, i.e. a linear map of each flattened
/// (channel, frame, row, column) patch row of 1176 values.
struct PatchEmbed {
    /// (hidden, 1176): a view of the stored kernel, never a copy, so that it follows the
    /// optimizer's in-place updates.
    weight: Tensor,
}

impl PatchEmbed {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (t, p) = (cfg.temporal_patch_size, cfg.patch_size);
        let weight = vb.pp("proj").get((cfg.hidden_size, cfg.in_chans, t, p, p), "weight")?;
        Ok(Self {
            weight: weight.flatten_from(1)?,
        })
    }

    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        pixels.to_dtype(self.weight.dtype())?.matmul(&self.weight.t()?)
    }
}

struct VisionAttention {
    qkv: linear::Linear,
    proj: linear::Linear,
    num_heads: usize,
}

impl VisionAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.hidden_size;
        Ok(Self {
            qkv: linear::linear_b(dim, dim * 3, true, vb.pp("qkv"), cfg.linear)?,
            proj: linear::linear_b(dim, dim, true, vb.pp("proj"), cfg.linear)?,
            num_heads: cfg.num_heads,
        })
    }

    fn forward(&self, xs: &Tensor, cu_seqlens: &[usize], cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (tokens, dim) = xs.dims2()?;
        let head_dim = dim / self.num_heads;
        let qkv = self.qkv.forward(xs)?.reshape((tokens, 3, self.num_heads, head_dim))?;
        // The reference applies the vision rotary in f32 whatever the model dtype, as `rotate` does.
        let rope = |i: usize| rotary::rotate(&qkv.narrow(1, i, 1)?.squeeze(1)?, cos, sin, Rotation::Theta);
        let q = rope(0)?;
        let k = rope(1)?;
        let v = qkv.narrow(1, 2, 1)?.squeeze(1)?;
        let out = varlen_attention(&q, &k, &v, cu_seqlens)?;
        self.proj.forward(&out.reshape((tokens, dim))?)
    }
}

/// RMSNorm (Qwen2.5-VL) or LayerNorm (Qwen2-VL), eps 1e-6 either way.
enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm),
}

impl Norm {
    fn new(tower: Tower, size: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match tower {
            Tower::Qwen25 => Norm::Rms(RmsNorm::new(size, NORM_EPS, vb)?),
            Tower::Qwen2 => Norm::Layer(LayerNorm::new(size, NORM_EPS, vb)?),
        })
    }

    /// (xs + residual, its normalisation).
    fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            Norm::Rms(n) => n.forward_residual(xs, residual),
            Norm::Layer(n) => {
                let sum = (xs + residual)?;
                let normed = n.forward(&sum)?;
                Ok((sum, normed))
            }
        }
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms(n) => n.forward(xs),
            Norm::Layer(n) => n.forward(xs),
        }
    }
}

/// The gated SiLU MLP (Qwen2.5-VL), or fc1 → QuickGELU → fc2 (Qwen2-VL, `x·σ(1.702·x)`).
enum VisionMlp {
    Gated(Mlp),
    QuickGelu { fc1: linear::Linear, fc2: linear::Linear },
}

impl VisionMlp {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (dim, hidden) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(match cfg.tower {
            Tower::Qwen25 => VisionMlp::Gated(Mlp::new(dim, hidden, cfg.hidden_act, true, cfg.linear, vb)?),
            Tower::Qwen2 => VisionMlp::QuickGelu {
                fc1: linear::linear_b(dim, hidden, true, vb.pp("fc1"), cfg.linear)?,
                fc2: linear::linear_b(hidden, dim, true, vb.pp("fc2"), cfg.linear)?,
            },
        })
    }
}

impl Module for VisionMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            VisionMlp::Gated(mlp) => mlp.forward(xs),
            VisionMlp::QuickGelu { fc1, fc2 } => {
                let h = fc1.forward(xs)?;
                fc2.forward(&(&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?)
            }
        }
    }
}

struct VisionBlock {
    norm1: Norm,
    norm2: Norm,
    attn: VisionAttention,
    mlp: VisionMlp,
}

impl VisionBlock {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: Norm::new(cfg.tower, cfg.hidden_size, vb.pp("norm1"))?,
            norm2: Norm::new(cfg.tower, cfg.hidden_size, vb.pp("norm2"))?,
            attn: VisionAttention::new(cfg, vb.pp("attn"))?,
            mlp: VisionMlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor, cu_seqlens: &[usize], cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let attn = self.attn.forward(&self.norm1.forward(xs)?, cu_seqlens, cos, sin)?;
        let (xs, normed) = self.norm2.forward_residual(&attn, xs)?;
        &xs + self.mlp.forward(&normed)?
    }
}

/// RMSNorm (LayerNorm in Qwen2-VL) per patch, then each 2×2 group of patches (adjacent rows)
/// concatenated and projected.
struct PatchMerger {
    ln_q: Norm,
    mlp0: linear::Linear,
    mlp2: linear::Linear,
    group_dim: usize,
}

impl PatchMerger {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let group_dim = cfg.hidden_size * cfg.spatial_merge_size.pow(2);
        // The merger carries no adapter: only the blocks' layers are LoRA targets here.
        let no_adapter = LinearConfig {
            lora_scale: None,
            ..cfg.linear
        };
        Ok(Self {
            ln_q: Norm::new(cfg.tower, cfg.hidden_size, vb.pp("ln_q"))?,
            mlp0: linear::linear_b(group_dim, group_dim, true, vb.pp("mlp.0"), no_adapter)?,
            mlp2: linear::linear_b(group_dim, cfg.out_hidden_size, true, vb.pp("mlp.2"), no_adapter)?,
            group_dim,
        })
    }
}

impl Module for PatchMerger {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.ln_q.forward(xs)?.reshape(((), self.group_dim))?;
        // The reference's nn.GELU() is the exact (erf) GELU.
        self.mlp2.forward(&self.mlp0.forward(&xs)?.gelu_erf()?)
    }
}

/// Where each merged token goes in window order, and the window boundaries in patch rows.
#[derive(Debug, PartialEq)]
pub struct WindowLayout {
    /// `window_index[i]` is the raster index (over all images) of the i-th merged token in
    /// window order.
    pub window_index: Vec<usize>,
    /// Cumulative patch counts at window boundaries, without empty windows.
    pub cu_window_seqlens: Vec<usize>,
}

/// Groups merged tokens into windows of `window_size / merge / patch` merged tokens per side,
/// windows of each image in raster order, the last row/column of windows cut short.
pub fn window_layout(grids: &[[usize; 3]], cfg: &VisionConfig) -> WindowLayout {
    let merge = cfg.spatial_merge_size;
    let win = cfg.window_size / merge / cfg.patch_size;
    let unit = merge * merge;
    let mut window_index = Vec::new();
    let mut cu = vec![0usize];
    let mut offset = 0;
    for &[t, h, w] in grids {
        let (mh, mw) = (h / merge, w / merge);
        for ti in 0..t {
            for wy in 0..mh.div_ceil(win) {
                for wx in 0..mw.div_ceil(win) {
                    let before = window_index.len();
                    for y in wy * win..((wy + 1) * win).min(mh) {
                        for x in wx * win..((wx + 1) * win).min(mw) {
                            window_index.push(offset + ti * mh * mw + y * mw + x);
                        }
                    }
                    let n = window_index.len() - before;
                    cu.push(cu.last().unwrap() + n * unit);
                }
            }
        }
        offset += t * mh * mw;
    }
    cu.dedup();
    WindowLayout {
        window_index,
        cu_window_seqlens: cu,
    }
}

/// The (row, column) of every patch, in the processor's order: merge blocks in raster order,
/// and within a block its 2×2 patches in raster order.
pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<(usize, usize)> {
    let mut pos = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for by in 0..h / merge {
                for bx in 0..w / merge {
                    for my in 0..merge {
                        for mx in 0..merge {
                            pos.push((by * merge + my, bx * merge + mx));
                        }
                    }
                }
            }
        }
    }
    pos
}

pub struct VisionModel {
    patch_embed: PatchEmbed,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    inv_freq: Vec<f32>,
    cfg: VisionConfig,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, rope_theta: Option<f64>, vb: VarBuilder) -> Result<Self> {
        let head_dim = cfg.hidden_size / cfg.num_heads;
        Ok(Self {
            patch_embed: PatchEmbed::new(cfg, vb.pp("patch_embed"))?,
            blocks: (0..cfg.depth)
                .map(|i| VisionBlock::new(cfg, vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            merger: PatchMerger::new(cfg, vb.pp("merger"))?,
            // Rows and columns each rotate a quarter of the head dimension.
            inv_freq: rotary::inv_freq(head_dim / 2, rope_theta.unwrap_or(DEFAULT_ROPE_THETA)),
            cfg: cfg.clone(),
        })
    }

    /// Embeds the patch rows of one or more images (`grids[i]` = (t, h, w) in patches) and
    /// returns one row per merged token, images in order, each in raster order.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let unit = self.cfg.spatial_merge_size.pow(2);
        let layout = window_layout(grids, &self.cfg);
        // Patch rows in window order: each merged token's `unit` patches stay together.
        let patch_order: Vec<u32> = layout
            .window_index
            .iter()
            .flat_map(|&m| (0..unit).map(move |u| (m * unit + u) as u32))
            .collect();
        let order = Tensor::new(patch_order.as_slice(), pixels.device())?;
        let xs = self.patch_embed.forward(pixels)?.index_select(&order, 0)?;

        let positions = patch_positions(grids, self.cfg.spatial_merge_size);
        let angles: Vec<f32> = patch_order
            .iter()
            .flat_map(|&p| {
                let (row, col) = positions[p as usize];
                let rows = self.inv_freq.iter().map(move |f| row as f32 * f);
                let cols = self.inv_freq.iter().map(move |f| col as f32 * f);
                rows.chain(cols)
            })
            .collect();
        let (cos, sin) = rotary::cos_sin(&angles, patch_order.len(), pixels.device())?;

        let mut cu_seqlens = vec![0usize];
        for &[t, h, w] in grids {
            for _ in 0..t {
                cu_seqlens.push(cu_seqlens.last().unwrap() + h * w);
            }
        }
        let mut xs = xs;
        for (i, block) in self.blocks.iter().enumerate() {
            let cu = if self.cfg.fullatt_block_indexes.contains(&i) {
                &cu_seqlens
            } else {
                &layout.cu_window_seqlens
            };
            xs = block.forward(&xs, cu, &cos, &sin)?;
        }
        let merged = self.merger.forward(&xs)?;
        let mut reverse = vec![0u32; layout.window_index.len()];
        for (pos, &m) in layout.window_index.iter().enumerate() {
            reverse[m] = pos as u32;
        }
        merged.index_select(&Tensor::new(reverse.as_slice(), pixels.device())?, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window_size: usize) -> VisionConfig {
        serde_json::from_value(serde_json::json!({
            "depth": 1, "hidden_size": 8, "intermediate_size": 8, "num_heads": 1, "patch_size": 14,
            "window_size": window_size, "fullatt_block_indexes": [], "out_hidden_size": 8
        }))
        .unwrap()
    }

    #[test]
    fn windows_cut_short_at_the_edges() {
        // 6×10 patches → 3×5 merged tokens; windows of 2×2 merged tokens (56 px).
        let layout = window_layout(&[[1, 6, 10]], &cfg(56));
        assert_eq!(
            layout.window_index,
            vec![0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]
        );
        assert_eq!(layout.cu_window_seqlens, vec![0, 16, 32, 40, 48, 56, 60]);
    }

    #[test]
    fn images_are_offset_in_the_window_index() {
        let layout = window_layout(&[[1, 4, 4], [1, 2, 2]], &cfg(56));
        assert_eq!(layout.window_index, vec![0, 1, 2, 3, 4]);
        assert_eq!(layout.cu_window_seqlens, vec![0, 16, 20]);
    }
}
