//! The CLIP-L encoder of DeepEncoder (`vision_model.*`): SAM's feature map stands in for its
//! patch embeddings; a CLS token, position embeddings (interpolated when the map is not
//! 16×16), a pre-LayerNorm, then transformer layers with a fused qkv projection and quick GELU.
//! The checkpoint's own `patch_embedding` and `position_ids` are unused.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::imaging::resize_planes_bicubic_tensor;
use crate::models::linear::{linear_b, Linear};
use crate::ops::activation;
use crate::ops::norm::LayerNorm;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub ffn_hidden_size: usize,
    /// CLS + a square grid (257 = 1 + 16×16).
    pub num_positions: usize,
}

struct Layer {
    layer_norm1: LayerNorm,
    layer_norm2: LayerNorm,
    qkv_proj: Linear,
    out_proj: Linear,
    fc1: Linear,
    fc2: Linear,
    num_heads: usize,
}

impl Layer {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            layer_norm1: LayerNorm::new(h, 1e-5, vb.pp("layer_norm1"))?,
            layer_norm2: LayerNorm::new(h, 1e-5, vb.pp("layer_norm2"))?,
            qkv_proj: linear_b(h, 3 * h, true, vb.pp("self_attn.qkv_proj"), Default::default())?,
            out_proj: linear_b(h, h, true, vb.pp("self_attn.out_proj"), Default::default())?,
            fc1: linear_b(h, cfg.ffn_hidden_size, true, vb.pp("mlp.fc1"), Default::default())?,
            fc2: linear_b(cfg.ffn_hidden_size, h, true, vb.pp("mlp.fc2"), Default::default())?,
            num_heads: cfg.num_heads,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hd = c / self.num_heads;
        let qkv = self
            .qkv_proj
            .forward(x)?
            .reshape((b, t, 3, self.num_heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.i(0)?.contiguous()?,
            qkv.i(1)?.contiguous()?,
            qkv.i(2)?.contiguous()?,
        );
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let out = activation::softmax_last_dim(&scores)?.matmul(&v)?;
        self.out_proj.forward(&out.permute((0, 2, 1, 3))?.reshape((b, t, c))?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = (x + self.attention(&self.layer_norm1.forward(x)?)?)?;
        let m = self.fc1.forward(&self.layer_norm2.forward(&h)?)?;
        let quick_gelu = (&m * candle_nn::ops::sigmoid(&(&m * 1.702)?)?)?;
        &h + self.fc2.forward(&quick_gelu)?
    }
}

pub struct Clip {
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<Layer>,
}

impl Clip {
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let emb = vb.pp("embeddings");
        Ok(Self {
            class_embedding: emb.get(cfg.hidden_size, "class_embedding")?,
            position_embedding: embedding(cfg.num_positions, cfg.hidden_size, emb.pp("position_embedding"))?,
            pre_layrnorm: LayerNorm::new(cfg.hidden_size, 1e-5, vb.pp("pre_layrnorm"))?,
            layers: (0..cfg.num_layers)
                .map(|i| Layer::new(cfg, vb.pp(format!("transformer.layers.{i}"))))
                .collect::<Result<_>>()?,
        })
    }

    /// SAM features (B, C, h, w) → (B, 1 + h·w, C), the CLS row first.
    pub fn forward(&self, sam_features: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = sam_features.dims4()?;
        let patches = sam_features.flatten_from(2)?.transpose(1, 2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, c))?
            .broadcast_as((b, 1, c))?
            .to_dtype(patches.dtype())?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        let pos = self.position_embedding.embeddings();
        let grid = ((pos.dim(0)? - 1) as f64).sqrt() as usize;
        let target = (((h * w) as f64).sqrt()) as usize;
        let pos = if grid == target {
            pos.clone()
        } else {
            // (grid², C) → (C, grid, grid), resized, back to rows: in tensor ops, so the
            // position embedding keeps its gradient.
            let planes = pos.narrow(0, 1, grid * grid)?.t()?.reshape((c, grid, grid))?;
            let grid_rows = resize_planes_bicubic_tensor(&planes, (target, target))?
                .reshape((c, target * target))?
                .t()?;
            Tensor::cat(&[&pos.narrow(0, 0, 1)?, &grid_rows], 0)?
        };
        let mut x = self.pre_layrnorm.forward(&x.broadcast_add(&pos.unsqueeze(0)?)?)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}
