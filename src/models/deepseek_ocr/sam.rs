//! SAM ViT-B image encoder (`sam_model.*`) as DeepSeek-OCR's DeepEncoder uses it: 16×16 patches,
//! transformer blocks attending within 14×14 windows except the global ones, decomposed
//! relative-position biases, then a neck (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d) and two
//! stride-2 convolutions (`net_2`, `net_3`) that shrink the map 16×.
//!
//! At an input other than the native size, the absolute position embedding is resized with
//! antialiased bicubic interpolation and the global blocks' relative-position tables linearly,
//! as the reference does.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::imaging::{linear_resize_matrix, resize_planes_bicubic_tensor};
use crate::models::linear::{linear_b, Linear};
use crate::ops::norm::LayerNorm;
use crate::ops::{activation, blockwise_attention};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamConfig {
    /// The size the position embedding was trained at (1024).
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub window_size: usize,
    pub global_attn_indexes: Vec<usize>,
    pub out_chans: usize,
    pub net_2_chans: usize,
    pub net_3_chans: usize,
}

/// F.interpolate(mode="linear", align_corners=False) of a (rows, dim) table to `rows_out` rows,
/// as a matrix product so that the table keeps its gradient.
fn resize_rows_linear(table: &Tensor, rows_out: usize) -> Result<Tensor> {
    let rows = table.dim(0)?;
    let m = Tensor::from_vec(linear_resize_matrix(rows, rows_out), (rows_out, rows), table.device())?;
    m.to_dtype(table.dtype())?.matmul(table)
}

/// Relative-position embeddings for every (query, key) pair along one axis of `size`:
/// (size, size, head_dim), entry [q][k] = table[q − k + size − 1].
fn rel_pos(table: &Tensor, size: usize) -> Result<Tensor> {
    let rows = 2 * size - 1;
    let table = if table.dim(0)? == rows {
        table.clone()
    } else {
        resize_rows_linear(table, rows)?
    };
    let idx: Vec<u32> = (0..size)
        .flat_map(|q| (0..size).map(move |k| (q + size - 1 - k) as u32))
        .collect();
    let dim = table.dim(1)?;
    table
        .index_select(&Tensor::new(idx.as_slice(), table.device())?, 0)?
        .reshape((size, size, dim))
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, rel_size: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / num_heads;
        Ok(Self {
            qkv: linear_b(dim, dim * 3, true, vb.pp("qkv"), Default::default())?,
            proj: linear_b(dim, dim, true, vb.pp("proj"), Default::default())?,
            rel_pos_h: vb.get((2 * rel_size - 1, head_dim), "rel_pos_h")?,
            rel_pos_w: vb.get((2 * rel_size - 1, head_dim), "rel_pos_w")?,
            num_heads,
        })
    }

    /// x: (B, H, W, C) → (B, H, W, C).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (nh, hd, t) = (self.num_heads, c / self.num_heads, h * w);
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, 3, nh, hd))?
            .permute((2, 0, 3, 1, 4))?
            .reshape((3, b * nh, t, hd))?;
        let (q, k, v) = (
            qkv.i(0)?.contiguous()?,
            qkv.i(1)?.contiguous()?,
            qkv.i(2)?.contiguous()?,
        );
        // Decomposed relative positions: a bias per (query, key row) and per (query, key column).
        let bn = b * nh;
        let r_q = q.reshape((bn, h, w, hd))?;
        let rh = rel_pos(&self.rel_pos_h, h)?;
        let rw = rel_pos(&self.rel_pos_w, w)?;
        let rel_h = r_q
            .permute((1, 0, 2, 3))?
            .reshape((h, bn * w, hd))?
            .matmul(&rh.transpose(1, 2)?.contiguous()?)? // (h, bn·w, kh)
            .reshape((h, bn, w, h))?
            .permute((1, 0, 2, 3))?;
        let rel_w = r_q
            .permute((2, 0, 1, 3))?
            .reshape((w, bn * h, hd))?
            .matmul(&rw.transpose(1, 2)?.contiguous()?)? // (w, bn·h, kw)
            .reshape((w, bn, h, w))?
            .permute((1, 2, 0, 3))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let out = if blockwise_attention::takes(&q, &k, &v) {
            // The bias as extra query columns: no (bn, t, t) tensor in either pass.
            let q_ext = Tensor::cat(&[&q, &rel_h.reshape((bn, t, h))?, &rel_w.reshape((bn, t, w))?], 2)?;
            let spec = blockwise_attention::Spec {
                scale,
                causal: None,
                grid: Some((h, w)),
            };
            blockwise_attention::attention(&q_ext, &k, &v, spec)?
        } else {
            let bias = rel_h
                .unsqueeze(4)?
                .broadcast_add(&rel_w.unsqueeze(3)?)?
                .reshape((bn, t, t))?;
            let scores = ((q.matmul(&k.t()?)? * scale)? + bias)?;
            activation::softmax_last_dim(&scores)?.matmul(&v)?
        };
        let out = out
            .reshape((b, nh, h, w, hd))?
            .permute((0, 2, 3, 1, 4))?
            .reshape((b, h, w, c))?;
        self.proj.forward(&out)
    }
}

struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    attn: Attention,
    lin1: Linear,
    lin2: Linear,
    window: usize,
}

impl Block {
    fn new(cfg: &SamConfig, global: bool, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let window = if global { 0 } else { cfg.window_size };
        let rel_size = if global {
            cfg.img_size / cfg.patch_size
        } else {
            cfg.window_size
        };
        Ok(Self {
            norm1: LayerNorm::new(d, 1e-6, vb.pp("norm1"))?,
            norm2: LayerNorm::new(d, 1e-6, vb.pp("norm2"))?,
            attn: Attention::new(d, cfg.num_heads, rel_size, vb.pp("attn"))?,
            lin1: linear_b(d, d * 4, true, vb.pp("mlp.lin1"), Default::default())?,
            lin2: linear_b(d * 4, d, true, vb.pp("mlp.lin2"), Default::default())?,
            window,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shortcut = x;
        let x = self.norm1.forward(x)?;
        let x = if self.window == 0 {
            self.attn.forward(&x)?
        } else {
            // Zero-pad to whole windows, attend within each, drop the padding.
            let (b, h, w, c) = x.dims4()?;
            let ws = self.window;
            let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
            let padded = x.pad_with_zeros(1, 0, hp - h)?.pad_with_zeros(2, 0, wp - w)?;
            let windows = padded
                .reshape((b, hp / ws, ws, wp / ws, ws, c))?
                .transpose(2, 3)?
                .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))?;
            let out = self.attn.forward(&windows)?;
            out.reshape((b, hp / ws, wp / ws, ws, ws, c))?
                .transpose(2, 3)?
                .reshape((b, hp, wp, c))?
                .narrow(1, 0, h)?
                .narrow(2, 0, w)?
        };
        let x = (shortcut + x)?;
        let mlp = self
            .lin2
            .forward(&self.lin1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        x + mlp
    }
}

/// LayerNorm over the channel axis of an NCHW map.
struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm2d {
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
        })
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let u = x.mean_keepdim(1)?;
        let centered = x.broadcast_sub(&u)?;
        let s = centered.sqr()?.mean_keepdim(1)?;
        let x = centered.broadcast_div(&(s + 1e-6)?.sqrt()?)?;
        let c = self.weight.dim(0)?;
        x.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

/// A convolution without bias, padding k/2, as what it computes: each output position's k×k×C
/// input window, gathered by shifted slices, times the kernel as a matrix. candle's CPU conv
/// backward costs several times the rest of SAM's training step; slices and a matmul
/// differentiate cheaply (and the forward is the same im2col GEMM candle runs).
struct Conv {
    /// (out, in, k, k), as PyTorch's `Conv2d.weight`.
    weight: Tensor,
    stride: usize,
}

impl Conv {
    fn new(in_chans: usize, out_chans: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_chans, in_chans, k, k), "weight")?,
            stride,
        })
    }
}

impl Module for Conv {
    /// (B, C, H, W) → (B, out, ⌊(H − 1)/s⌋ + 1, ⌊(W − 1)/s⌋ + 1).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, _, k, _) = self.weight.dims4()?;
        let (s, p) = (self.stride, k / 2);
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        // s − 1 more zeros at the end so each tap's slice is a whole number of strides long;
        // the subsampling below drops them.
        let x = x.pad_with_zeros(2, p, p + s - 1)?.pad_with_zeros(3, p, p + s - 1)?;
        let mut taps = Vec::with_capacity(k * k);
        for dy in 0..k {
            for dx in 0..k {
                let tap = x.narrow(2, dy, ho * s)?.narrow(3, dx, wo * s)?;
                taps.push(if s == 1 {
                    tap
                } else {
                    tap.reshape((b, c, ho, s, wo, s))?.i((.., .., .., 0, .., 0))?
                });
            }
        }
        // (B, C, k·k, ho, wo): the kernel's (in, ky, kx) order.
        let cols = Tensor::stack(&taps, 2)?.reshape((b, c * k * k, ho * wo))?;
        self.weight
            .reshape((o, c * k * k))?
            .broadcast_matmul(&cols)?
            .reshape((b, o, ho, wo))
    }
}

/// `patch_embed.proj`: a convolution whose kernel equals its stride, computed as what it is, a
/// linear map of each flattened patch (candle's conv backward on the CPU costs more than the
/// rest of SAM's step together; the matmul's is cheap).
struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
    patch: usize,
}

impl PatchEmbed {
    fn new(in_chans: usize, dim: usize, patch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((dim, in_chans, patch, patch), "weight")?,
            bias: vb.get(dim, "bias")?,
            patch,
        })
    }

    /// (B, C, H, W) → (B, H/p, W/p, dim).
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))? // (B, gh, gw, C, p, p): the kernel's layout
            .reshape((b * gh * gw, c * p * p))?;
        let dim = self.weight.dim(0)?;
        let w = self.weight.reshape((dim, c * p * p))?;
        patches
            .matmul(&w.t()?)?
            .broadcast_add(&self.bias)?
            .reshape((b, gh, gw, dim))
    }
}

pub struct Sam {
    patch_embed: PatchEmbed,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    neck: (Conv, LayerNorm2d, Conv, LayerNorm2d),
    net_2: Conv,
    net_3: Conv,
}

impl Sam {
    pub fn new(cfg: &SamConfig, vb: VarBuilder) -> Result<Self> {
        let grid = cfg.img_size / cfg.patch_size;
        let neck = vb.pp("neck");
        Ok(Self {
            patch_embed: PatchEmbed::new(3, cfg.embed_dim, cfg.patch_size, vb.pp("patch_embed.proj"))?,
            pos_embed: vb.get((1, grid, grid, cfg.embed_dim), "pos_embed")?,
            blocks: (0..cfg.depth)
                .map(|i| Block::new(cfg, cfg.global_attn_indexes.contains(&i), vb.pp(format!("blocks.{i}"))))
                .collect::<Result<_>>()?,
            neck: (
                Conv::new(cfg.embed_dim, cfg.out_chans, 1, 1, neck.pp("0"))?,
                LayerNorm2d::new(cfg.out_chans, neck.pp("1"))?,
                Conv::new(cfg.out_chans, cfg.out_chans, 3, 1, neck.pp("2"))?,
                LayerNorm2d::new(cfg.out_chans, neck.pp("3"))?,
            ),
            net_2: Conv::new(cfg.out_chans, cfg.net_2_chans, 3, 2, vb.pp("net_2"))?,
            net_3: Conv::new(cfg.net_2_chans, cfg.net_3_chans, 3, 2, vb.pp("net_3"))?,
        })
    }

    /// pixels (B, 3, S, S) → features (B, net_3_chans, S/64, S/64).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(pixels)?;
        for i in 0..self.depth() {
            x = self.block(i, &x)?;
        }
        self.neck(&x)
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// pixels (B, 3, S, S) → patches with positions (B, S/16, S/16, C): the first block's input.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.patch_embed.forward(pixels)?;
        let (_, h, _, _) = x.dims4()?;
        let grid = self.pos_embed.dim(1)?;
        let pos = if h == grid {
            self.pos_embed.clone()
        } else {
            let planes = self.pos_embed.get(0)?.permute((2, 0, 1))?; // (C, grid, grid)
            resize_planes_bicubic_tensor(&planes, (h, h))?
                .permute((1, 2, 0))?
                .unsqueeze(0)?
                .to_dtype(x.dtype())?
        };
        x.broadcast_add(&pos)
    }

    /// Block `i` alone (a trainer recomputing one block at a time calls it directly).
    pub fn block(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        self.blocks[i].forward(x)
    }

    /// The last block's output → features (B, net_3_chans, S/64, S/64): neck and compressor.
    pub fn neck(&self, x: &Tensor) -> Result<Tensor> {
        let (c0, n1, c1, n2) = &self.neck;
        let x = n2.forward(&c1.forward(&n1.forward(&c0.forward(&x.permute((0, 3, 1, 2))?.contiguous()?)?)?)?)?;
        self.net_3.forward(&self.net_2.forward(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gathered-window convolution equals candle's conv2d (the reference conv) at both
    /// strides, odd and even sizes, and 1×1.
    #[test]
    fn conv_equals_conv2d() {
        let dev = candle_core::Device::Cpu;
        for (k, stride, h, w) in [(3, 1, 8, 6), (3, 2, 8, 8), (3, 2, 7, 9), (1, 1, 5, 4)] {
            let x = Tensor::randn(0f32, 1., (2, 5, h, w), &dev).unwrap();
            let weight = Tensor::randn(0f32, 1., (4, 5, k, k), &dev).unwrap();
            let conv = Conv {
                weight: weight.clone(),
                stride,
            };
            let want = x.conv2d(&weight, k / 2, stride, 1, 1).unwrap();
            let got = conv.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff: f32 = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-4, "k {k} stride {stride} {h}×{w}: {diff}");
        }
    }

    #[test]
    fn linear_resize_matches_torch_on_a_ramp() {
        // interpolate([0, 1, 2, 3, 4], size=3, mode="linear"): sources (i + ½)·5/3 − ½.
        let t = Tensor::new(&[[0f32], [1.], [2.], [3.], [4.]], &candle_core::Device::Cpu).unwrap();
        let r: Vec<f32> = resize_rows_linear(&t, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in r.iter().zip([1.0f32 / 3.0, 2.0, 11.0 / 3.0]) {
            assert!((a - b).abs() < 1e-5, "{r:?}");
        }
    }
}
