//! Model architectures, each in the shape of its reference implementation, behind the one
//! interface the engine drives.

pub(crate) mod checkpoint;
pub mod deepseek_ocr;
pub(crate) mod linear;
pub mod lora;
pub mod qwen2_5_vl;
pub mod qwen2_vl;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use image::DynamicImage;

use crate::ops::attention::AttentionCache;

/// What the engine needs to know about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: &'static str,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// End-of-generation tokens.
    pub stop_token_ids: Vec<u32>,
    /// The placeholder token image embeddings replace.
    pub image_token_id: u32,
    /// Tokens generation must never emit (their logits are masked).
    pub masked_token_ids: Vec<u32>,
    /// The instruction a page is OCR'd with unless the caller gives one.
    pub default_instruction: &'static str,
    /// Where the weights live and their dtype (the KV cache follows them).
    pub device: Device,
    pub dtype: DType,
}

/// An image ready for the vision tower.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Patch rows (Qwen2.5-VL) or a pixel tensor, as the model's processor lays it out.
    pub pixel_values: Tensor,
    /// The image's shape as its model's tower reads it: Qwen2.5-VL's (t, h, w) patch grid;
    /// (1, side, side) of the padded square for nano DeepSeek-OCR. Images of equal shape batch
    /// together in the tower.
    pub grid_thw: [usize; 3],
    /// Content hash of the processed pixels: the key of the vision-output cache and of the
    /// KV-cache blocks that hold this image's tokens.
    pub hash: u64,
    /// Image tokens in the prompt (rows the vision tower returns).
    pub num_tokens: usize,
}

/// The rotary positions of a run of tokens, of the kind the model rotates by.
#[derive(Debug, Clone, PartialEq)]
pub enum Positions {
    /// One position per token (nanochat's 1D rotary).
    Linear(Vec<i64>),
    /// (temporal, height, width) per token (Qwen's M-RoPE; equal on all three for text).
    Mrope([Vec<i64>; 3]),
}

impl Positions {
    /// An empty run of the same kind.
    pub fn empty_like(&self) -> Self {
        match self {
            Positions::Linear(_) => Positions::Linear(Vec::new()),
            Positions::Mrope(_) => Positions::Mrope(Default::default()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Positions::Linear(v) => v.len(),
            Positions::Mrope(a) => a[0].len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i` on (t, h, w); a linear position is the same on all three.
    pub fn at(&self, i: usize) -> [i64; 3] {
        match self {
            Positions::Linear(v) => [v[i]; 3],
            Positions::Mrope(a) => [a[0][i], a[1][i], a[2][i]],
        }
    }

    /// Appends a token at `p` (a linear run keeps the first axis).
    pub fn push(&mut self, [t, h, w]: [i64; 3]) {
        match self {
            Positions::Linear(v) => v.push(t),
            Positions::Mrope(a) => {
                a[0].push(t);
                a[1].push(h);
                a[2].push(w);
            }
        }
    }
}

/// A prompt ready for the model: token ids with the image placeholders expanded, the image, and
/// the positions.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub input_ids: Vec<u32>,
    pub image: PreparedImage,
    /// Index of the first image placeholder in `input_ids`.
    pub image_start: usize,
    pub positions: Positions,
    /// Generated token n (0-based) sits at position `input_ids.len() + n + rope_delta`.
    pub rope_delta: i64,
}

impl PreparedPrompt {
    /// The token range of the image placeholders.
    pub fn image_span(&self) -> (usize, usize) {
        (self.image_start, self.image_start + self.image.num_tokens)
    }
}

/// How [`open`] loads a model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpenOptions {
    /// The device's default when None (f32 on the CPU, bf16 on a GPU).
    pub dtype: Option<DType>,
    /// Convert a Qwen-VL model's linear layers for a CPU fast mode (f32 models on the CPU).
    pub quantization: Option<linear::Quantization>,
    /// Bound a Qwen-VL model's images as FinePDFs ran RolmOCR (at most 2048 merged tokens a page).
    pub finepdfs_bounds: bool,
}

/// Opens the model a directory, adapter directory or hub id (`org/name[@revision]`) holds, on
/// `device`, as `options` say.
pub fn open(spec: &str, device: &Device, options: OpenOptions) -> Result<std::sync::Arc<dyn VisionLanguageModel>> {
    let OpenOptions {
        dtype,
        quantization,
        finepdfs_bounds,
    } = options;
    let dtype = dtype.unwrap_or_else(|| crate::device::default_dtype(device));
    if let Some(q) = quantization {
        check_quantization(q, spec, device, dtype)?;
    }
    let qwen = |mut model: qwen2_5_vl::Model| -> Result<std::sync::Arc<dyn VisionLanguageModel>> {
        if finepdfs_bounds {
            model = model.with_finepdfs_bounds();
        }
        if let Some(q) = quantization {
            model = model.quantized(q)?;
        }
        Ok(std::sync::Arc::new(model))
    };
    if let Some(dir) = lora::adapter_dir(std::path::Path::new(spec)) {
        return qwen(load_adapter(&dir, dtype, device)?);
    }
    let files = crate::hub::resolve(spec)?;
    // Found before loading, not by the OOM killer halfway through it (quantised: the f32
    // weights and their converted copies, until the f32 ones go).
    let needed = files.weights()?.bytes_as(dtype);
    let needed = match quantization {
        Some(linear::Quantization::Int8) => needed + needed / 4,
        Some(linear::Quantization::Bf16) => needed + needed / 2,
        None => needed,
    };
    let available = crate::device::available_memory(device);
    if needed > available {
        let gb = |b: u64| b as f64 / 1e9;
        anyhow::bail!(
            "model {spec}: its weights take {:.1} GB in {dtype:?} and the {} has {:.1} GB available{}",
            gb(needed),
            if device.is_cpu() { "machine" } else { "GPU" },
            gb(available),
            if dtype == DType::F32 { "; bf16 halves them" } else { "" }
        );
    }
    if !finepdfs_bounds && quantization.is_none() {
        return load(&files, dtype, device);
    }
    let root = files
        .read_json("config.json")?
        .with_context(|| format!("{} has no config.json", files.dir.display()))?;
    qwen(load_qwen(&files, root, dtype, device)?)
}

/// A fast mode's conditions, checked by [`open`] before anything loads (and by a caller that
/// must tell a bad setup from a missing model): the CPU, f32, the CPU's instructions, and a
/// Qwen-VL model where `spec` resolves (one that does not is left to the load to report).
pub fn check_quantization(q: linear::Quantization, spec: &str, device: &Device, dtype: DType) -> Result<()> {
    let name = q.name();
    if !device.is_cpu() {
        anyhow::bail!("{name} quantization runs on the CPU; on a GPU, --dtype bf16 is the fast mode");
    }
    if dtype != DType::F32 {
        anyhow::bail!("{name} quantization computes around its products in f32: leave the dtype at f32, not {dtype:?}");
    }
    if !q.supported() {
        anyhow::bail!(
            "{name} quantization needs a CPU with {}, which this one lacks",
            q.needs()
        );
    }
    if lora::adapter_dir(std::path::Path::new(spec)).is_some() {
        return Ok(()); // adapters are served over Qwen-VL models only
    }
    let Ok(files) = crate::hub::resolve(spec) else {
        return Ok(());
    };
    if let Some(config) = files.read_json("config.json")? {
        let arch = architecture(&config);
        if arch != qwen2_vl::ARCHITECTURE && arch != qwen2_5_vl::config::ARCHITECTURE {
            anyhow::bail!("{name} quantization applies to Qwen2-VL and Qwen2.5-VL models; {spec} holds a {arch} model");
        }
    }
    Ok(())
}

/// The architecture a config.json names; configs saved without `architectures` still name
/// their model type.
pub fn architecture(config: &serde_json::Value) -> String {
    match (config["architectures"][0].as_str(), config["model_type"].as_str()) {
        (Some(arch), _) => arch,
        (None, Some("qwen2_vl")) => qwen2_vl::ARCHITECTURE,
        (None, _) => qwen2_5_vl::config::ARCHITECTURE,
    }
    .to_string()
}

/// A loaded model as its own type, for callers that need more than serving (the trainer).
pub enum Loaded {
    /// The nano DeepSeek-OCR vision-tokenizer model.
    VisionTokenizer(Box<deepseek_ocr::Model>),
    /// Qwen2-VL or Qwen2.5-VL (one model type).
    Qwen(Box<qwen2_5_vl::Model>),
}

impl Loaded {
    pub fn into_dyn(self) -> std::sync::Arc<dyn VisionLanguageModel> {
        match self {
            Loaded::VisionTokenizer(m) => std::sync::Arc::new(*m),
            Loaded::Qwen(m) => std::sync::Arc::new(*m),
        }
    }
}

/// Opens the model a directory holds, by the architecture its config.json names.
pub fn load(
    files: &crate::hub::ModelFiles,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<std::sync::Arc<dyn VisionLanguageModel>> {
    Ok(load_typed(files, dtype, device)?.into_dyn())
}

/// [`load`], keeping the model's type; an architecture vellum does not run is refused by name.
pub fn load_typed(files: &crate::hub::ModelFiles, dtype: DType, device: &Device) -> Result<Loaded> {
    let path = files.path("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
    Ok(match architecture(&config).as_str() {
        deepseek_ocr::ARCHITECTURE => {
            Loaded::VisionTokenizer(Box::new(deepseek_ocr::Model::load(files, dtype, device)?))
        }
        qwen2_vl::ARCHITECTURE | qwen2_5_vl::config::ARCHITECTURE => {
            Loaded::Qwen(Box::new(load_qwen(files, config, dtype, device)?))
        }
        other => anyhow::bail!(
            "{} holds a {other} model; vellum runs {}, {} and {} models",
            files.dir.display(),
            deepseek_ocr::ARCHITECTURE,
            qwen2_5_vl::config::ARCHITECTURE,
            qwen2_vl::ARCHITECTURE,
        ),
    })
}

/// A Qwen2-VL or Qwen2.5-VL model (one model type, [`qwen2_5_vl::Model`]) by the architecture
/// config.json names; anything else is refused by name.
pub fn load_qwen(
    files: &crate::hub::ModelFiles,
    config: serde_json::Value,
    dtype: DType,
    device: &Device,
) -> Result<qwen2_5_vl::Model> {
    match architecture(&config).as_str() {
        qwen2_vl::ARCHITECTURE => qwen2_vl::load(files, config, dtype, device),
        qwen2_5_vl::config::ARCHITECTURE => qwen2_5_vl::Model::load_with_config(files, config, dtype, device),
        other => anyhow::bail!(
            "{} holds a {other} model, not Qwen2-VL or Qwen2.5-VL",
            files.dir.display()
        ),
    }
}

/// A LoRA adapter directory (peft's layout) over the base model its config names, served
/// unmerged: the adapters run beside the weights they adapt.
pub fn load_adapter(dir: &std::path::Path, dtype: DType, device: &Device) -> Result<qwen2_5_vl::Model> {
    let config = lora::LoraConfig::read(dir)?;
    let base = config.base_model(dir)?;
    let files =
        crate::hub::resolve(&base).with_context(|| format!("the base model of the adapter {}", dir.display()))?;
    let root = files
        .read_json("config.json")?
        .with_context(|| format!("{} has no config.json", files.dir.display()))?;
    let model = load_qwen(&files, root, dtype, device).with_context(|| {
        format!(
            "{}: LoRA adapters are served over Qwen2-VL and Qwen2.5-VL models",
            dir.display()
        )
    })?;
    let adapters = model.read_adapter(dir)?;
    model.with_lora(config, adapters)
}

/// Embeddings of rows `from..to` of a token sequence: text rows from the model's embedding
/// table, rows inside `image_span` from `image_rows` (the vision tower's output for the image,
/// whose first row belongs to the span's first token).
pub fn embed_rows(
    model: &dyn VisionLanguageModel,
    token: impl Fn(usize) -> u32,
    from: usize,
    to: usize,
    image_span: (usize, usize),
    image_rows: Option<&Tensor>,
) -> Result<Tensor> {
    let in_image = |i: usize| (image_span.0..image_span.1).contains(&i);
    let mut pieces = Vec::new();
    let mut i = from;
    while i < to {
        let image = in_image(i);
        let end = (i..to).find(|&j| in_image(j) != image).unwrap_or(to);
        if image {
            let rows = image_rows.ok_or_else(|| anyhow::anyhow!("image rows are needed but were not computed"))?;
            pieces.push(rows.narrow(0, i - image_span.0, end - i)?);
        } else {
            let ids: Vec<u32> = (i..end).map(&token).collect();
            pieces.push(model.embed_tokens(&ids)?);
        }
        i = end;
    }
    let dtype = pieces.first().map(|p| p.dtype()).unwrap_or(candle_core::DType::F32);
    let pieces = pieces
        .into_iter()
        .map(|p| p.to_dtype(dtype))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&pieces, 0)?)
}

/// The interface the engine drives: a model owns its math and its prompt format; the engine
/// owns scheduling, the KV cache and sampling.
pub trait VisionLanguageModel: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// Image + instruction → token ids, image tensor and positions (runs in the caller's
    /// thread, not the engine's).
    fn prepare(&self, image: &DynamicImage, instruction: &str) -> Result<PreparedPrompt>;
    /// The vision tower over several images at once; one block of rows per image.
    fn encode_images(&self, images: &[&PreparedImage]) -> Result<Vec<Tensor>>;
    /// Text-token embeddings (rows in the model's dtype).
    fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor>;
    /// The decoder over a flat batch of rows at `positions`, on top of `cache`; f32 logits of
    /// the rows in `logit_rows`.
    fn forward(
        &self,
        embeds: &Tensor,
        positions: &Positions,
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor>;
    fn tokenizer(&self) -> &tokenizers::Tokenizer;
    /// Generated tokens as text, special tokens left out.
    fn decode(&self, tokens: &[u32]) -> Result<String> {
        self.tokenizer()
            .decode(tokens, true)
            .map_err(|e| anyhow::anyhow!("decoding the output: {e}"))
    }
}
