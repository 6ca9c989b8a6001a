//! `ocr init --pretrained` (and `ocr train --init pretrained`): the fork's pretrained start
//! onto [`vellum::models::deepseek_ocr::pretrained`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vellum::models::deepseek_ocr::pretrained::{self, HeadSource, Sources};

/// Where the pretrained parts come from: hub ids (the HF cache honoured) or directories.
#[derive(clap::Args)]
pub struct PretrainedArgs {
    /// tokenizer.json with `<|image|>` (from tokenizer.pkl: scripts/tiktoken_to_tokenizer_json.py).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// transformers `SamModel` checkpoint (model.safetensors or pytorch_model.bin).
    #[arg(long, default_value = pretrained::SAM_ID)]
    sam: String,
    /// transformers `CLIPModel` checkpoint.
    #[arg(long, default_value = pretrained::CLIP_ID)]
    clip: String,
    /// nanochat GPT checkpoint (pytorch_model.bin, config.json optional).
    #[arg(long, default_value = pretrained::GPT_ID)]
    gpt: String,
    /// GPT attention heads [default: the GPT's config.json, else the fork's 16].
    #[arg(long)]
    n_head: Option<usize>,
    /// Images are padded to this square (1024; 512/640/1280 for the Tiny/Small/Large modes).
    #[arg(long, default_value_t = 1024)]
    base_size: usize,
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Write the fork's pretrained start (SAM, CLIP, nanochat's GPT) as a model directory here.
    #[arg(long, value_name = "OUT")]
    pretrained: PathBuf,
    /// Seeds the fresh parts (net_2/net_3, projector, image newline/separator, new vocabulary rows).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sources: PretrainedArgs,
}

/// What `ocr train --init` starts from.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InitKind {
    Pretrained,
}

/// Builds and writes the pretrained start at `out`, printing what it is made of.
pub fn write_pretrained(out: &Path, seed: u64, args: &PretrainedArgs) -> Result<()> {
    let tokenizer = args
        .tokenizer
        .clone()
        .context("--tokenizer is required for a pretrained start")?;
    let sources = Sources {
        sam: args.sam.clone(),
        clip: args.clip.clone(),
        gpt: args.gpt.clone(),
        tokenizer,
        n_head: args.n_head,
        base_size: args.base_size,
        seed,
    };
    let initial = pretrained::write(&sources, out)?;
    let c = &initial.config;
    let heads = match initial.head_source {
        HeadSource::Given => "given",
        HeadSource::CheckpointConfig => "from the GPT's config.json",
        HeadSource::Fork => "the fork's",
    };
    eprintln!(
        "{}: SAM {}×{} ({}), CLIP {}×{} ({}), GPT {} layers of {} ({} heads, {heads}) ({}); \
         vocabulary {} → {}; base size {}",
        out.display(),
        c.sam.depth,
        c.sam.embed_dim,
        args.sam,
        c.clip.num_layers,
        c.clip.hidden_size,
        args.clip,
        c.gpt.n_layer,
        c.gpt.n_embd,
        c.gpt.n_head,
        args.gpt,
        initial.pretrained_vocab,
        c.gpt.vocab_size,
        c.base_size
    );
    Ok(())
}

pub fn init(args: InitArgs) -> Result<ExitCode> {
    write_pretrained(&args.pretrained, args.seed, &args.sources)?;
    Ok(ExitCode::SUCCESS)
}
