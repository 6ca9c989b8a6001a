//! `ocr train`, `prepare` and `convert`: the trainer's flags onto
//! [`vellum::train`], its events printed as they come.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::ValueEnum;
use vellum::DType;

use crate::args::{fraction, learning_rate, positive, DeviceArgs};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The trainer's checkpoint: a PyTorch state dict (.pt), or the same as .safetensors.
    checkpoint: PathBuf,
    out_dir: PathBuf,
    /// tokenizer.json (from tokenizer.pkl: scripts/tiktoken_to_tokenizer_json.py).
    #[arg(long)]
    tokenizer: PathBuf,
    /// GPT attention heads (the weights cannot tell).
    #[arg(long, default_value_t = 16)]
    n_head: usize,
    /// Images are padded to this square (1024; 512/640/1280 for the Tiny/Small/Large modes).
    #[arg(long, default_value_t = 1024)]
    base_size: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Cosine,
    Step,
    Constant,
    Linear,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum FreezeArg {
    Vision,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model directory to start from (config.json, model.safetensors, tokenizer.json).
    #[arg(long, required_unless_present_any = ["init_config", "init"])]
    model: Option<PathBuf>,
    /// Start from fresh weights (nanochat's init) for this config.json; tokenizer.json beside it.
    #[arg(long, conflicts_with = "model")]
    init_config: Option<PathBuf>,
    /// pretrained: the fork's start (SAM, CLIP, nanochat's GPT; `ocr init`), written to <out>/init/.
    #[arg(long, value_enum, conflicts_with_all = ["model", "init_config"])]
    init: Option<crate::init::InitKind>,
    #[command(flatten)]
    pretrained: crate::init::PretrainedArgs,
    /// A directory with train.json / val.json in the fork's format.
    #[arg(long)]
    data: PathBuf,
    /// Where step_N/, best/ and final/ go.
    #[arg(long)]
    out: PathBuf,
    /// The vision-tokenizer model: 1: everything trains; 2: SAM (net_2/net_3 included) frozen.
    #[arg(long, default_value_t = 1)]
    stage: u8,
    /// `vision` keeps the image path fixed (no gradients computed): Qwen2.5-VL's tower and
    /// merger; the vision-tokenizer model's SAM, CLIP and projector, so that a language model
    /// learning from fresh weights reads the encoder's features before they can drift.
    #[arg(long, value_enum)]
    freeze: Option<FreezeArg>,
    /// Keep only each layer's input (decoder layers; the vision-tokenizer model's SAM blocks
    /// too) and recompute the layer on the way back (activation memory of one layer instead
    /// of all).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Qwen: train LoRA adapters of rank R on --lora-targets and nothing else; step_N/, best/
    /// and final/ are peft adapter directories (`ocr run --model` serves them unmerged).
    #[arg(long, value_parser = positive)]
    lora: Option<usize>,
    /// The adapters' α (their output is scaled by α/R). Default: R.
    #[arg(long, requires = "lora")]
    lora_alpha: Option<f64>,
    /// Modules that get adapters, by the last part of their name (as peft matches them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj",
        requires = "lora"
    )]
    lora_targets: Vec<String>,
    /// Write final/ as a plain model directory with the adapters merged into the weights.
    #[arg(long, requires = "lora")]
    merge_lora: bool,
    #[arg(long, value_parser = positive)]
    steps: usize,
    /// Samples per micro-batch; a step is batch-size × grad-accum samples.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    batch_size: usize,
    #[arg(long, default_value_t = 1, value_parser = positive)]
    grad_accum: usize,
    /// Token budget of a micro-batch (sequence + each image's encoder cost, (base/16)²).
    #[arg(long, value_parser = positive)]
    batch_tokens: Option<usize>,
    #[arg(long, default_value_t = 5e-5, value_parser = learning_rate)]
    lr: f64,
    /// The vision encoder's learning rate as a fraction of --lr (the projector and the
    /// language model take --lr).
    #[arg(long, default_value_t = 1.0, value_parser = fraction)]
    vision_lr_scale: f64,
    #[arg(long, default_value_t = 10)]
    warmup_steps: usize,
    /// Warmup as a fraction of --steps, rounded up (olmOCR: 0.1); replaces --warmup-steps.
    #[arg(long, value_parser = fraction, conflicts_with = "warmup_steps")]
    warmup_ratio: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// StepLR: decay every this many steps after warmup.
    #[arg(long, default_value_t = 2000)]
    lr_decay_step: usize,
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    lr_decay_gamma: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm limit (0: none).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 4096, value_parser = positive)]
    seq_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples in train.json's order, as a DataLoader with shuffle=False, drop_last=True.
    #[arg(long)]
    no_shuffle: bool,
    /// Write a resumable step_N/ every N steps (0: only final/).
    #[arg(long, default_value_t = 0)]
    save_every: usize,
    /// Continue from the newest complete step_N/ under --out.
    #[arg(long)]
    resume: bool,
    /// Validation loss every N steps (0: never); the best model is kept in <out>/best/.
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// Stop after K evaluations without a lower validation loss.
    #[arg(long)]
    patience: Option<usize>,
    /// Stop after the first step that ends M minutes after the start (evaluating and saving
    /// as at the last step).
    #[arg(long, value_name = "M")]
    max_minutes: Option<f64>,
    /// Also generate on K validation images through the engine (live weights) and report CER/WER.
    #[arg(long, default_value_t = 0)]
    eval_generate: usize,
    /// Stage 2: fraction of steps on text alone, from --text-data (JSONL of {"text"}).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    text_ratio: f64,
    #[arg(long)]
    text_data: Option<PathBuf>,
    #[command(flatten)]
    place: DeviceArgs,
    /// One JSON line per optimizer step: {"step", "loss", "lr", "grad_norm", "tokens"}.
    #[arg(long)]
    log_json: Option<PathBuf>,
}

impl TrainArgs {
    fn config(&self) -> vellum::train::TrainConfig {
        use vellum::train::optim::{AdamWConfig, Schedule};
        let warmup = match self.warmup_ratio {
            Some(ratio) => (self.steps as f64 * ratio).ceil() as usize,
            None => self.warmup_steps,
        };
        vellum::train::TrainConfig {
            data: self.data.clone(),
            out: self.out.clone(),
            stage: self.stage,
            freeze_vision: self.freeze == Some(FreezeArg::Vision),
            gradient_checkpointing: self.gradient_checkpointing,
            // The fork's recipe: f32 master weights, linear layers computing in bf16.
            autocast_bf16: self.place.dtype.map(DType::from) == Some(DType::BF16),
            lora: self.lora.map(|r| vellum::models::lora::LoraConfig {
                r,
                lora_alpha: self.lora_alpha.unwrap_or(r as f64),
                target_modules: self.lora_targets.clone(),
                base_model_name_or_path: None,
            }),
            merge_lora: self.merge_lora,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            batch_tokens: self.batch_tokens,
            lr: self.lr,
            vision_lr_scale: self.vision_lr_scale,
            schedule: match self.schedule {
                ScheduleArg::Cosine => Schedule::Cosine {
                    warmup,
                    steps: self.steps,
                },
                ScheduleArg::Step => Schedule::Step {
                    warmup,
                    decay_step: self.lr_decay_step,
                    gamma: self.lr_decay_gamma,
                },
                ScheduleArg::Constant => Schedule::Constant { warmup },
                ScheduleArg::Linear => Schedule::Linear {
                    warmup,
                    steps: self.steps,
                },
            },
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            grad_clip: self.grad_clip,
            seq_len: self.seq_len,
            seed: self.seed,
            shuffle: !self.no_shuffle,
            save_every: self.save_every,
            eval_every: self.eval_every,
            patience: self.patience,
            max_time: self
                .max_minutes
                .map(|m| std::time::Duration::from_secs_f64(m.max(0.0) * 60.0)),
            eval_generate: self.eval_generate,
            text_ratio: self.text_ratio,
            text_data: self.text_data.clone(),
            log_json: self.log_json.clone(),
        }
    }
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// olmOCR-mix as the hub lays it out (<subset>_train.parquet + pdf_tarballs/), or unpacked
    /// (a .md with YAML front matter beside each .pdf).
    input: PathBuf,
    /// The hub layout's subset.
    #[arg(long, default_value = "00_documents")]
    subset: String,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 300)]
    num_train: usize,
    #[arg(long, default_value_t = 10)]
    num_val: usize,
    /// nano: the vision-tokenizer model's samples (150 DPI, instruction by content type);
    /// olmocr: olmOCR's (longest side 1288, v4 prompt, YAML front matter + text); rolmocr:
    /// RolmOCR's (longest side 1288, its prompt, plain text).
    #[arg(long, value_enum, default_value_t = PrepareFormat::Nano)]
    format: PrepareFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrepareFormat {
    Nano,
    Olmocr,
    Rolmocr,
}

pub fn prepare(args: PrepareArgs) -> Result<ExitCode> {
    use vellum::train::prepare::Format;
    let format = match args.format {
        PrepareFormat::Nano => Format::Nano,
        PrepareFormat::Olmocr => Format::Olmocr,
        PrepareFormat::Rolmocr => Format::Rolmocr,
    };
    let report = vellum::train::prepare::prepare(
        &args.input,
        &args.out,
        &args.subset,
        args.num_train,
        args.num_val,
        format,
    )?;
    for (id, reason) in &report.skipped {
        eprintln!("skipped {id}: {reason}");
    }
    eprintln!(
        "{} train + {} val samples in {} ({}); {} rows skipped; report in {}",
        report.train,
        report.val,
        args.out.display(),
        report
            .types
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.skipped.len(),
        args.out.join("report.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    use vellum::train::run::Event;
    let device = vellum::device::parse(&args.place.device)?;
    if args.place.quantization.is_some() {
        anyhow::bail!("--quantization: training runs in f32 (a quantised copy serves, it does not learn)");
    }
    if let Some(dtype) = args.place.dtype.map(DType::from) {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            anyhow::bail!("--dtype {dtype:?}: training runs in f32, or in f32 with bf16 autocast (--dtype bf16)");
        }
    }
    let started = Instant::now();
    let start = match (&args.model, &args.init_config, args.init) {
        (Some(dir), _, _) => vellum::train::run::Start::Model(dir.clone()),
        (None, Some(config), _) => vellum::train::run::Start::Fresh {
            config: config.clone(),
            seed: args.seed,
        },
        (None, None, Some(crate::init::InitKind::Pretrained)) => {
            let dir = args.out.join("init");
            // A resumed run keeps the start it wrote (same flags, same seed: the same tensors).
            if !(args.resume && dir.join("model.safetensors").is_file()) {
                crate::init::write_pretrained(&dir, args.seed, &args.pretrained)?;
            }
            vellum::train::run::Start::Model(dir)
        }
        (None, None, None) => unreachable!("clap requires one"),
    };
    let summary = vellum::train::run::run(&start, &device, args.config(), args.resume, |event| match event {
        Event::Resumed {
            from: Some((dir, step)),
        } => eprintln!("resuming from {} (step {step})", dir.display()),
        Event::Resumed { from: None } => eprintln!(
            "--resume: no complete checkpoint in {}; starting from the beginning",
            args.out.display()
        ),
        Event::Step(s) => eprintln!(
            "step {:>5}/{} | loss {:.4} | lr {:.3e} | grad norm {:.3} | {} tokens | {:.1}s",
            s.step + 1,
            args.steps,
            s.loss,
            s.lr,
            s.grad_norm,
            s.tokens,
            started.elapsed().as_secs_f64()
        ),
        Event::Eval(e) => {
            let gen = match (e.cer, e.wer) {
                (Some(c), Some(w)) => format!(" | CER {:.3} | WER {:.3} ({} samples)", c, w, e.samples.len()),
                _ => String::new(),
            };
            eprintln!("eval at step {} | val loss {:.4}{gen}", e.step, e.val_loss)
        }
        Event::Saved(p) => eprintln!("saved {}", p.display()),
    })?;
    eprintln!(
        "done: {} steps{}, best val loss {}, {} samples truncated at --seq-len {}, final model in {}",
        summary.steps,
        if summary.stopped_early {
            " (stopped early: no improvement)"
        } else if summary.out_of_time {
            " (stopped at --max-minutes)"
        } else {
            ""
        },
        summary.best_val_loss.map_or("n/a".into(), |l| format!("{l:.4}")),
        summary.truncated_samples,
        args.seq_len,
        summary.final_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn convert(args: ConvertArgs) -> Result<ExitCode> {
    let config = vellum::models::deepseek_ocr::convert::convert_checkpoint(
        &args.checkpoint,
        &args.out_dir,
        &args.tokenizer,
        args.n_head,
        args.base_size,
    )?;
    eprintln!(
        "{} → {}: SAM {}×{}, CLIP {}×{}, GPT {} layers of {} ({} heads), vocabulary {}, base size {}",
        args.checkpoint.display(),
        args.out_dir.display(),
        config.sam.depth,
        config.sam.embed_dim,
        config.clip.num_layers,
        config.clip.hidden_size,
        config.gpt.n_layer,
        config.gpt.n_embd,
        config.gpt.n_head,
        config.gpt.vocab_size,
        config.base_size
    );
    Ok(ExitCode::SUCCESS)
}
