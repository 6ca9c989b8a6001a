//! vellum's Qwen2-VL image processor against transformers' (torchvision backend) on images of
//! awkward sizes: the uint8 resize must equal torchvision's pixel for pixel, and the normalised
//! pixel tensors must agree to 1e-5.

use crate::common;

use candle_core::{Device, Tensor};
use vellum::models::qwen2_5_vl::processor::{smart_resize, ImageProcessorConfig};

#[test]
fn smart_resize_matches_python_including_ties() {
    let cases = common::read_json(common::fixtures().join("processor/cases.json"));
    for c in cases["smart_resize"].as_array().unwrap() {
        let get = |k: &str| c[k].as_u64().unwrap() as usize;
        let got = smart_resize(get("height"), get("width"), 28, get("min_pixels"), get("max_pixels")).ok();
        let want = c["out"]
            .as_array()
            .map(|v| (v[0].as_u64().unwrap() as usize, v[1].as_u64().unwrap() as usize));
        assert_eq!(got, want, "smart_resize case {c}");
    }
}

#[test]
fn pixels_match_the_torchvision_processor() {
    let dir = common::fixtures().join("processor");
    let cases = common::read_json(dir.join("cases.json"));
    let cfg = ImageProcessorConfig::default();
    let mut report = Vec::new();
    for c in cases["images"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let input = image::open(dir.join(format!("{name}.png"))).unwrap();
        let rgb = ImageProcessorConfig::to_rgb(&input);
        if input.color().has_alpha() {
            let want = common::open_rgb(&dir.join(format!("{name}.rgb.png")));
            let max = common::max_abs_diff(&rgb, &want);
            assert!(max <= 1, "{name}: alpha compositing differs by {max} grey levels");
        }
        let resized = cfg.resize(&rgb).unwrap();
        let want = common::open_rgb(&dir.join(format!("{name}.resized.png")));
        assert_eq!(resized.dimensions(), want.dimensions(), "{name}: resized size");
        let diffs: Vec<u8> = resized
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        let off = diffs.iter().filter(|&&d| d > 0).count() as f64 / diffs.len() as f64;
        // PyTorch's fixed-point resampling is reproduced exactly (measured: 0 of every pixel).
        assert_eq!(max, 0, "{name}: resize differs (mean {mean} grey levels)");

        let processed = cfg.preprocess(&input, &Device::Cpu).unwrap();
        let grid: Vec<usize> = c["grid_thw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(processed.grid_thw.to_vec(), grid, "{name}: grid_thw");
        // The same normalisation applied to the reference's resize: isolates resampling error.
        let (reference_values, _) = cfg.patchify(&want);
        let reference = Tensor::from_vec(reference_values, processed.pixel_values.shape(), &Device::Cpu).unwrap();
        let normalised_mean = (&processed.pixel_values - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if c.get("pixel_values").is_some() {
            let st = candle_core::safetensors::load(dir.join(format!("{name}.pixel_values.safetensors")), &Device::Cpu)
                .unwrap();
            let expected = &st["pixel_values"];
            let max_err = (&processed.pixel_values - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(max_err <= 1e-5, "{name}: pixel_values differ by {max_err}");
        }
        report.push(format!("{name:>18} {:>4}x{:<4} -> {:>4}x{:<4}  u8 mean {mean:.4} max {max} ({:.2}% off)  normalised mean {normalised_mean:.5}",
            c["width"], c["height"], c["resized_width"], c["resized_height"], off * 100.0));
    }
    eprintln!("processor vs transformers:\n{}", report.join("\n"));
}
