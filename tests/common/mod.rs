//! Helpers shared by the integration tests: fixture paths and error measures.

pub mod pdfgen;

use std::path::PathBuf;

use candle_core::Tensor;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_5_vl")
}

pub fn read_json(path: impl Into<PathBuf>) -> serde_json::Value {
    let path = path.into();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// ‖a − b‖₂ / ‖b‖₂ over all elements, in f64 (the GPU self-test's measure).
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    vellum::ops::rel_l2(a, b).unwrap()
}

pub fn open_rgb(path: &std::path::Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// The largest per-channel difference between two images of the same size.
pub fn max_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions(), "image size mismatch");
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Adds one backward pass's gradients of `params` to `sums`, by parameter name (a checkpointed
/// backward hands over several stores).
pub fn add_grads(
    sums: &mut std::collections::BTreeMap<String, Tensor>,
    params: &vellum::weights::ParamStore,
    mut store: candle_core::backprop::GradStore,
) -> candle_core::Result<()> {
    for (name, var) in params.vars() {
        if let Some(g) = store.remove(var.as_tensor()) {
            let sum = match sums.remove(name) {
                Some(old) => (old + g)?,
                None => g,
            };
            sums.insert(name.clone(), sum);
        }
    }
    Ok(())
}
