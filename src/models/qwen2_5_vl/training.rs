//! Training sequences and the training forward of Qwen2.5-VL, on the serving model's own code.
//!
//! A sample becomes what olmOCR's trainer builds (`olmocr/train/dataloader.py`, `Tokenizer`):
//! the chat template's prompt for one user turn (the image, then the instruction) with the
//! generation prompt, the answer tokenized alone, then `<|im_end|>`; the loss covers the answer
//! and `<|im_end|>`. Loss and gradients match `Qwen2_5_VLForConditionalGeneration(labels=...)`.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use image::DynamicImage;

use super::{processor, Model};
use crate::models::{checkpoint, embed_rows, VisionLanguageModel};
use crate::ops::attention::ContiguousKvCache;
use crate::ops::loss::cross_entropy_sum;

/// The token that closes an assistant turn, and so every answer.
pub const ANSWER_END: &str = "<|im_end|>";

/// A training sequence: inputs, the next-token target of each position (−1 where masked), the
/// image's patch rows and grid, and the M-RoPE positions of the inputs.
#[derive(Debug, Clone)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub targets: Vec<i64>,
    pub pixel_values: Tensor,
    pub grid_thw: [usize; 3],
    pub positions: [Vec<i64>; 3],
}

impl Example {
    /// Rows of the first image token and after its last.
    fn image_span(&self, image_token: u32, tokens: usize) -> (usize, usize) {
        let start = self.input_ids.iter().position(|&t| t == image_token).unwrap_or(0);
        (start, start + tokens)
    }

    fn target_rows(&self) -> (Vec<u32>, Vec<u32>) {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, &t)| t >= 0)
            .map(|(i, &t)| (i as u32, t as u32))
            .unzip()
    }
}

impl Model {
    /// `instruction` with `image` as the user turn and `answer` as the reply, cut to at most
    /// `seq_len` inputs; also returns how many tokens the cut dropped.
    pub fn training_example(
        &self,
        image: &DynamicImage,
        instruction: &str,
        answer: &str,
        seq_len: usize,
    ) -> Result<(Example, usize)> {
        let prompt = self.prepare_prompt(image, instruction)?;
        let end = self
            .tokenizer
            .token_to_id(ANSWER_END)
            .with_context(|| format!("the tokenizer has no {ANSWER_END} token to end answers with"))?;
        let mut ids = prompt.input_ids;
        let prompt_len = ids.len();
        ids.extend(
            self.tokenizer
                .encode(answer, false)
                .map_err(|e| anyhow::anyhow!("tokenizing the answer: {e}"))?
                .get_ids(),
        );
        ids.push(end);
        if seq_len < prompt_len {
            bail!("the sequence length {seq_len} cuts the prompt ({prompt_len} tokens with the image)");
        }
        let n = (ids.len() - 1).min(seq_len);
        let (mut positions, _) = processor::mrope_positions(
            &ids,
            self.config.image_token_id,
            &[prompt.image.grid_thw],
            self.image_processor.merge_size,
        )?;
        for axis in positions.iter_mut() {
            axis.truncate(n);
        }
        let targets = (0..n)
            .map(|i| if i + 1 < prompt_len { -1 } else { ids[i + 1] as i64 })
            .collect();
        Ok((
            Example {
                input_ids: ids[..n].to_vec(),
                targets,
                pixel_values: prompt.image.pixel_values,
                grid_thw: prompt.image.grid_thw,
                positions,
            },
            ids.len() - 1 - n,
        ))
    }

    /// The input embeddings of each example: the batch's images through the tower at once.
    fn embed_examples(&self, examples: &[&Example]) -> Result<Vec<Tensor>> {
        if examples.is_empty() {
            return Ok(Vec::new());
        }
        let pixels: Vec<&Tensor> = examples.iter().map(|e| &e.pixel_values).collect();
        let grids: Vec<[usize; 3]> = examples.iter().map(|e| e.grid_thw).collect();
        let rows = self.encode_patches(&Tensor::cat(&pixels, 0)?, &grids)?;
        let mut offset = 0;
        examples
            .iter()
            .map(|ex| {
                let n = self.image_processor.num_image_tokens(ex.grid_thw);
                let image = rows.narrow(0, offset, n)?;
                offset += n;
                let span = ex.image_span(self.config.image_token_id, n);
                if ex
                    .input_ids
                    .get(span.0..span.1)
                    .is_none_or(|s| s.iter().any(|&t| t != self.config.image_token_id))
                {
                    bail!("the image placeholders are not {n} consecutive tokens");
                }
                embed_rows(self, |j| ex.input_ids[j], 0, ex.input_ids.len(), span, Some(&image))
            })
            .collect()
    }

    /// The sum of the cross-entropies of `examples`' unmasked targets, and their count.
    pub fn loss_sum(&self, examples: &[&Example]) -> Result<(Tensor, usize)> {
        let embeds = self.embed_examples(examples)?;
        let mut total = Tensor::zeros((), DType::F32, &self.device)?;
        let mut count = 0;
        for (ex, embeds) in examples.iter().zip(&embeds) {
            let (rows, wanted) = ex.target_rows();
            if rows.is_empty() {
                continue;
            }
            let mut cache = ContiguousKvCache::new(self.num_layers());
            let logits = self.forward(
                embeds,
                &crate::models::Positions::Mrope(ex.positions.clone()),
                &mut cache,
                &rows,
            )?;
            total = (total + cross_entropy_sum(&logits, &wanted)?)?;
            count += rows.len();
        }
        Ok((total, count))
    }

    /// Backpropagates `scale` × [`Model::loss_sum`] keeping only each decoder layer's input
    /// (gradient checkpointing): the tower with the embeddings, then each layer, recomputed one
    /// at a time on the way back. Each partial backward's gradients go to `sink`, to be
    /// accumulated by tensor; returns the unscaled loss sum.
    pub fn backward_checkpointed(
        &self,
        examples: &[&Example],
        scale: f64,
        sink: impl FnMut(GradStore) -> Result<()>,
    ) -> Result<f64> {
        let tables = examples
            .iter()
            .map(|ex| Ok(self.text.rope_tables(&ex.positions, &self.device)?))
            .collect::<Result<Vec<_>>>()?;
        let layers = self.num_layers();
        let targets: Vec<(Vec<u32>, Vec<u32>)> = examples.iter().map(|ex| ex.target_rows()).collect();
        let chain = checkpoint::Chain {
            stages: 1 + layers,
            stage: |i: usize, xs: &[Tensor]| -> Result<Vec<Tensor>> {
                if i == 0 {
                    return self.embed_examples(examples);
                }
                xs.iter()
                    .zip(&tables)
                    .map(|(x, (cos, sin))| {
                        Ok(self
                            .text
                            .layer(i - 1, x, cos, sin, &mut ContiguousKvCache::new(layers))?)
                    })
                    .collect()
            },
            head_parts: examples.len(),
            head: |e: usize, xs: &[Tensor]| -> Result<Tensor> {
                let (rows, wanted) = &targets[e];
                if rows.is_empty() {
                    return Ok(Tensor::zeros((), DType::F32, &self.device)?);
                }
                Ok(cross_entropy_sum(&self.text.logits(&xs[e], rows)?, wanted)?)
            },
        };
        chain.backward(&[], scale, sink)
    }
}
