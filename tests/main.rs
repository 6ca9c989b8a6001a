//! The integration tests, one module per file beside this one, linked into one test binary:
//! the crate and its dependencies are linked once instead of once per file.

mod common;

mod bench_peer;
mod cli_generate;
mod cli_run;
mod cli_train;
mod config_corpus;
mod deepseek_ocr_parity;
mod engine;
mod facade;
mod kernels_on_cpu;
mod layering;
mod model_cards;
mod olmocr_bench_score;
mod pdf_render_route;
mod pdf_robustness;
mod pipeline;
mod pretrained_init;
mod qwen2_5_vl_parity;
mod qwen2_5_vl_processor;
mod qwen_tokenizer;
mod qwen_train_parity;
mod selftest;
mod train_engine;
mod train_parity;
mod train_prepare;
mod train_resume;
mod train_serve;
