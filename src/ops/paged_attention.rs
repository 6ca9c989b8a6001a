//! Paged attention: keys and values live in fixed-size blocks, and each sequence reaches its
//! own through a block table. One call handles a flat batch mixing prefill chunks (on top of
//! cached prefix blocks or earlier chunks) and single decode tokens: it writes the new
//! keys/values into their slots, then each query attends causally over its sequence's
//! positions, read straight from the blocks.
//!
//! On the CPU the cache is host memory and work is spread over (sequence, head) pairs with
//! rayon; this path is also the twin of the CUDA kernels, which serve a cache that lives on the
//! GPU in the model's dtype.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::attention::AttentionCache;
use super::softmax::kernels;

/// A block of the paged cache, by index.
pub type BlockId = u32;

/// Key/value storage for every layer, `[block][slot][kv_head][head_dim]`.
pub struct PagedKv {
    layers: Layers,
    block_size: usize,
    kv_heads: usize,
    head_dim: usize,
}

enum Layers {
    /// f32 in host memory.
    Host { keys: Vec<Vec<f32>>, values: Vec<Vec<f32>> },
    /// (blocks, block_size, kv_heads, head_dim) tensors on a CUDA device, in the model's dtype,
    /// written and read only by the kernels.
    #[cfg(feature = "cuda")]
    Device { keys: Vec<Tensor>, values: Vec<Tensor> },
}

impl PagedKv {
    /// Allocates and touches the whole cache: its memory is taken at start, not page by page as
    /// blocks get used, so a long run's footprint is the same from its first page. On a CUDA
    /// device whose head dimension the kernels are built for, the cache lives there in `dtype`;
    /// otherwise in host memory as f32.
    pub fn new(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let layers = if Self::on_device(device, head_dim) {
            Self::device_layers(num_layers, (num_blocks, block_size, kv_heads, head_dim), device, dtype)?
        } else {
            let len = num_blocks * block_size * kv_heads * head_dim;
            let reserved = || {
                let mut v = vec![0.0f32; len];
                for i in (0..len).step_by(1024) {
                    // SAFETY: in bounds; volatile so the page is really faulted in.
                    unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(i), 0.0) };
                }
                v
            };
            Layers::Host {
                keys: (0..num_layers).map(|_| reserved()).collect(),
                values: (0..num_layers).map(|_| reserved()).collect(),
            }
        };
        Ok(Self {
            layers,
            block_size,
            kv_heads,
            head_dim,
        })
    }

    /// Whether a cache for this device and head dimension lives on the device.
    pub fn on_device(device: &Device, head_dim: usize) -> bool {
        #[cfg(feature = "cuda")]
        if device.is_cuda() && super::kernels::HEAD_DIMS.contains(&head_dim) {
            return true;
        }
        let _ = (device, head_dim);
        false
    }

    #[cfg(feature = "cuda")]
    fn device_layers(
        num_layers: usize,
        shape: (usize, usize, usize, usize),
        device: &Device,
        dtype: DType,
    ) -> Result<Layers> {
        let zeros = || Tensor::zeros(shape, dtype, device);
        Ok(Layers::Device {
            keys: (0..num_layers).map(|_| zeros()).collect::<Result<_>>()?,
            values: (0..num_layers).map(|_| zeros()).collect::<Result<_>>()?,
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn device_layers(_: usize, _: (usize, usize, usize, usize), device: &Device, _: DType) -> Result<Layers> {
        candle_core::bail!("a KV cache on {device:?} needs the `cuda` feature")
    }
}

/// One sequence's rows in the flat batch.
#[derive(Debug, Clone)]
pub struct SeqRows<'a> {
    /// First row of this sequence in the batch.
    pub start: usize,
    pub len: usize,
    /// Tokens already in the cache before these rows (their positions start here).
    pub context: usize,
    pub blocks: &'a [BlockId],
}

/// A step's view of the paged cache, as the models' attention layers see it.
pub struct PagedAttention<'a> {
    kv: &'a mut PagedKv,
    seqs: Vec<SeqRows<'a>>,
    /// The step's block tables and slots on the device, built at the first layer.
    #[cfg(feature = "cuda")]
    device_batch: Option<DeviceBatch>,
}

impl<'a> PagedAttention<'a> {
    pub fn new(kv: &'a mut PagedKv, seqs: Vec<SeqRows<'a>>) -> Self {
        Self {
            kv,
            seqs,
            #[cfg(feature = "cuda")]
            device_batch: None,
        }
    }
}

#[cfg(feature = "cuda")]
struct DeviceBatch {
    /// Cache slot of each row.
    slots: Tensor,
    paged: super::kernels::PagedBatch,
}

fn to_f32_rows(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

impl AttentionCache for PagedAttention<'_> {
    fn attend(&mut self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        match &mut self.kv.layers {
            Layers::Host { keys, values } => attend_host(
                &mut keys[layer],
                &mut values[layer],
                &self.seqs,
                (self.kv.block_size, self.kv.kv_heads, self.kv.head_dim),
                q,
                k,
                v,
            ),
            #[cfg(feature = "cuda")]
            Layers::Device { keys, values } => {
                use super::kernels;
                if self.device_batch.is_none() {
                    let block_size = self.kv.block_size;
                    let slots: Vec<u32> = self
                        .seqs
                        .iter()
                        .flat_map(|s| {
                            (s.context..s.context + s.len)
                                .map(move |p| s.blocks[p / block_size] * block_size as u32 + (p % block_size) as u32)
                        })
                        .collect();
                    let rows: Vec<_> = self
                        .seqs
                        .iter()
                        .map(|s| (s.start, s.len, s.context, s.blocks))
                        .collect();
                    self.device_batch = Some(DeviceBatch {
                        slots: Tensor::new(slots.as_slice(), q.device())?,
                        paged: kernels::PagedBatch::new(&rows, q.device())?,
                    });
                }
                let batch = self.device_batch.as_ref().expect("built above");
                let (k_cache, v_cache) = (&keys[layer], &values[layer]);
                kernels::reshape_and_cache(k, k_cache, &batch.slots)?;
                kernels::reshape_and_cache(v, v_cache, &batch.slots)?;
                let out = if batch.paged.decode {
                    kernels::paged_decode(q, k_cache, v_cache, &batch.paged)?
                } else {
                    kernels::paged_prefill(q, k_cache, v_cache, &batch.paged)?
                };
                out.to_dtype(q.dtype())
            }
        }
    }
}

/// The host path (and the kernels' twin): writes this step's keys/values into their slots of
/// one layer's `keys`/`values`, then attends.
fn attend_host(
    keys: &mut [f32],
    values: &mut [f32],
    seqs: &[SeqRows],
    (block_size, kv_heads, head_dim): (usize, usize, usize),
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let (tokens, heads, _) = q.dims3()?;
    let row = kv_heads * head_dim;
    let slot = |blocks: &[BlockId], position: usize| {
        (blocks[position / block_size] as usize * block_size + position % block_size) * row
    };
    let (k_new, v_new) = (to_f32_rows(k)?, to_f32_rows(v)?);
    for s in seqs {
        for j in 0..s.len {
            let at = slot(s.blocks, s.context + j);
            let src = (s.start + j) * row;
            keys[at..at + row].copy_from_slice(&k_new[src..src + row]);
            values[at..at + row].copy_from_slice(&v_new[src..src + row]);
        }
    }
    let queries = to_f32_rows(q)?;
    let (keys, values) = (&*keys, &*values);
    let mut output = vec![0.0f32; tokens * heads * head_dim];
    // Prefill chunks as GEMMs over the sequence's keys/values gathered out of the blocks; the
    // per-row path below would do their score rows one scalar-dot at a time.
    let (long, short): (Vec<&SeqRows>, Vec<&SeqRows>) = seqs.iter().partition(|s| s.len >= GEMM_ROWS);
    for s in long {
        let visible = s.context + s.len;
        let mut k_seq = vec![0f32; kv_heads * visible * head_dim];
        let mut v_seq = vec![0f32; kv_heads * visible * head_dim];
        for p in 0..visible {
            let at = slot(s.blocks, p);
            for h in 0..kv_heads {
                let dst = (h * visible + p) * head_dim;
                let src = at + h * head_dim;
                k_seq[dst..dst + head_dim].copy_from_slice(&keys[src..src + head_dim]);
                v_seq[dst..dst + head_dim].copy_from_slice(&values[src..src + head_dim]);
            }
        }
        let shape = (kv_heads, visible, head_dim);
        let q_seq = &queries[s.start * heads * head_dim..(s.start + s.len) * heads * head_dim];
        let out = super::attention::causal_attention(
            &Tensor::from_slice(q_seq, (s.len, heads, head_dim), &Device::Cpu)?,
            &Tensor::from_vec(k_seq, shape, &Device::Cpu)?,
            &Tensor::from_vec(v_seq, shape, &Device::Cpu)?,
        )?;
        let rows = out.flatten_all()?.to_vec1::<f32>()?;
        output[s.start * heads * head_dim..][..rows.len()].copy_from_slice(&rows);
    }
    let work: Vec<(&SeqRows, usize)> = short.iter().flat_map(|&s| (0..heads).map(move |h| (s, h))).collect();
    let host = Host {
        queries: &queries,
        keys,
        values,
        block_size,
        kv_heads,
        heads,
        head_dim,
    };
    let results: Vec<Vec<f32>> = work.par_iter().map(|&(s, h)| host.rows(s, h)).collect();
    for (&(s, h), rows) in work.iter().zip(&results) {
        for j in 0..s.len {
            let dst = ((s.start + j) * heads + h) * head_dim;
            output[dst..dst + head_dim].copy_from_slice(&rows[j * head_dim..(j + 1) * head_dim]);
        }
    }
    Tensor::from_vec(output, (tokens, heads, head_dim), q.device())?.to_dtype(q.dtype())
}

/// What the row-by-row path reads.
struct Host<'a> {
    queries: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    block_size: usize,
    kv_heads: usize,
    heads: usize,
    head_dim: usize,
}

impl Host<'_> {
    /// Head `h`'s output rows (len × head_dim) of sequence `s`, each query over its visible
    /// positions; compiled for AVX2+FMA where the CPU has them.
    fn rows(&self, s: &SeqRows, h: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features the function is compiled for are present.
            return unsafe { self.rows_avx2(s, h) };
        }
        self.rows_portable(s, h)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn rows_avx2(&self, s: &SeqRows, h: usize) -> Vec<f32> {
        self.rows_portable(s, h)
    }

    #[inline(always)]
    fn rows_portable(&self, s: &SeqRows, h: usize) -> Vec<f32> {
        let (head_dim, row) = (self.head_dim, self.kv_heads * self.head_dim);
        let kvh = h / (self.heads / self.kv_heads);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let at = |p: usize| {
            (s.blocks[p / self.block_size] as usize * self.block_size + p % self.block_size) * row + kvh * head_dim
        };
        let mut out = vec![0.0f32; s.len * head_dim];
        let mut scores = Vec::with_capacity(s.context + s.len);
        for j in 0..s.len {
            let qrow = &self.queries[((s.start + j) * self.heads + h) * head_dim..][..head_dim];
            let visible = s.context + j + 1;
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for p in 0..visible {
                let off = at(p);
                let dot = kernels::dot(qrow, &self.keys[off..off + head_dim]) * scale;
                max = max.max(dot);
                scores.push(dot);
            }
            let total = kernels::exp_shifted_sum(&mut scores, max);
            let o = &mut out[j * head_dim..(j + 1) * head_dim];
            for (p, &w) in scores.iter().enumerate() {
                let off = at(p);
                kernels::axpy(w / total, &self.values[off..off + head_dim], o);
            }
        }
        out
    }
}

/// Rows from which a sequence's chunk attends by GEMMs rather than row by row.
const GEMM_ROWS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::causal_attention;
    use candle_core::Device;
    use rand::{seq::SliceRandom, Rng, SeedableRng};

    /// Paged attention over scattered blocks equals plain causal attention over the same K/V,
    /// for batches mixing chunked prefills and decodes.
    #[test]
    fn matches_plain_attention_across_random_block_layouts() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (heads, kv_heads, hd, bs, num_blocks) = (6, 2, 16, 4, 64);
        for trial in 0..6 {
            let mut kv = PagedKv::new(1, num_blocks, bs, kv_heads, hd, &dev, DType::F32)?;
            let mut free: Vec<BlockId> = (0..num_blocks as BlockId).collect();
            free.shuffle(&mut rng);
            // Three sequences: total lengths and how many tokens each has cached already.
            let lens: Vec<(usize, usize)> = (0..3)
                .map(|_| {
                    let total = rng.random_range(1..40usize);
                    (total, rng.random_range(0..total))
                })
                .collect();
            let tables: Vec<Vec<BlockId>> = lens
                .iter()
                .map(|&(t, _)| (0..t.div_ceil(bs)).map(|_| free.pop().unwrap()).collect())
                .collect();
            let full: Vec<(Tensor, Tensor, Tensor)> = lens
                .iter()
                .map(|&(t, _)| {
                    Ok((
                        Tensor::randn(0f32, 1., (t, heads, hd), &dev)?,
                        Tensor::randn(0f32, 1., (t, kv_heads, hd), &dev)?,
                        Tensor::randn(0f32, 1., (t, kv_heads, hd), &dev)?,
                    ))
                })
                .collect::<Result<_>>()?;
            // Step 1: each sequence's cached part; step 2: the rest, all in one flat batch.
            for step in 0..2 {
                let mut seqs = Vec::new();
                let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
                let mut start = 0;
                for (i, &(total, cached)) in lens.iter().enumerate() {
                    let (from, to) = if step == 0 { (0, cached) } else { (cached, total) };
                    if to == from {
                        continue;
                    }
                    seqs.push(SeqRows {
                        start,
                        len: to - from,
                        context: from,
                        blocks: &tables[i],
                    });
                    qs.push(full[i].0.narrow(0, from, to - from)?);
                    ks.push(full[i].1.narrow(0, from, to - from)?);
                    vs.push(full[i].2.narrow(0, from, to - from)?);
                    start += to - from;
                }
                if seqs.is_empty() {
                    continue;
                }
                let idx: Vec<(usize, usize, usize)> = seqs.iter().map(|s| (s.start, s.len, s.context)).collect();
                let mut attn = PagedAttention::new(&mut kv, seqs);
                let out = attn.attend(0, &Tensor::cat(&qs, 0)?, &Tensor::cat(&ks, 0)?, &Tensor::cat(&vs, 0)?)?;
                // Reference: plain attention over each sequence's keys up to the chunk end.
                let mut n = 0;
                for (i, &(total, cached)) in lens.iter().enumerate() {
                    let (from, to) = if step == 0 { (0, cached) } else { (cached, total) };
                    if to == from {
                        continue;
                    }
                    let (s_start, s_len, _) = idx[n];
                    n += 1;
                    let k = full[i].1.narrow(0, 0, to)?.transpose(0, 1)?.contiguous()?;
                    let v = full[i].2.narrow(0, 0, to)?.transpose(0, 1)?.contiguous()?;
                    let want = causal_attention(&full[i].0.narrow(0, from, to - from)?, &k, &v)?;
                    let got = out.narrow(0, s_start, s_len)?;
                    let err = ((&got - &want)?.sqr()?.sum_all()?.sqrt()? / want.sqr()?.sum_all()?.sqrt()?)?
                        .to_scalar::<f32>()?;
                    assert!(err <= 1e-5, "trial {trial} step {step} seq {i}: rel error {err}");
                }
            }
        }
        Ok(())
    }
}
