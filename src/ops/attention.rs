//! Scaled dot-product attention: causal attention over a key/value cache for the decoders, and
//! variable-length (packed) bidirectional attention for vision towers.
//!
//! Decoders see the cache only through [`AttentionCache`]: a model layer hands over this step's
//! queries, keys and values as flat token rows and gets the attention output back, so a paged
//! cache can replace the contiguous one without touching model code.

use candle_core::{DType, Device, Result, Tensor, D};

/// Stores keys/values per layer and attends over them.
pub trait AttentionCache {
    /// Appends this step's `k`, `v` (tokens, kv_heads, head_dim) to `layer`'s cache and returns
    /// the causal attention of `q` (tokens, heads, head_dim) over everything cached for the
    /// sequence, as (tokens, heads, head_dim).
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor>;
}

/// One sequence's cache as a growing contiguous tensor per layer.
pub struct ContiguousKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl ContiguousKvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }
}

impl AttentionCache for ContiguousKvCache {
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        // Cache layout (kv_heads, tokens, head_dim): appending is a cat along dim 1.
        let k_new = k.transpose(0, 1)?.contiguous()?;
        let v_new = v.transpose(0, 1)?.contiguous()?;
        let (k_all, v_all) = match self.layers[layer].take() {
            Some((k_old, v_old)) => (Tensor::cat(&[&k_old, &k_new], 1)?, Tensor::cat(&[&v_old, &v_new], 1)?),
            None => (k_new, v_new),
        };
        let out = causal_attention(q, &k_all, &v_all)?;
        if layer + 1 == self.layers.len() {
            self.len = k_all.dim(1)?;
        }
        self.layers[layer] = Some((k_all, v_all));
        Ok(out)
    }
}

impl ContiguousKvCache {
    /// Tokens cached (the position the next token takes).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Causal attention of the last `tokens` queries over `kv_len` cached keys: query i sees keys
/// up to `kv_len - tokens + i`. `q` is (tokens, heads, head_dim); `k`, `v` are
/// (kv_heads, kv_len, head_dim) with heads a multiple of kv_heads (grouped-query attention).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (tokens, heads, head_dim) = q.dims3()?;
    let (kv_heads, kv_len, _) = k.dims3()?;
    let group = heads / kv_heads;
    // Fold each kv head's group of query heads into the row dimension: one matmul per kv head.
    let q = q
        .transpose(0, 1)? // (heads, tokens, hd)
        .reshape((kv_heads, group * tokens, head_dim))?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let causal = Some((tokens, kv_len - tokens));
    // Training: the backward pass recomputes scores rather than keeping them.
    let trains = [&q, k, v].iter().any(|t| t.track_op());
    let out = if trains && super::blockwise_attention::takes(&q, k, v) {
        let spec = super::blockwise_attention::Spec {
            scale,
            causal,
            grid: None,
        };
        super::blockwise_attention::attention(&q, k, v, spec)?
    } else {
        probabilities(&q.matmul(&k.t()?)?, scale, causal, v.dtype())?.matmul(v)?
    };
    out // (kv_heads, group*tokens, hd)
        .reshape((heads, tokens, head_dim))?
        .transpose(0, 1)?
        .contiguous()
}

/// `softmax(scale · raw)` over the last dimension, in `dtype`, computed in f32; with `causal =
/// (tokens, offset)` row r of each matrix is query `r % tokens`, which sees the first
/// `offset + r % tokens + 1` keys. The CPU softmax applies scale and mask on the way.
fn probabilities(raw: &Tensor, scale: f64, causal: Option<(usize, usize)>, dtype: DType) -> Result<Tensor> {
    if super::softmax::takes(raw) && dtype == DType::F32 {
        return super::softmax::scaled(raw, scale, causal);
    }
    let scores = (raw * scale)?.to_dtype(DType::F32)?;
    let scores = match causal {
        Some((tokens, offset)) if tokens > 1 => {
            let (rows, keys) = (scores.dim(1)?, scores.dim(2)?);
            scores.broadcast_add(&causal_mask(rows, keys, tokens, offset, raw.device())?)?
        }
        _ => scores,
    };
    super::activation::softmax_last_dim(&scores)?.to_dtype(dtype)
}

/// The additive mask (1, rows, keys) of [`probabilities`]' causal case: row r (query r % tokens)
/// sees the first `offset + r % tokens + 1` keys.
pub(crate) fn causal_mask(rows: usize, keys: usize, tokens: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..rows)
        .flat_map(|r| {
            (0..keys).map(move |j| {
                if j <= offset + r % tokens {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (1, rows, keys), device)
}

/// Bidirectional attention within each segment `cu_seqlens[i]..cu_seqlens[i+1]` of packed
/// rows: `q`, `k`, `v` are (tokens, heads, head_dim); returns the same shape.
pub fn varlen_attention(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize]) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::on_kernels(&[q, k, v]) && super::kernels::HEAD_DIMS.contains(&q.dim(D::Minus1)?) {
        return super::kernels::varlen_attention(q, k, v, cu_seqlens);
    }
    if super::segment_attention::takes(q, k, v) {
        return super::segment_attention::attention(q, k, v, cu_seqlens);
    }
    varlen_attention_reference(q, k, v, cu_seqlens)
}

/// Bytes of attention scores the CPU path holds at once: a segment whose full score matrix
/// would be larger is done a band of query rows at a time (a FinePDFs page through RolmOCR's
/// tower is ≈ 6,400 patches × 16 heads, 2.6 GB of f32 scores per full-attention block).
/// 16 MiB keeps each band's buffers under the allocator's mmap threshold (`ocr` sets it to
/// 32 MiB), so they are reused rather than faulted in afresh.
const SCORE_BUDGET_BYTES: usize = 16 << 20;

/// The CPU twin of the varlen attention kernel.
pub fn varlen_attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize]) -> Result<Tensor> {
    varlen_attention_banded(q, k, v, cu_seqlens, SCORE_BUDGET_BYTES)
}

/// As [`varlen_attention_reference`], holding at most `budget` bytes of scores: softmax is per
/// query row, so bands of rows give the same rows as the whole matrix.
fn varlen_attention_banded(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize], budget: usize) -> Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let heads = q.dim(1)?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let (q, k, v) = (
        q.transpose(0, 1)?.contiguous()?,
        k.transpose(0, 1)?.contiguous()?,
        v.transpose(0, 1)?.contiguous()?,
    );
    let mut outputs = Vec::with_capacity(cu_seqlens.len());
    for w in cu_seqlens.windows(2) {
        let (start, len) = (w[0], w[1] - w[0]);
        if len == 0 {
            continue;
        }
        let ks = k.narrow(1, start, len)?;
        let vs = v.narrow(1, start, len)?;
        let kt = ks.t()?;
        let band = (budget / (heads * len * 4)).clamp(1, len);
        let mut row = 0;
        while row < len {
            let rows = band.min(len - row);
            let qs = q.narrow(1, start + row, rows)?;
            let probs = probabilities(&qs.matmul(&kt)?, scale, None, vs.dtype())?;
            outputs.push(probs.matmul(&vs)?);
            row += rows;
        }
    }
    Tensor::cat(&outputs, 1)?.transpose(0, 1)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention computed one query, one head at a time with scalar loops.
    fn naive(
        q: &[Vec<Vec<f32>>],
        k: &[Vec<Vec<f32>>],
        v: &[Vec<Vec<f32>>],
        causal_offset: usize,
    ) -> Vec<Vec<Vec<f32>>> {
        let heads = q[0].len();
        let kv_heads = k[0].len();
        let hd = q[0][0].len();
        q.iter()
            .enumerate()
            .map(|(i, qi)| {
                (0..heads)
                    .map(|h| {
                        let kh = h / (heads / kv_heads);
                        let visible = causal_offset + i + 1;
                        let s: Vec<f32> = (0..visible)
                            .map(|j| (0..hd).map(|d| qi[h][d] * k[j][kh][d]).sum::<f32>() / (hd as f32).sqrt())
                            .collect();
                        let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                        let z: f32 = e.iter().sum();
                        (0..hd)
                            .map(|d| (0..visible).map(|j| e[j] / z * v[j][kh][d]).sum())
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn cached_decode_matches_naive_gqa_attention() -> Result<()> {
        let dev = Device::Cpu;
        let (heads, kv_heads, hd, prompt, steps) = (4, 2, 8, 5, 3);
        let total = prompt + steps;
        let q = Tensor::randn(0f32, 1., (total, heads, hd), &dev)?;
        let k = Tensor::randn(0f32, 1., (total, kv_heads, hd), &dev)?;
        let v = Tensor::randn(0f32, 1., (total, kv_heads, hd), &dev)?;
        let mut cache = ContiguousKvCache::new(1);
        let mut outs = vec![cache.attend(
            0,
            &q.narrow(0, 0, prompt)?,
            &k.narrow(0, 0, prompt)?,
            &v.narrow(0, 0, prompt)?,
        )?];
        for t in prompt..total {
            outs.push(cache.attend(0, &q.narrow(0, t, 1)?, &k.narrow(0, t, 1)?, &v.narrow(0, t, 1)?)?);
        }
        assert_eq!(cache.len(), total);
        let got = Tensor::cat(&outs, 0)?.to_vec3::<f32>()?;
        let want = naive(&q.to_vec3()?, &k.to_vec3()?, &v.to_vec3()?, 0);
        let max_err = got
            .iter()
            .flatten()
            .flatten()
            .zip(want.iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_err < 1e-5, "max error {max_err}");
        Ok(())
    }

    #[test]
    fn varlen_segments_do_not_see_each_other() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (7, 2, 4), &dev)?;
        let k = Tensor::randn(0f32, 1., (7, 2, 4), &dev)?;
        let v = Tensor::randn(0f32, 1., (7, 2, 4), &dev)?;
        let packed = varlen_attention(&q, &k, &v, &[0, 3, 3, 7])?;
        for (start, len) in [(0, 3), (3, 4)] {
            let alone = varlen_attention(
                &q.narrow(0, start, len)?,
                &k.narrow(0, start, len)?,
                &v.narrow(0, start, len)?,
                &[0, len],
            )?;
            let diff = (packed.narrow(0, start, len)? - alone)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-6, "segment at {start}: {diff}");
        }
        Ok(())
    }

    #[test]
    fn banded_varlen_attention_equals_the_whole_matrix() {
        let dev = Device::Cpu;
        let (tokens, heads, hd) = (37, 3, 8);
        let q = Tensor::randn(0f32, 1.0, (tokens, heads, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (tokens, heads, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (tokens, heads, hd), &dev).unwrap();
        let cu = [0, 5, 30, 37];
        let whole = varlen_attention_banded(&q, &k, &v, &cu, usize::MAX).unwrap();
        // 4 query rows of 25 keys × 3 heads per band in the long segment.
        let banded = varlen_attention_banded(&q, &k, &v, &cu, 4 * 25 * 3 * 4).unwrap();
        let diff = (whole - banded)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-6, "{diff}");
    }
}
