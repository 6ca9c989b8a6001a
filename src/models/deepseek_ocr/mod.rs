//! The nano DeepSeek-OCR ("vision-tokenizer") model, `NanoDeepseekOCR`:
//! - DeepEncoder: SAM ViT-B with a 16× conv compressor ([`sam`]), and CLIP-L taking SAM's map
//!   as its patch embeddings ([`clip`]); their features concatenated and projected linearly;
//! - per image row a learned `image_newline`, then one `view_separator`: (n+1)·n+1 image tokens
//!   for an n×n map (273 at base size 1024);
//! - nanochat's GPT decoder ([`gpt`]).
//!
//! Reference: Yusuke710/nanochat, branch tier2-vision-tasks (nano_deepseek_ocr.py, gpt.py,
//! deepencoder/, image_process.py). Weights load by its state-dict names; the config is
//! vellum's (`ocr convert` writes it from a trainer checkpoint).

pub mod clip;
pub mod config;
pub mod convert;
pub mod gpt;
pub mod init;
pub mod pretrained;
pub mod processor;
pub mod sam;

pub use config::Config;
pub use processor::{num_image_tokens, preprocess, DIAGRAM_INSTRUCTION, DOCUMENT_INSTRUCTION, TABLE_INSTRUCTION};

use std::hash::{Hash, Hasher};

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::DynamicImage;
use tokenizers::Tokenizer;

use crate::hub::ModelFiles;
use crate::models::checkpoint;
use crate::models::linear::{linear_b, Linear};
use crate::models::{embed_rows, ModelInfo, Positions, PreparedImage, PreparedPrompt, VisionLanguageModel};
use crate::ops::attention::{AttentionCache, ContiguousKvCache};
use crate::ops::loss::cross_entropy_sum;
use crate::weights::ParamStore;

pub const ARCHITECTURE: &str = "NanoDeepseekOCR";

/// A training sequence: token ids with the image placeholders expanded, the next-token target
/// of each position (−1 where the loss is masked: prompt and image), and the preprocessed image
/// (none for text-only sequences).
#[derive(Debug, Clone)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub targets: Vec<i64>,
    pub pixels: Option<Tensor>,
}

pub struct Model {
    pub config: Config,
    pub tokenizer: Tokenizer,
    /// The parameters, shared with every other view of this model (a trainer's included).
    params: ParamStore,
    sam: sam::Sam,
    vision_model: clip::Clip,
    projector: Linear,
    image_newline: Tensor,
    view_separator: Tensor,
    gpt: gpt::Gpt,
    info: ModelInfo,
    device: Device,
    dtype: DType,
}

impl Model {
    pub fn load(files: &ModelFiles, dtype: DType, device: &Device) -> Result<Self> {
        let path = files.path("config.json");
        let config: Config = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let tokenizer_path = files.path("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", tokenizer_path.display()))?;
        let params = ParamStore::load(&files.weights()?, dtype, device)
            .with_context(|| format!("loading the weights of {}", files.dir.display()))?;
        let vb = params.serving(dtype, device);
        Self::new(config, tokenizer, params, vb)
            .with_context(|| format!("loading the weights of {}", files.dir.display()))
    }

    /// A new model of `config` with fresh weights ([`init::fresh`]).
    pub fn fresh(config: Config, tokenizer: Tokenizer, seed: u64, device: &Device) -> Result<Self> {
        let params = init::fresh(&config, seed, device)?;
        let vb = params.serving(DType::F32, device);
        Self::new(config, tokenizer, params, vb)
    }

    /// The same model over the same parameter storage, its tensors tracking gradients, except
    /// those whose names `frozen` accepts (they are read without tracking, so nothing upstream
    /// of them is differentiated: a frozen encoder costs no backward pass at all).
    pub fn training_view(&self, frozen: impl Fn(&str) -> bool + Send + Sync + 'static) -> Result<Self> {
        let vb = self.params.training(self.dtype, &self.device, frozen);
        Self::new(self.config.clone(), self.tokenizer.clone(), self.params.clone(), vb)
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// `vb` reads `params` (serving or training view).
    pub fn new(config: Config, tokenizer: Tokenizer, params: ParamStore, vb: VarBuilder) -> Result<Self> {
        let n_embd = config.gpt.n_embd;
        let features = config.clip.hidden_size + config.sam.net_3_chans;
        let info = ModelInfo {
            architecture: ARCHITECTURE,
            num_layers: config.gpt.n_layer,
            num_kv_heads: config.gpt.n_kv_head,
            head_dim: config.gpt.head_dim(),
            vocab_size: config.gpt.vocab_size,
            stop_token_ids: config.eos_token_ids.clone(),
            image_token_id: config.image_token_id,
            // As scripts/eval_to_html.py does: the image placeholder is never generated.
            masked_token_ids: vec![config.image_token_id],
            default_instruction: DOCUMENT_INSTRUCTION,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        };
        Ok(Self {
            sam: sam::Sam::new(&config.sam, vb.pp("sam_model"))?,
            vision_model: clip::Clip::new(&config.clip, vb.pp("vision_model"))?,
            projector: linear_b(features, n_embd, true, vb.pp("projector.layers"), Default::default())?,
            image_newline: vb.get(n_embd, "image_newline")?,
            view_separator: vb.get(n_embd, "view_separator")?,
            gpt: gpt::Gpt::new(&config.gpt, vb.pp("gpt"))?,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            tokenizer,
            params,
            config,
            info,
        })
    }

    /// The sum of the cross-entropies of `examples`' unmasked targets and their count (the fork's
    /// mean loss is the sum over a batch divided by the count). Images are encoded as one batch.
    pub fn loss_sum(&self, examples: &[&Example]) -> Result<(Tensor, usize)> {
        let pixels: Vec<&Tensor> = examples.iter().filter_map(|e| e.pixels.as_ref()).collect();
        let vision = if pixels.is_empty() {
            None
        } else {
            Some(self.encode_pixels(&Tensor::stack(&pixels, 0)?)?)
        };
        let mut total = Tensor::zeros((), DType::F32, &self.device)?;
        let mut count = 0;
        for (ex, embeds) in examples.iter().zip(self.embed_examples(examples, vision.as_ref())?) {
            let (sum, n) = self.gpt.loss_sum(&embeds, &ex.targets)?;
            count += n;
            total = (total + sum)?;
        }
        Ok((total, count))
    }

    /// Backpropagates `scale` × [`Model::loss_sum`] keeping only the input of each SAM block,
    /// of the rest of the encoder with the embeddings, and of each GPT layer (gradient
    /// checkpointing), the logits 512 answer rows at a time. Each partial backward's gradients
    /// go to `sink`; returns the unscaled loss sum.
    pub fn backward_checkpointed(
        &self,
        examples: &[&Example],
        scale: f64,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64> {
        let pixels: Vec<&Tensor> = examples.iter().filter_map(|e| e.pixels.as_ref()).collect();
        let (input, sam_stages) = if pixels.is_empty() {
            (Vec::new(), 0)
        } else {
            (
                vec![Tensor::stack(&pixels, 0)?.to_dtype(self.dtype)?],
                1 + self.sam.depth(),
            )
        };
        let layers = self.gpt.num_layers();
        let tables = examples
            .iter()
            .map(|ex| {
                let positions: Vec<i64> = (0..ex.input_ids.len() as i64).collect();
                Ok(self.gpt.rotary_tables(&positions, &self.device)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut parts = Vec::new();
        for (e, ex) in examples.iter().enumerate() {
            let (rows, wanted) = gpt::target_rows(&ex.targets);
            for (rows, wanted) in rows.chunks(HEAD_ROWS).zip(wanted.chunks(HEAD_ROWS)) {
                parts.push((e, rows.to_vec(), wanted.to_vec()));
            }
        }
        let chain = checkpoint::Chain {
            stages: sam_stages + 1 + layers,
            stage: |i: usize, xs: &[Tensor]| -> Result<Vec<Tensor>> {
                if i < sam_stages {
                    let x = if i == 0 {
                        self.sam.embed(&xs[0])?
                    } else {
                        self.sam.block(i - 1, &xs[0])?
                    };
                    return Ok(vec![x]);
                }
                if i == sam_stages {
                    let vision = match xs.first() {
                        Some(x) => Some(self.image_tokens(&self.sam.neck(x)?)?),
                        None => None,
                    };
                    return self
                        .embed_examples(examples, vision.as_ref())?
                        .iter()
                        .map(|e| Ok(self.gpt.input(e)?))
                        .collect();
                }
                xs.iter()
                    .zip(&tables)
                    .map(|(x, (cos, sin))| {
                        let layer = i - sam_stages - 1;
                        Ok(self
                            .gpt
                            .layer(layer, x, cos, sin, &mut ContiguousKvCache::new(layers))?)
                    })
                    .collect()
            },
            head_parts: parts.len(),
            head: |p: usize, xs: &[Tensor]| -> Result<Tensor> {
                let (e, rows, wanted) = &parts[p];
                Ok(cross_entropy_sum(&self.gpt.logits(&xs[*e], rows)?, wanted)?)
            },
        };
        chain.backward(&input, scale, sink)
    }

    pub fn encode_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        self.image_tokens(&self.sam.forward(&pixels.to_dtype(self.dtype)?)?)
    }

    /// SAM's features (B, C, n, n) → each image's tokens (B, (n+1)·n+1, n_embd): CLIP over them,
    /// both projected, a newline after each row and the view separator.
    fn image_tokens(&self, sam: &Tensor) -> Result<Tensor> {
        let clip = self.vision_model.forward(sam)?; // (B, 1 + n², C')
        let (b, _, n, _) = sam.dims4()?;
        let clip_patches = clip.narrow(1, 1, n * n)?;
        let sam_flat = sam.flatten_from(2)?.transpose(1, 2)?;
        let features = Tensor::cat(&[&clip_patches, &sam_flat], 2)?;
        let e = self.config.gpt.n_embd;
        let projected = self.projector.forward(&features)?.reshape((b, n, n, e))?;
        let newline = self
            .image_newline
            .reshape((1, 1, 1, e))?
            .broadcast_as((b, n, 1, e))?
            .to_dtype(projected.dtype())?;
        let rows = Tensor::cat(&[&projected, &newline], 2)?.reshape((b, n * (n + 1), e))?;
        let separator = self
            .view_separator
            .reshape((1, 1, e))?
            .broadcast_as((b, 1, e))?
            .to_dtype(rows.dtype())?;
        Ok(Tensor::cat(&[&rows, &separator], 1)?)
    }

    /// Each example's input embeddings, the tokens of its image (`vision`: the images of the
    /// examples that have one, in order) in place of its placeholders.
    fn embed_examples(&self, examples: &[&Example], vision: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let mut next_image = 0;
        examples
            .iter()
            .enumerate()
            .map(|(i, ex)| match (vision, &ex.pixels) {
                (Some(vision), Some(_)) => {
                    let image = vision.get(next_image)?;
                    next_image += 1;
                    let id = self.config.image_token_id;
                    let start = ex.input_ids.iter().position(|&t| t == id).unwrap_or(0);
                    let span = (start, start + image.dim(0)?);
                    if ex
                        .input_ids
                        .get(span.0..span.1)
                        .is_none_or(|s| s.iter().any(|&t| t != id))
                    {
                        bail!(
                            "example {i}: the image placeholders are not {} consecutive tokens",
                            span.1 - span.0
                        );
                    }
                    embed_rows(self, |j| ex.input_ids[j], 0, ex.input_ids.len(), span, Some(&image))
                }
                _ => self.embed_tokens(&ex.input_ids),
            })
            .collect()
    }
}

/// Target rows whose logits one backward pass holds (512 × a 65,537-token vocabulary: 134 MB
/// per tensor of the soft-capped cross-entropy).
const HEAD_ROWS: usize = 512;

impl VisionLanguageModel for Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// No BOS; `<|image|>` repeated to the image-token count, then the tokens of "\n" + instruction.
    fn prepare(&self, image: &DynamicImage, instruction: &str) -> Result<PreparedPrompt> {
        let base = self.config.base_size;
        let (padded, pixels) = preprocess(image, base, &self.device)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        // The weights' version too: after a training step, cached vision outputs and KV blocks of
        // this image are stale.
        (base, padded.as_raw(), self.params.version()).hash(&mut h);
        let num_tokens = num_image_tokens(base);
        let text = self
            .tokenizer
            .encode(format!("\n{instruction}"), false)
            .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
        let mut input_ids = vec![self.config.image_token_id; num_tokens];
        input_ids.extend(text.get_ids());
        let positions: Vec<i64> = (0..input_ids.len() as i64).collect();
        Ok(PreparedPrompt {
            image: PreparedImage {
                pixel_values: pixels,
                grid_thw: [1, base, base],
                hash: h.finish(),
                num_tokens,
            },
            image_start: 0,
            positions: Positions::Linear(positions),
            rope_delta: 0,
            input_ids,
        })
    }

    /// Images of the same size run as one batch.
    fn encode_images(&self, images: &[&PreparedImage]) -> Result<Vec<Tensor>> {
        let mut out: Vec<Option<Tensor>> = vec![None; images.len()];
        let mut sizes: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        sizes.dedup();
        for size in sizes {
            let members: Vec<usize> = (0..images.len())
                .filter(|&i| images[i].grid_thw == size)
                .filter(|&i| out[i].is_none())
                .collect();
            if members.is_empty() {
                continue;
            }
            let batch = Tensor::stack(&members.iter().map(|&i| &images[i].pixel_values).collect::<Vec<_>>(), 0)?;
            let encoded = self.encode_pixels(&batch)?;
            for (row, &i) in members.iter().enumerate() {
                out[i] = Some(encoded.get(row)?);
            }
        }
        Ok(out.into_iter().map(|t| t.expect("every image encoded")).collect())
    }

    fn embed_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.gpt.embed(&Tensor::new(ids, &self.device)?)?)
    }

    fn forward(
        &self,
        embeds: &Tensor,
        positions: &Positions,
        cache: &mut dyn AttentionCache,
        logit_rows: &[u32],
    ) -> Result<Tensor> {
        let Positions::Linear(positions) = positions else {
            bail!("nanochat's GPT rotates by 1D positions, not M-RoPE ones");
        };
        Ok(self.gpt.forward(embeds, positions, cache, logit_rows)?)
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
