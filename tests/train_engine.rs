//! The trainer and the engine share one parameter store: an engine serving the model generates
//! between optimizer steps and sees each update at its next step, with no save or reload.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use vellum::engine::sampler::SamplingParams;
use vellum::engine::{Engine, EngineConfig, Generation};
use vellum::hub::ModelFiles;
use vellum::models::deepseek_ocr::Model;
use vellum::models::VisionLanguageModel;
use vellum::train::optim::Schedule;
use vellum::train::{TrainConfig, Trainer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn greedy(engine: &Engine, image: &image::DynamicImage) -> Generation {
    let params = SamplingParams {
        max_new_tokens: Some(6),
        ignore_eos: true,
        ..Default::default()
    };
    engine.generate(image, "OCR this document.", params).unwrap()
}

#[test]
fn the_engine_serves_each_update_of_the_shared_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("deepseek_ocr/gqa");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config = common::read_json(src.join("config.json"));
    config["base_size"] = 512.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let model = Arc::new(Model::load(&ModelFiles::from_dir(&dir).unwrap(), DType::F32, &Device::Cpu).unwrap());
    let served: Arc<dyn VisionLanguageModel> = model.clone();
    let engine = Engine::new(served, EngineConfig::default()).unwrap();
    let image = image::open(fixtures().join("train/data/images/receipt.png")).unwrap();
    let before = greedy(&engine, &image);

    let config = TrainConfig {
        batch_size: 2,
        lr: 1e-2,
        schedule: Schedule::Constant { warmup: 0 },
        seq_len: 116,
        shuffle: false,
        eval_every: 0,
        ..TrainConfig::new(fixtures().join("train/data"), tmp.path().join("out"), 2)
    };
    let mut trainer = Trainer::new(model.clone(), config, None).unwrap();
    let mut last = before.clone();
    for _ in 0..2 {
        trainer.step().unwrap();
        // The same engine, no reload: its next step runs on the updated tensors (the vision
        // and prefix caches are keyed by the weights' version, so nothing stale is reused).
        let now = greedy(&engine, &image);
        assert_ne!(now.logprobs, last.logprobs, "the engine did not see the optimizer step");
        last = now;
    }

    // Evaluation generates through an engine of its own sized for its samples, all of them at
    // once: each output is what the served model gives that sample alone.
    trainer.config.eval_generate = 3;
    let eval = trainer.evaluate().unwrap().expect("the fixture has val.json");
    let val = vellum::train::data::Dataset::open(&fixtures().join("train/data"), "val").unwrap();
    assert_eq!(eval.samples.len(), 3.min(val.samples.len()));
    for (i, sample) in eval.samples.iter().enumerate() {
        let params = SamplingParams {
            max_new_tokens: Some(116),
            ..Default::default()
        };
        let alone = engine
            .generate(&val.image(i).unwrap(), &val.samples[i].instruction(), params)
            .unwrap();
        assert_eq!(sample.output, alone.text, "sample {i}");
    }

    // What it served is exactly the saved model's output, loaded from disk afresh.
    let saved = trainer.save_final().unwrap();
    let reloaded = Model::load(&ModelFiles::from_dir(&saved).unwrap(), DType::F32, &Device::Cpu).unwrap();
    let fresh = Engine::new(Arc::new(reloaded), EngineConfig::default()).unwrap();
    let check = greedy(&fresh, &image);
    assert_eq!(check.tokens, last.tokens);
    assert_eq!(check.logprobs, last.logprobs);
}
