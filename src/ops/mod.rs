//! Tensor operations shared by the models: attention, rotary embeddings, normalisation,
//! activations, the training loss.
//!
//! Each operation has a CPU twin written with plain candle ops (it carries gradients where the
//! trainer needs them) and, with the `cuda` feature, a kernel of kernels/*.cu. The public
//! functions pick the kernel for CUDA tensors that carry no gradient, the twin otherwise; the
//! twins are public too, as the kernels' references. On the CPU, f32 tensors without gradient
//! take one-pass versions instead (`cpu_fused`, `softmax`, `skinny`, `gemm_avx512`,
//! `segment_attention`), checked against the twins; attention over tensors that carry gradients
//! takes `blockwise_attention`, whose backward pass recomputes scores rather than keeping them.
//! `int8` and `bf16_linear`, the CPU fast modes' linear layers, have no twin: they are
//! approximations, checked against their own arithmetic written out (int8) or candle's matmul of
//! the rounded values (bf16), and measured against f32.

pub(crate) mod activation;
pub mod attention;
pub mod autocast;
pub mod bf16_linear;
pub mod blockwise_attention;
pub(crate) mod cpu_fused;
pub mod gemm_avx512;
pub mod int8;
#[cfg(feature = "cuda")]
pub mod kernels;
pub(crate) mod loss;
pub(crate) mod norm;
pub mod paged_attention;
pub(crate) mod rotary;
pub mod segment_attention;
pub mod skinny;
pub mod softmax;

/// Whether the kernels serve a call over these tensors: all on a CUDA device in a kernel dtype,
/// none tracked for backprop (the kernels have no backward pass; the twins do).
#[cfg(feature = "cuda")]
fn on_kernels(tensors: &[&candle_core::Tensor]) -> bool {
    tensors.iter().all(|t| kernels::takes(t) && !t.track_op())
}

/// ‖a − b‖₂ / ‖b‖₂ in f64; infinite when the reference is zero (a check on zeros proves nothing).
pub fn rel_l2(a: &candle_core::Tensor, b: &candle_core::Tensor) -> anyhow::Result<f64> {
    let flat = |t: &candle_core::Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(t.to_device(&candle_core::Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    };
    let (a, b) = (flat(a)?, flat(b)?);
    anyhow::ensure!(a.len() == b.len(), "comparing {} values with {}", a.len(), b.len());
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    Ok(if den == 0.0 { f64::INFINITY } else { (num / den).sqrt() })
}

/// Runs `task(rows, panels)` in parallel over M rows in blocks of `row_block` × the weight
/// panels, the panels split so that every thread has tasks when the rows are few (decode).
fn tile_tasks(
    m: usize,
    row_block: usize,
    panels: usize,
    task: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync + Send,
) {
    use rayon::prelude::*;
    let row_blocks = m.div_ceil(row_block);
    let splits = (4 * rayon::current_num_threads()).div_ceil(row_blocks).clamp(1, panels);
    let per_split = panels.div_ceil(splits);
    (0..row_blocks * splits).into_par_iter().for_each(|t| {
        let (block, split) = (t / splits, t % splits);
        task(
            block * row_block..((block + 1) * row_block).min(m),
            split * per_split..((split + 1) * per_split).min(panels),
        )
    });
}

/// An output buffer that parallel tasks write in disjoint parts (the linear kernels' tiles).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: shared only for disjoint writes, which each user's SAFETY comment shows.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A converted linear layer's weights (N, K), read in place as f32 (a 7B model's LM head is
/// 2 GB in f32): `convert` gets the values, N and K. `what` names the layer in errors.
fn convert_linear_weight<R>(
    weight: &candle_core::Tensor,
    what: &str,
    convert: impl FnOnce(&[f32], usize, usize) -> R,
) -> candle_core::Result<R> {
    let (n, k) = weight.dims2()?;
    if n == 0 || k == 0 {
        candle_core::bail!("{what}: an empty ({n}, {k}) weight");
    }
    let weight = weight.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let (storage, layout) = weight.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        candle_core::bail!("{what}: CPU weights only");
    };
    Ok(convert(f32_slice(storage, layout, what)?, n, k))
}

/// A converted linear layer's bias for `n` outputs in f32, zero-padded to `padded` (zeros without
/// a bias).
fn padded_bias(
    bias: Option<&candle_core::Tensor>,
    n: usize,
    padded: usize,
    what: &str,
) -> candle_core::Result<Vec<f32>> {
    let mut b = vec![0f32; padded];
    if let Some(bias) = bias {
        let values: Vec<f32> = bias.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        if values.len() != n {
            candle_core::bail!("{what}: {} bias values for {n} outputs", values.len());
        }
        b[..n].copy_from_slice(&values);
    }
    Ok(b)
}

/// A converted linear layer's forward pass over `x` (..., K) as a custom op: the rows to
/// `matmul` (values, M), the result shaped (..., N).
fn linear_forward(
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    (k, n): (usize, usize),
    what: &str,
    matmul: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let x = f32_slice(storage, layout, what)?;
    let mut dims = layout.shape().dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("{what}: input {dims:?} for {k} inputs");
    }
    *dims.last_mut().expect("checked above") = n;
    Ok((
        candle_core::CpuStorage::F32(matmul(x, x.len() / k)),
        candle_core::Shape::from(dims),
    ))
}

/// An f32 CPU matrix, contiguous, without gradient: what the one-pass matmuls take.
fn plain_matrix(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && !t.track_op() && t.is_contiguous() && t.rank() == 2
}

/// The values of a contiguous f32 CPU tensor, for the one-pass CPU ops (`what` names the op in
/// the error).
fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(all) = storage else {
        candle_core::bail!("{what}: f32 only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => candle_core::bail!("{what}: contiguous tensors only"),
    }
}
