//! Flags several subcommands share: value checks, where a model runs, how the engine runs.

use anyhow::Result;
use clap::ValueEnum;
use vellum::{DType, OcrBuilder};

/// A count that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number within `lo..=hi`.
fn within(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be a number from {lo} to {hi}"))
    }
}

pub fn temperature(s: &str) -> Result<f64, String> {
    within(s, 0.0, 100.0)
}

pub fn fraction(s: &str) -> Result<f64, String> {
    within(s, 0.0, 1.0)
}

pub fn learning_rate(s: &str) -> Result<f64, String> {
    within(s, 0.0, 10.0)
}

fn gib(s: &str) -> Result<f64, String> {
    within(s, 1e-3, 1e6)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DTypeArg {
    F32,
    Bf16,
    F16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Quantization {
    Int8,
    Bf16,
}

impl From<Quantization> for vellum::Quantization {
    fn from(q: Quantization) -> Self {
        match q {
            Quantization::Int8 => vellum::Quantization::Int8,
            Quantization::Bf16 => vellum::Quantization::Bf16,
        }
    }
}

/// Where a model runs.
#[derive(clap::Args, Clone)]
pub struct DeviceArgs {
    /// Default: f32 on the CPU, bf16 on a GPU.
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A CPU fast mode for the linear layers of Qwen-VL models: int8 (7-bit weights and
    /// activations; AVX2, AVX-512 VNNI or AMX), 2–4.5× f32 end to end; or bf16 (weights and
    /// layer inputs rounded to bf16, summed in f32; AVX-512 BF16), closer to f32. The README's
    /// Performance section gives their speed and accuracy.
    #[arg(long, value_enum)]
    pub quantization: Option<Quantization>,
}

impl DeviceArgs {
    pub fn device(&self) -> Result<vellum::Device> {
        vellum::device::parse(&self.device).map_err(crate::setup)
    }

    /// The facade's options for `model` on this device.
    pub fn builder(&self, model: &str) -> Result<OcrBuilder> {
        let mut b = vellum::Ocr::builder(model).device(self.device()?);
        if let Some(dtype) = self.dtype {
            b = b.dtype(dtype.into());
        }
        if let Some(q) = self.quantization {
            b = b.quantization(q.into());
        }
        Ok(b)
    }

    /// The bare model, for the bench and its fidelity reference.
    pub fn open_model(&self, spec: &str) -> Result<std::sync::Arc<dyn vellum::models::VisionLanguageModel>> {
        let options = vellum::models::OpenOptions {
            dtype: self.dtype.map(DType::from),
            quantization: self.quantization.map(Into::into),
            finepdfs_bounds: false,
        };
        vellum::models::open(spec, &self.device()?, options)
    }
}

/// How the engine runs.
#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    /// KV-cache budget in GiB, reserved at start (default: what --max-num-seqs sequences of
    /// --max-context tokens can use, at most a quarter of the available memory).
    #[arg(long, value_parser = gib)]
    pub kv_cache_gib: Option<f64>,
    /// Longest prompt plus output, in tokens.
    #[arg(long, default_value_t = 8096, value_parser = positive)]
    pub max_context: usize,
    /// Sequences decoding at once.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub max_num_seqs: usize,
}

impl EngineArgs {
    pub fn apply(&self, mut b: OcrBuilder) -> OcrBuilder {
        b = b.max_context(self.max_context).max_num_seqs(self.max_num_seqs);
        if let Some(gib) = self.kv_cache_gib {
            b = b.kv_cache_bytes((gib * (1u64 << 30) as f64) as u64);
        }
        b
    }
}

/// The flags that change what a facade warning names.
pub fn warning_flags(warning: &str) -> &'static str {
    if warning.contains("model card") {
        " (--card NAME)"
    } else if warning.contains("quantization") {
        " (--dtype f32, or --quantization bf16)"
    } else {
        ""
    }
}

/// The facade's errors with the flags that set what they name.
pub fn with_flags(e: vellum::Error) -> anyhow::Error {
    let hint = match &e {
        vellum::Error::InvalidOptions(m) if m.contains("KV cache") => {
            " (give it more memory with --kv-cache-gib, or lower --max-context)"
        }
        vellum::Error::InvalidOptions(m) if m.contains("max_new_tokens") => " (--max-new-tokens, --max-context)",
        vellum::Error::Unsupported(m) if m.contains("model card") => " (--card NAME)",
        vellum::Error::Unsupported(m) if m.contains("quantization") => " (--quantization, --dtype, --device)",
        _ => "",
    };
    let setup = e.is_setup();
    let e = anyhow::anyhow!("{e}{hint}");
    if setup {
        crate::setup(e)
    } else {
        e
    }
}
