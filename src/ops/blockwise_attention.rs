//! Attention that keeps no score matrix for its backward pass: forward and backward walk blocks
//! of query rows, and the backward pass recomputes each block's probabilities from q and k
//! (FlashAttention's recomputation, with whole key rows per block so each block's softmax is
//! exact). Plain ops keep (heads, rows, keys) scores, their softmax and, for SAM, the
//! relative-position bias alive until the backward pass: at full size (SAM-B's global blocks
//! over 4,096 patches, nanochat d20 over 4,096 tokens) that is 0.8–1 GB per tensor per layer.
//! Here a block holds at most 32 MB of scores, in both passes.

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

use super::f32_slice;

/// Bytes of scores one block of query rows holds.
const BLOCK_BYTES: usize = 32 << 20;

/// What is added to `scale · q·kᵀ` before the softmax.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub scale: f64,
    /// `(tokens, offset)`: row r of each matrix is query `r % tokens` and sees the first
    /// `offset + r % tokens + 1` keys (grouped-query heads folded into the rows).
    pub causal: Option<(usize, usize)>,
    /// `(h, w)`: the keys are an h × w grid and q carries h + w columns past k's width, a bias
    /// per key row and one per key column (SAM's decomposed relative positions); the bias is
    /// not scaled.
    pub grid: Option<(usize, usize)>,
}

/// Whether [`attention`] takes the tensors: f32 on the CPU.
pub fn takes(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// `softmax(scale · q·kᵀ + bias + mask) · v` with q (n, rows, d [+ h + w]), k (n, keys, d),
/// v (n, keys, dv); returns (n, rows, dv). Carries gradients to q (bias columns included), k
/// and v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, spec: Spec) -> Result<Tensor> {
    let (n, rows, dq) = q.dims3()?;
    let (_, keys, d) = k.dims3()?;
    let expected = d + spec.grid.map_or(0, |(h, w)| h + w);
    let shapes_fit = dq == expected && k.dim(0)? == n && v.dim(0)? == n && v.dim(1)? == keys;
    if !shapes_fit || spec.grid.is_some_and(|(h, w)| h * w != keys) {
        candle_core::bail!(
            "blockwise attention: q {:?}, k {:?}, v {:?} do not fit {spec:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if spec.causal.is_some_and(|(tokens, _)| tokens == 0 || rows % tokens != 0) {
        candle_core::bail!("blockwise attention: {rows} rows are not whole groups of {spec:?}'s tokens");
    }
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, Blockwise(spec))
}

struct Blockwise(Spec);

/// A block of query rows: its first row, its length and how many keys any of its rows sees.
struct Block {
    start: usize,
    len: usize,
    keys: usize,
}

impl Blockwise {
    /// Blocks of at most [`BLOCK_BYTES`] of scores that never straddle a group of `tokens`
    /// rows, so a block's causal mask is a shifted triangle.
    fn blocks(&self, n: usize, rows: usize, keys: usize) -> Vec<Block> {
        let per = (BLOCK_BYTES / (4 * n * keys).max(1)).max(16);
        let group = self.0.causal.map_or(rows, |(tokens, _)| tokens);
        let mut out = Vec::new();
        for g in (0..rows).step_by(group.max(1)) {
            let end = (g + group).min(rows);
            for start in (g..end).step_by(per) {
                let len = per.min(end - start);
                let keys = match self.0.causal {
                    Some((tokens, offset)) => keys.min(offset + start % tokens + len),
                    None => keys,
                };
                out.push(Block { start, len, keys });
            }
        }
        out
    }

    /// The block's probabilities (n, len, block.keys) and its q without the bias columns.
    fn probabilities(&self, q: &Tensor, k: &Tensor, block: &Block) -> Result<(Tensor, Tensor)> {
        let d = k.dim(2)?;
        let q_b = q.narrow(1, block.start, block.len)?;
        let q_main = q_b.narrow(2, 0, d)?.contiguous()?;
        let k_b = k.narrow(1, 0, block.keys)?;
        let raw = q_main.matmul(&k_b.t()?)?;
        let p = match (self.0.grid, self.0.causal) {
            (Some((h, w)), _) => {
                let (n, len) = (q_b.dim(0)?, block.len);
                let bias_h = q_b.narrow(2, d, h)?.unsqueeze(3)?;
                let bias_w = q_b.narrow(2, d + h, w)?.unsqueeze(2)?;
                let bias = bias_h.broadcast_add(&bias_w)?.reshape((n, len, h * w))?;
                super::softmax::scaled(&((raw * self.0.scale)? + bias)?, 1.0, None)?
            }
            (None, Some((tokens, offset))) => {
                super::softmax::scaled(&raw, self.0.scale, Some((block.len, offset + block.start % tokens)))?
            }
            (None, None) => super::softmax::scaled(&raw, self.0.scale, None)?,
        };
        Ok((p, q_main))
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (n, rows, _) = q.dims3()?;
        let keys = k.dim(1)?;
        let outs = self
            .blocks(n, rows, keys)
            .iter()
            .map(|block| {
                let (p, _) = self.probabilities(q, k, block)?;
                p.matmul(&v.narrow(1, 0, block.keys)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 1)
    }
}

/// A CPU tensor holding a copy of a storage's values.
fn tensor(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    Tensor::from_slice(
        f32_slice(storage, layout, "blockwise attention")?,
        layout.shape(),
        &Device::Cpu,
    )
}

impl CustomOp3 for Blockwise {
    fn name(&self) -> &'static str {
        "vellum-blockwise-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = self.forward(&tensor(s1, l1)?, &tensor(s2, l2)?, &tensor(s3, l3)?)?;
        let shape = out.shape().clone();
        Ok((CpuStorage::F32(out.flatten_all()?.to_vec1()?), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (q, k, v) = (q.detach(), k.detach(), v.detach());
        let d_out = d_out.detach().contiguous()?;
        let (n, rows, _) = q.dims3()?;
        let keys = k.dim(1)?;
        let scale = self.0.scale;
        // Σ_j p·dp over a row equals dO·O: the softmax's backward without the probabilities.
        let row_dot = (&d_out * out.detach())?.sum_keepdim(2)?;
        let mut dk = k.zeros_like()?;
        let mut dv = v.zeros_like()?;
        let mut dq = Vec::new();
        for block in self.blocks(n, rows, keys) {
            let (p, q_main) = self.probabilities(&q, &k, &block)?;
            let do_b = d_out.narrow(1, block.start, block.len)?;
            let k_b = k.narrow(1, 0, block.keys)?;
            let v_b = v.narrow(1, 0, block.keys)?;
            let dp = do_b.matmul(&v_b.t()?)?;
            let ds = (&p * dp.broadcast_sub(&row_dot.narrow(1, block.start, block.len)?)?)?;
            let pad = keys - block.keys;
            dv = (dv + p.t()?.matmul(&do_b)?.pad_with_zeros(1, 0, pad)?)?;
            dk = (dk + (ds.t()?.matmul(&q_main)? * scale)?.pad_with_zeros(1, 0, pad)?)?;
            let dq_main = (ds.matmul(&k_b)? * scale)?;
            dq.push(match self.0.grid {
                Some((h, w)) => {
                    let ds = ds.reshape((n, block.len, h, w))?;
                    Tensor::cat(&[dq_main, ds.sum(3)?, ds.sum(2)?], 2)?
                }
                None => dq_main,
            });
        }
        Ok((Some(Tensor::cat(&dq, 1)?), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ops::rel_l2;

    /// The same attention in plain ops, materialising scores, bias and mask.
    fn plain(q: &Tensor, k: &Tensor, v: &Tensor, spec: Spec) -> Result<Tensor> {
        let d = k.dim(2)?;
        let (n, rows, _) = q.dims3()?;
        let keys = k.dim(1)?;
        let mut s = (q.narrow(2, 0, d)?.matmul(&k.t()?)? * spec.scale)?;
        if let Some((h, w)) = spec.grid {
            let bias_h = q.narrow(2, d, h)?.unsqueeze(3)?;
            let bias_w = q.narrow(2, d + h, w)?.unsqueeze(2)?;
            s = (s + bias_h.broadcast_add(&bias_w)?.reshape((n, rows, keys))?)?;
        }
        if let Some((tokens, offset)) = spec.causal {
            s = s.broadcast_add(&crate::ops::attention::causal_mask(
                rows,
                keys,
                tokens,
                offset,
                &Device::Cpu,
            )?)?;
        }
        crate::ops::activation::softmax_last_dim(&s)?.matmul(v)
    }

    /// Output and the gradients of q, k (width 16), v under a random weighting of the output;
    /// the same inputs for every `f`.
    fn run(f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>, dims: [usize; 5]) -> Vec<Tensor> {
        let [n, rows, dq, keys, dv] = dims;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut random = |shape: (usize, usize, usize)| {
            let values: Vec<f32> = (0..shape.0 * shape.1 * shape.2)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
        };
        let q = Var::from_tensor(&random((n, rows, dq))).unwrap();
        let k = Var::from_tensor(&random((n, keys, 16))).unwrap();
        let v = Var::from_tensor(&random((n, keys, dv))).unwrap();
        let weight = random((n, rows, dv));
        let out = f(q.as_tensor(), k.as_tensor(), v.as_tensor()).unwrap();
        let grads = (&out * &weight).unwrap().sum_all().unwrap().backward().unwrap();
        vec![
            out,
            grads.get(q.as_tensor()).unwrap().clone(),
            grads.get(k.as_tensor()).unwrap().clone(),
            grads.get(v.as_tensor()).unwrap().clone(),
        ]
    }

    fn check(spec: Spec, dims: [usize; 5]) {
        let ours = run(&|q, k, v| attention(q, k, v, spec), dims);
        let reference = run(&|q, k, v| plain(q, k, v, spec), dims);
        for (what, (a, b)) in ["output", "dq", "dk", "dv"].iter().zip(ours.iter().zip(&reference)) {
            let err = rel_l2(a, b).unwrap();
            assert!(err < 1e-5, "{spec:?} {dims:?}: {what} differs by {err:.2e}");
        }
    }

    #[test]
    fn matches_plain_ops_forward_and_backward() {
        let spec = |causal, grid| Spec {
            scale: 0.25,
            causal,
            grid,
        };
        // Several blocks per matrix: 4 × 20,000 keys leaves 104 rows a block.
        check(spec(None, None), [4, 300, 16, 20_000, 8]);
        // Causal over a cache offset, grouped-query rows (3 groups of 70 tokens).
        check(spec(Some((70, 5)), None), [2, 210, 16, 75, 12]);
        check(spec(Some((400, 0)), None), [3, 400, 16, 400, 16]);
        // A 12 × 10 key grid with SAM's bias columns.
        check(spec(None, Some((12, 10))), [3, 120, 16 + 22, 120, 16]);
    }
}
