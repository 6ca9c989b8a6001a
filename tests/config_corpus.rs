//! Qwen2.5-VL configs as transformers 4.49–5.24 write them (tests/fixtures/configs, made by
//! tests/reference/make_config_corpus.py in one venv per version): every config.json and
//! preprocessor_config.json loads to the same model — sparse 4.49 vision configs, 4.57's
//! duplicated text fields, 5.x's text_config/rope_parameters, aliases side by side
//! (in_chans + in_channels from 4.50 on), processors with min/max_pixels and size — and
//! Qwen2-VL's configs load as Qwen2-VL (and are refused by Qwen2.5-VL's reader by name).

use std::path::PathBuf;

use vellum::models::qwen2_5_vl::config::Config;
use vellum::models::qwen2_5_vl::processor::ImageProcessorConfig;

fn corpus() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs");
    let mut dirs = Vec::new();
    for version in std::fs::read_dir(&root).unwrap() {
        let version = version.unwrap().path();
        if !version.is_dir() {
            continue;
        }
        for model in std::fs::read_dir(&version).unwrap() {
            let model = model.unwrap().path();
            if model.join("config.json").exists() {
                dirs.push(model);
            }
        }
    }
    dirs.sort();
    dirs
}

#[test]
fn every_qwen2_5_vl_config_loads_as_the_7b_model() {
    let mut checked = 0;
    for dir in corpus()
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_str().unwrap().starts_with("qwen2_5_vl"))
    {
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let c = Config::from_json(&text).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        let t = &c.text;
        let got = (
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.vocab_size,
        );
        assert_eq!(got, (3584, 28, 28, 4, 152064), "{}", dir.display());
        assert_eq!(t.mrope_section, [16, 24, 24], "{}", dir.display());
        assert_eq!(t.rope_theta, 1e6, "{}", dir.display());
        let v = &c.vision;
        let got = (
            v.depth,
            v.hidden_size,
            v.num_heads,
            v.intermediate_size,
            v.in_chans,
            v.patch_size,
            v.window_size,
            v.out_hidden_size,
        );
        assert_eq!(got, (32, 1280, 16, 3420, 3, 14, 112, 3584), "{}", dir.display());
        assert_eq!(v.fullatt_block_indexes, [7, 15, 23, 31], "{}", dir.display());
        // 5.24 names the tower's rotary base (its own `rope_parameters`, not the text one's 1e6).
        assert!(v.rope_theta().is_none_or(|t| t == 10_000.0), "{}", dir.display());
        assert_eq!(c.image_token_id, 151655, "{}", dir.display());
        let pre = dir.join("preprocessor_config.json");
        if pre.exists() {
            let p = ImageProcessorConfig::from_json(&std::fs::read_to_string(&pre).unwrap()).unwrap();
            assert_eq!(
                (p.min_pixels(), p.max_pixels()),
                (56 * 28 * 28, 2048 * 28 * 28),
                "{}",
                pre.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} configs in the corpus");
}

#[test]
fn every_qwen2_vl_config_loads_as_the_7b_model_and_not_as_qwen2_5_vl() {
    let mut checked = 0;
    for dir in corpus()
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_str().unwrap().starts_with("qwen2_vl"))
    {
        let root: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        // Qwen2.5-VL's reader refuses it by name ...
        let err = Config::from_value(root.clone()).expect_err(&dir.display().to_string());
        assert!(
            format!("{err:#}").contains("qwen2_vl") || format!("{err:#}").contains("Qwen2VL"),
            "{}: {err:#}",
            dir.display()
        );
        // ... and Qwen2-VL's reads Qwen2-VL-7B out of it.
        let c =
            vellum::models::qwen2_vl::config_from_value(root).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        let t = &c.text;
        assert_eq!(
            (
                t.hidden_size,
                t.num_hidden_layers,
                t.num_attention_heads,
                t.num_key_value_heads,
                t.vocab_size
            ),
            (3584, 28, 28, 4, 152064),
            "{}",
            dir.display()
        );
        assert_eq!(t.mrope_section, [16, 24, 24], "{}", dir.display());
        let v = &c.vision;
        assert_eq!(
            (
                v.depth,
                v.hidden_size,
                v.num_heads,
                v.intermediate_size,
                v.out_hidden_size,
                v.in_chans
            ),
            (32, 1280, 16, 5120, 3584, 3),
            "{}",
            dir.display()
        );
        assert_eq!(v.fullatt_block_indexes.len(), 32);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} Qwen2-VL configs in the corpus");
}
