//! vellum's CUDA kernels (kernels/*.cu, compiled to PTX by build.rs), launched on candle's
//! stream. Every function here has a CPU twin in the neighbouring modules, which is its
//! reference; callers go through those modules, which pick the kernel for CUDA tensors that
//! carry no gradient.
//!
//! Tensors reach the kernels as raw device addresses: everything runs on candle's single stream,
//! so stream order is the only synchronisation needed, and a tensor dropped after a launch is
//! freed stream-ordered, after the kernel has read it.

use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorageSlice, WrapErr};
use candle_core::{bail, DType, Device, Result, Storage, Tensor};

struct Module {
    name: &'static str,
    ptx: &'static str,
}

const ACTIVATION: Module = Module {
    name: "vellum_activation",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/activation.ptx")),
};
const ATTENTION: Module = Module {
    name: "vellum_attention",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
};
const NORM: Module = Module {
    name: "vellum_norm",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/norm.ptx")),
};
const ROTARY: Module = Module {
    name: "vellum_rotary",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/rotary.ptx")),
};

/// Head dimensions the attention kernels are instantiated for (kernels/attention.cu).
pub const HEAD_DIMS: [usize; 6] = [8, 16, 24, 64, 80, 128];

/// Positions per partition of a split-K decode.
pub const DECODE_PARTITION: usize = 512;

const DECODE_THREADS: u32 = 128;
/// Query heads per KV head the decode kernel serves (kernels/attention.cu's MAX_GROUP).
const MAX_GROUP: usize = 8;
/// Shared memory a block may take without opting in to more.
const MAX_SHARED: usize = 48 * 1024;
const TILE_ROWS: usize = 16;
const TILE_THREADS: u32 = 128;

/// Launches a tiled attention kernel over (tiles of 16 query rows, heads, segments) and returns
/// its output, the kernel's first argument; `args` are the rest. The tensor-core (wmma) variant,
/// one warp per tile, serves 16-bit dtypes and head dims that are multiples of 16; the CUDA-core
/// one (8 threads per row) the others.
fn launch_tiled(kernel: &str, q: &Tensor, max_rows: usize, segments: usize, args: &[Arg]) -> Result<Tensor> {
    let (_, heads, dim) = q.dims3()?;
    let dt = suffix(q.dtype())?;
    let (name, threads) = if q.dtype() != DType::F32 && dim.is_multiple_of(16) {
        (format!("{kernel}_mma_{dt}_d{dim}"), 32)
    } else {
        (format!("{kernel}_{dt}_d{dim}"), TILE_THREADS)
    };
    let out = output_like(q)?;
    let cfg = LaunchConfig {
        grid_dim: (max_rows.div_ceil(TILE_ROWS) as u32, heads as u32, segments as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut all = vec![ptr(&out)?];
    all.extend_from_slice(args);
    launch(&cuda_device(q)?, &ATTENTION, &name, cfg, &all)?;
    Ok(out)
}

/// Whether the kernels take this tensor: on a CUDA device, in a float dtype they are built for.
pub fn takes(t: &Tensor) -> bool {
    t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    U32(u32),
    F32(f32),
    Len(usize),
}

fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        other => bail!("vellum kernel on a {other:?} tensor"),
    }
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => bail!("vellum kernels take f32, bf16 or f16, not {other:?}"),
    })
}

/// Device address of a contiguous tensor's first element.
fn ptr(t: &Tensor) -> Result<Arg> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("vellum kernel on a {:?} tensor", t.device())
    };
    if !layout.is_contiguous() {
        bail!("vellum kernels take contiguous tensors (shape {:?})", t.shape());
    }
    let stream = s.device.cuda_stream();
    let bytes = (layout.start_offset() * t.dtype().size_in_bytes()) as u64;
    let base = match &s.slice {
        CudaStorageSlice::F32(x) => x.device_ptr(&stream).0,
        CudaStorageSlice::BF16(x) => x.device_ptr(&stream).0,
        CudaStorageSlice::F16(x) => x.device_ptr(&stream).0,
        CudaStorageSlice::U32(x) => x.device_ptr(&stream).0,
        _ => bail!("vellum kernels take f32, bf16, f16 or u32 tensors, not {:?}", t.dtype()),
    };
    Ok(Arg::Ptr(base + bytes))
}

fn launch(dev: &CudaDevice, module: &Module, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    let func = dev.get_or_load_custom_func(name, module.name, module.ptx)?;
    let mut builder = func.builder();
    for a in args {
        match a {
            Arg::Ptr(p) => builder.arg(p),
            Arg::U32(v) => builder.arg(v),
            Arg::F32(v) => builder.arg(v),
            Arg::Len(v) => builder.arg(v),
        };
    }
    // SAFETY: the argument list matches the kernel's signature in kernels/*.cu, and every
    // pointer addresses a live tensor of the size the kernel reads or writes.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(())
}

fn elementwise(n: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = n.div_ceil(threads as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A fresh tensor for a kernel to fill.
fn output_like(t: &Tensor) -> Result<Tensor> {
    // SAFETY: every element is written by the kernel before anything reads it.
    unsafe { Tensor::empty(t.shape(), t.dtype(), t.device()) }
}

/// An elementwise kernel of kernels/activation.cu over `inputs` (one shape), writing a tensor
/// like the first; `extra` follows the element count.
fn activation(name: &str, inputs: &[&Tensor], extra: &[Arg]) -> Result<Tensor> {
    let inputs = inputs.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let out = output_like(&inputs[0])?;
    let n = out.elem_count();
    let mut args = inputs.iter().map(ptr).collect::<Result<Vec<_>>>()?;
    args.extend([ptr(&out)?, Arg::Len(n)]);
    args.extend_from_slice(extra);
    let name = format!("{name}_{}", suffix(out.dtype())?);
    launch(&cuda_device(&out)?, &ACTIVATION, &name, elementwise(n), &args)?;
    Ok(out)
}

pub fn silu_and_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    activation("silu_and_mul", &[gate, up], &[])
}

pub fn relu_squared(x: &Tensor) -> Result<Tensor> {
    activation("relu_squared", &[x], &[])
}

pub fn softcap(x: &Tensor, cap: f32) -> Result<Tensor> {
    activation("softcap", &[x], &[Arg::F32(cap)])
}

/// RMSNorm over the last dimension; with `residual`, of `x + residual`, which is returned too.
pub fn rms_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    let x = x.contiguous()?;
    let cols = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / cols.max(1);
    let out = output_like(&x)?;
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    let sum = residual.as_ref().map(|_| output_like(&x)).transpose()?;
    let weight = weight.map(|w| w.contiguous()).transpose()?;
    let optional = |t: &Option<Tensor>| t.as_ref().map(ptr).unwrap_or(Ok(Arg::Ptr(0)));
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: ((cols.next_power_of_two() as u32).clamp(32, 1024), 1, 1),
        shared_mem_bytes: 0,
    };
    let name = format!("rms_norm_{}", suffix(x.dtype())?);
    launch(
        &cuda_device(&x)?,
        &NORM,
        &name,
        cfg,
        &[
            ptr(&x)?,
            optional(&residual)?,
            optional(&weight)?,
            ptr(&out)?,
            optional(&sum)?,
            Arg::U32(cols as u32),
            Arg::F32(eps as f32),
        ],
    )?;
    Ok((out, sum))
}

/// Rotary embedding of `x` (tokens, heads, head_dim) from f32 tables (tokens, ≥ head_dim/2);
/// `sign` −1 rotates by −θ (nanochat).
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor, sign: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (tokens, heads, dim) = x.dims3()?;
    let (cos, sin) = (
        cos.to_dtype(DType::F32)?.contiguous()?,
        sin.to_dtype(DType::F32)?.contiguous()?,
    );
    let stride = cos.dim(1)?;
    let out = output_like(&x)?;
    let name = format!("rotary_{}", suffix(x.dtype())?);
    launch(
        &cuda_device(&x)?,
        &ROTARY,
        &name,
        elementwise(tokens * heads * dim / 2),
        &[
            ptr(&x)?,
            ptr(&cos)?,
            ptr(&sin)?,
            ptr(&out)?,
            Arg::U32(tokens as u32),
            Arg::U32(heads as u32),
            Arg::U32(dim as u32),
            Arg::U32(stride as u32),
            Arg::F32(sign),
        ],
    )?;
    Ok(out)
}

/// Writes row t of `src` (tokens, kv_heads, head_dim) into slot `slots[t]` of `cache`
/// (blocks, block_size, kv_heads, head_dim), in place.
pub fn reshape_and_cache(src: &Tensor, cache: &Tensor, slots: &Tensor) -> Result<()> {
    let src = src.to_dtype(cache.dtype())?.contiguous()?;
    let tokens = src.dim(0)?;
    if tokens == 0 {
        return Ok(());
    }
    let row = src.elem_count() / tokens;
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, 1, 1),
        block_dim: ((row as u32).clamp(32, 1024), 1, 1),
        shared_mem_bytes: 0,
    };
    let name = format!("reshape_and_cache_{}", suffix(cache.dtype())?);
    launch(
        &cuda_device(cache)?,
        &ATTENTION,
        &name,
        cfg,
        &[ptr(&src)?, ptr(cache)?, ptr(slots)?, Arg::U32(row as u32)],
    )
}

/// The step's sequences as the paged kernels read them, on the device.
pub struct PagedBatch {
    /// (seqs, max_blocks) block ids, rows padded with 0.
    pub block_tables: Tensor,
    /// Per sequence, the positions it attends over (decode: cached + its token) or the tokens
    /// cached before its rows (prefill).
    pub context_lens: Tensor,
    /// Query row offsets (seqs + 1).
    pub cu_q: Tensor,
    /// Every sequence has one row: the decode kernel serves the step.
    pub decode: bool,
    pub max_blocks: usize,
    pub max_context: usize,
    pub max_rows: usize,
    pub seqs: usize,
}

impl PagedBatch {
    /// `seqs`: (first row, rows, tokens cached before the step, block table) per sequence, in
    /// row order.
    pub fn new(seqs: &[(usize, usize, usize, &[u32])], device: &Device) -> Result<Self> {
        let decode = seqs.iter().all(|s| s.1 == 1);
        let max_blocks = seqs.iter().map(|s| s.3.len()).max().unwrap_or(0).max(1);
        let mut tables = vec![0u32; seqs.len() * max_blocks];
        for (i, s) in seqs.iter().enumerate() {
            tables[i * max_blocks..i * max_blocks + s.3.len()].copy_from_slice(s.3);
        }
        let contexts: Vec<u32> = seqs
            .iter()
            .map(|s| (s.2 + if decode { s.1 } else { 0 }) as u32)
            .collect();
        let mut cu_q = vec![0u32];
        for s in seqs {
            cu_q.push(cu_q.last().unwrap() + s.1 as u32);
        }
        Ok(Self {
            block_tables: Tensor::from_vec(tables, (seqs.len(), max_blocks), device)?,
            context_lens: Tensor::new(contexts.as_slice(), device)?,
            cu_q: Tensor::new(cu_q.as_slice(), device)?,
            decode,
            max_blocks,
            max_context: seqs.iter().map(|s| s.2 + s.1).max().unwrap_or(0),
            max_rows: seqs.iter().map(|s| s.1).max().unwrap_or(0),
            seqs: seqs.len(),
        })
    }
}

/// Decodes longer than this run the split-K kernel.
const SPLIT_DECODE_ABOVE: usize = 2 * DECODE_PARTITION;

/// One query row per sequence (q: seqs, heads, head_dim) over the paged cache, a block per
/// (KV head, sequence) serving the query heads that share it. Contexts longer than
/// `SPLIT_DECODE_ABOVE`, or whose one partition would not fit the block's shared memory, run
/// the split-K variant with partitions of `DECODE_PARTITION` positions.
pub fn paged_decode(q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, batch: &PagedBatch) -> Result<Tensor> {
    let q = q.to_dtype(k_cache.dtype())?.contiguous()?;
    let (seqs, heads, dim) = q.dims3()?;
    let (_, block_size, kv_heads, _) = k_cache.dims4()?;
    let group = heads / kv_heads;
    if group > MAX_GROUP {
        bail!("the paged decode kernel serves up to {MAX_GROUP} query heads per KV head, not {group}");
    }
    let dev = cuda_device(&q)?;
    let out = output_like(&q)?;
    let warps = DECODE_THREADS as usize / 32;
    let shared = |partition: usize| (group * (dim + warps * dim + partition) + 32) * 4;
    let split = batch.max_context > SPLIT_DECODE_ABOVE || shared(batch.max_context.max(1)) > MAX_SHARED;
    let (parts, partition) = if split {
        (batch.max_context.div_ceil(DECODE_PARTITION).max(1), DECODE_PARTITION)
    } else {
        (1, batch.max_context.max(1))
    };
    let scratch = if parts > 1 {
        // SAFETY: the merge reads only the partitions the decode kernel wrote.
        let f32s = |n: usize| unsafe { Tensor::empty(n, DType::F32, q.device()) };
        Some((
            f32s(seqs * heads * parts * dim)?,
            f32s(seqs * heads * parts)?,
            f32s(seqs * heads * parts)?,
        ))
    } else {
        None
    };
    let cfg = LaunchConfig {
        grid_dim: (kv_heads as u32, seqs as u32, parts as u32),
        block_dim: (DECODE_THREADS, 1, 1),
        shared_mem_bytes: shared(partition) as u32,
    };
    let dt = suffix(q.dtype())?;
    let (po, pm, ps) = match &scratch {
        Some((o, m, s)) => (ptr(o)?, ptr(m)?, ptr(s)?),
        None => (Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0)),
    };
    launch(
        &dev,
        &ATTENTION,
        &format!("paged_decode_{dt}_d{dim}"),
        cfg,
        &[
            ptr(&out)?,
            po,
            pm,
            ps,
            ptr(&q)?,
            ptr(k_cache)?,
            ptr(v_cache)?,
            ptr(&batch.block_tables)?,
            ptr(&batch.context_lens)?,
            Arg::U32(batch.max_blocks as u32),
            Arg::U32(block_size as u32),
            Arg::U32(heads as u32),
            Arg::F32(1.0 / (dim as f32).sqrt()),
            Arg::U32(partition as u32),
        ],
    )?;
    if let Some((o, m, s)) = &scratch {
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, seqs as u32, 1),
            block_dim: (DECODE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(
            &dev,
            &ATTENTION,
            &format!("paged_decode_reduce_{dt}_d{dim}"),
            cfg,
            &[
                ptr(&out)?,
                ptr(o)?,
                ptr(m)?,
                ptr(s)?,
                ptr(&batch.context_lens)?,
                Arg::U32(partition as u32),
                Arg::U32(parts as u32),
            ],
        )?;
    }
    Ok(out)
}

/// Causal attention of the step's query rows (q: rows, heads, head_dim; sequence s owns rows
/// `cu_q[s]..cu_q[s+1]`) over the paged cache, which already holds the rows' own keys.
pub fn paged_prefill(q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, batch: &PagedBatch) -> Result<Tensor> {
    let q = q.to_dtype(k_cache.dtype())?.contiguous()?;
    let (_, heads, dim) = q.dims3()?;
    let (_, block_size, kv_heads, _) = k_cache.dims4()?;
    launch_tiled(
        "paged_prefill",
        &q,
        batch.max_rows,
        batch.seqs,
        &[
            ptr(&q)?,
            ptr(k_cache)?,
            ptr(v_cache)?,
            ptr(&batch.cu_q)?,
            ptr(&batch.context_lens)?,
            ptr(&batch.block_tables)?,
            Arg::U32(batch.max_blocks as u32),
            Arg::U32(block_size as u32),
            Arg::U32(heads as u32),
            Arg::U32(kv_heads as u32),
            Arg::F32(1.0 / (dim as f32).sqrt()),
        ],
    )
}

/// Bidirectional attention within each segment `cu_seqlens[i]..cu_seqlens[i+1]` of packed rows
/// (q, k, v: tokens, heads, head_dim).
pub fn varlen_attention(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[usize]) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (_, heads, dim) = q.dims3()?;
    let max_len = cu_seqlens.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    if max_len == 0 {
        return output_like(&q);
    }
    let cu: Vec<u32> = cu_seqlens.iter().map(|&c| c as u32).collect();
    let cu = Tensor::new(cu.as_slice(), q.device())?;
    launch_tiled(
        "varlen_attention",
        &q,
        max_len,
        cu_seqlens.len() - 1,
        &[
            ptr(&q)?,
            ptr(&k)?,
            ptr(&v)?,
            ptr(&cu)?,
            Arg::U32(heads as u32),
            Arg::U32(k.dim(1)? as u32),
            Arg::F32(1.0 / (dim as f32).sqrt()),
        ],
    )
}
