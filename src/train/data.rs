//! Training data in the fork's sample format (`vision_dataloader.py`): a directory with
//! `train.json` / `val.json`, each a list of `{"id", "type", "prompt", "answer", "image"}` with
//! image paths relative to the directory.
//!
//! A sample becomes: the prompt's `<image>` replaced by the image token repeated to the model's
//! image-token count, the answer's tokens, then `<|assistant_end|>` (the fork appended none, and
//! its models never stopped); inputs are that sequence without its last token, targets without
//! its first, with the prompt (and so the image) masked; sequences are cut at the sequence
//! length, and every cut is counted.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::models::deepseek_ocr::{self, Example, Model};
use crate::models::VisionLanguageModel;

/// The end token appended to answers.
pub const ANSWER_END: &str = "<|assistant_end|>";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(default)]
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    pub prompt: String,
    pub answer: String,
    pub image: String,
}

impl Sample {
    /// The prompt without its image marker and the one newline joining the marker to the text
    /// (the image comes first, wherever the marker was), and otherwise exactly as written: what
    /// a Qwen model trains on and what evaluation asks any model. `"<image>\n" + instruction`
    /// (what `prepare` and `synth` write) gives back the instruction byte for byte, so a model
    /// trains on the sequence the engine serves it (RolmOCR's prompt ends in a newline; olmOCR's
    /// trainer strips it, and a model fine-tuned that way is never served what it learned).
    pub fn instruction(&self) -> String {
        match self.prompt.split_once("<image>") {
            Some((before, after)) => {
                let before = before.strip_suffix('\n').unwrap_or(before);
                let after = after.strip_prefix('\n').unwrap_or(after);
                format!("{before}{}", after.replace("<image>", ""))
            }
            None => self.prompt.clone(),
        }
    }
}

/// One split of a dataset directory.
pub struct Dataset {
    pub dir: PathBuf,
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// `<dir>/<split>.json`.
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let path = dir.join(format!("{split}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let samples: Vec<Sample> =
            serde_json::from_str(&text).with_context(|| format!("{} is not a list of samples", path.display()))?;
        if samples.is_empty() {
            bail!("{} has no samples", path.display());
        }
        // A missing image found at step 5,000 would end the run: look before the first step.
        let missing: Vec<String> = samples
            .iter()
            .filter(|s| !dir.join(&s.image).is_file())
            .map(|s| format!("{} ({})", s.image, s.id))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: {} of {} samples name an image that is not there, e.g. {}",
                path.display(),
                missing.len(),
                samples.len(),
                missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            samples,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn image_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.samples[i].image)
    }

    /// Sample `i`'s image, read.
    pub fn image(&self, i: usize) -> Result<image::DynamicImage> {
        let (s, path) = (&self.samples[i], self.image_path(i));
        image::open(&path).with_context(|| format!("sample {} ({}): reading {}", i, s.id, path.display()))
    }
}

/// Token ids and targets of a sample, before its image is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub input_ids: Vec<u32>,
    pub targets: Vec<i64>,
    /// Tokens cut off by the sequence length.
    pub truncated: usize,
}

/// Tokenizes samples for a model, as `VisionDataset.__getitem__` + `collate_fn` do.
pub struct Encoder<'a> {
    model: &'a Model,
    answer_end: u32,
}

impl<'a> Encoder<'a> {
    pub fn new(model: &'a Model) -> Result<Self> {
        let answer_end = model
            .tokenizer
            .token_to_id(ANSWER_END)
            .with_context(|| format!("the tokenizer has no {ANSWER_END} token to end answers with"))?;
        Ok(Self { model, answer_end })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .model
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// `prompt` + `answer` with at most `seq_len` input tokens.
    pub fn tokenize(&self, prompt: &str, answer: &str, seq_len: usize) -> Result<Tokenized> {
        let cfg = &self.model.config;
        let n_image = deepseek_ocr::num_image_tokens(cfg.base_size);
        let mut ids = Vec::new();
        for (i, piece) in prompt.split("<image>").enumerate() {
            if i > 0 {
                ids.extend(std::iter::repeat_n(cfg.image_token_id, n_image));
            }
            ids.extend(self.encode(piece)?);
        }
        let prompt_len = ids.len();
        ids.extend(self.encode(answer)?);
        ids.push(self.answer_end);
        let n = (ids.len() - 1).min(seq_len);
        if ids[..n.min(prompt_len)].contains(&cfg.image_token_id) && n < prompt_len {
            bail!("the sequence length {seq_len} cuts the prompt ({prompt_len} tokens with the image)");
        }
        let truncated = ids.len() - 1 - n;
        let input_ids = ids[..n].to_vec();
        let targets = (0..n)
            .map(|i| {
                let masked = i + 1 < prompt_len || input_ids[i] == cfg.image_token_id;
                if masked {
                    -1
                } else {
                    ids[i + 1] as i64
                }
            })
            .collect();
        Ok(Tokenized {
            input_ids,
            targets,
            truncated,
        })
    }

    /// A training example: the sample's tokens and its preprocessed image.
    pub fn example(&self, data: &Dataset, i: usize, seq_len: usize) -> Result<(Example, usize)> {
        let s = &data.samples[i];
        let image = data.image(i)?;
        self.example_from(s, &image, seq_len)
            .with_context(|| format!("sample {} ({})", i, s.id))
    }

    /// As [`Encoder::example`], for a sample and its image in hand.
    pub fn example_from(&self, s: &Sample, image: &image::DynamicImage, seq_len: usize) -> Result<(Example, usize)> {
        let t = self.tokenize(&s.prompt, &s.answer, seq_len)?;
        let (_, pixels) = deepseek_ocr::preprocess(image, self.model.config.base_size, &self.model.info().device)?;
        Ok((
            Example {
                input_ids: t.input_ids,
                targets: t.targets,
                pixels: Some(pixels),
            },
            t.truncated,
        ))
    }
}

/// Where the data order stands: epoch and index into that epoch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub index: usize,
}

/// The order samples are drawn in: as a PyTorch DataLoader with `drop_last=True` yields them,
/// in file order without shuffling, otherwise a permutation per epoch that depends only on
/// (seed, epoch), so a resumed run draws exactly what an uninterrupted one would.
pub struct Order {
    len: usize,
    shuffle: bool,
    seed: u64,
    epoch_order: Vec<usize>,
    pub cursor: Cursor,
}

impl Order {
    pub fn new(len: usize, shuffle: bool, seed: u64, cursor: Cursor) -> Self {
        let mut o = Self {
            len,
            shuffle,
            seed,
            epoch_order: Vec::new(),
            cursor,
        };
        o.epoch_order = o.permutation(cursor.epoch);
        o
    }

    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The next `n` sample indices; an epoch's last partial group is dropped and the next
    /// epoch begins (as `drop_last=True`).
    pub fn next(&mut self, n: usize) -> Result<Vec<usize>> {
        if n == 0 || n > self.len {
            bail!("a batch of {n} samples from a split of {}", self.len);
        }
        if self.cursor.index + n > self.len {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                index: 0,
            };
            self.epoch_order = self.permutation(self.cursor.epoch);
        }
        let out = self.epoch_order[self.cursor.index..self.cursor.index + n].to_vec();
        self.cursor.index += n;
        Ok(out)
    }
}

/// Splits a step's examples into micro-batches: with a token budget, consecutive examples
/// while their summed cost stays within it (each example's cost is its sequence length plus
/// its image's encoder cost); without one, groups of `batch_size`.
pub fn micro_batches(costs: &[usize], batch_size: usize, batch_tokens: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < costs.len() {
        let mut end = start + 1;
        match batch_tokens {
            Some(budget) => {
                let mut used = costs[start];
                while end < costs.len() && used + costs[end] <= budget {
                    used += costs[end];
                    end += 1;
                }
            }
            None => end = (start + batch_size.max(1)).min(costs.len()),
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// What an image costs the encoder, in tokens of the budget: SAM's patches at the base size
/// (4,096 at 1024), whose activations dominate a sample's memory.
pub fn image_cost(base_size: usize) -> usize {
    (base_size / 16).pow(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instruction_is_the_prompt_without_its_marker_and_joining_newline() {
        let instruction = |prompt: &str| {
            Sample {
                id: String::new(),
                kind: String::new(),
                prompt: prompt.into(),
                answer: String::new(),
                image: String::new(),
            }
            .instruction()
        };
        assert_eq!(instruction("<image>\nRead it.\n"), "Read it.\n");
        assert_eq!(instruction("Read it.\n<image>"), "Read it.");
        assert_eq!(instruction("<image>"), "");
        assert_eq!(instruction(" Read it. "), " Read it. ");
    }

    #[test]
    fn order_without_shuffle_drops_the_last_partial_batch_and_wraps() {
        let mut o = Order::new(5, false, 0, Cursor::default());
        let got: Vec<Vec<usize>> = (0..4).map(|_| o.next(2).unwrap()).collect();
        assert_eq!(got, [vec![0, 1], vec![2, 3], vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn a_resumed_order_continues_where_it_stopped() {
        let mut a = Order::new(7, true, 3, Cursor::default());
        let first: Vec<Vec<usize>> = (0..5).map(|_| a.next(3).unwrap()).collect();
        let mut b = Order::new(7, true, 3, Cursor::default());
        b.next(3).unwrap();
        b.next(3).unwrap();
        let mut c = Order::new(7, true, 3, b.cursor);
        let rest: Vec<Vec<usize>> = (0..3).map(|_| c.next(3).unwrap()).collect();
        assert_eq!(first[2..], rest[..]);
        assert_ne!(first[0], first[2], "epochs are shuffled differently");
    }

    #[test]
    fn micro_batches_respect_the_budget() {
        assert_eq!(micro_batches(&[3, 3, 3, 9, 1], 2, None), [0..2, 2..4, 4..5]);
        assert_eq!(micro_batches(&[3, 3, 3, 9, 1], 2, Some(6)), [0..2, 2..3, 3..4, 4..5]);
    }
}
