//! Image resampling that reproduces torchvision's `resize(uint8, BICUBIC, antialias=True)` and
//! Pillow's `Image.resize(BICUBIC)`, which share one algorithm and differ only in how finely
//! they quantise the weights.
//!
//! transformers' default Qwen2-VL image processor resizes uint8 tensors with torchvision; on the
//! CPU that is PyTorch's separable antialiased filter (the same algorithm as Pillow): a cubic
//! kernel with a = -0.5 whose support widens by the scale factor when shrinking, weights
//! normalised per output pixel and quantised to int16 fixed point, a horizontal pass then a
//! vertical pass, each rounding and clamping to u8. Matching that, rather than resizing in float,
//! keeps vellum's pixels within a grey level of the reference.

use candle_core::{DType, Tensor};
use image::RgbImage;

/// Python's `round()` for non-negative values: halves go to the even neighbour.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The cubic convolution kernel PyTorch's antialiased path uses (a = -0.5, as Pillow).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// How the filter weights are quantised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// PyTorch: int16 weights at the largest precision the biggest weight allows.
    Torch,
    /// Pillow: int32 weights at a fixed 22 fractional bits.
    Pillow,
}

/// For one axis: each output pixel's first input index and its fixed-point weights, plus the
/// precision shared by all of them.
struct AxisWeights {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
    precision: u32,
}

/// For one axis: each output pixel's first input index and its normalised weights.
fn float_axis_weights(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<Vec<f64>>) {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let (support, inv_scale) = if scale >= 1.0 {
        (SUPPORT * scale, 1.0 / scale)
    } else {
        (SUPPORT, 1.0)
    };
    let mut starts = Vec::with_capacity(out_size);
    let mut float_weights = Vec::with_capacity(out_size);
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|j| cubic((j as f64 - center + 0.5) * inv_scale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        starts.push(xmin);
        float_weights.push(w);
    }
    (starts, float_weights)
}

fn axis_weights(in_size: usize, out_size: usize, mode: Precision) -> AxisWeights {
    let (starts, float_weights) = float_axis_weights(in_size, out_size);
    // The largest precision at which the biggest weight still fits in int16.
    let w_max = float_weights.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64;
        if mode == Precision::Torch && next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = (1u64 << precision) as f64;
    let weights = float_weights
        .into_iter()
        .map(|w| {
            w.into_iter()
                .map(|v| {
                    let v = v * unit;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect()
        })
        .collect();
    AxisWeights {
        starts,
        weights,
        precision,
    }
}

fn to_u8(acc: i64, precision: u32) -> u8 {
    let rounded = (acc + (1i64 << precision >> 1)) >> precision;
    rounded.clamp(0, 255) as u8
}

/// Resizes an RGB image to `width` × `height` as torchvision's antialiased bicubic does on uint8.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_bicubic_with(img, width, height, Precision::Torch)
}

/// Resizes an RGB image with the weights quantised as `mode` says.
pub fn resize_bicubic_with(img: &RgbImage, width: u32, height: u32, mode: Precision) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let horizontal = if in_w != width {
        let ax = axis_weights(in_w as usize, width as usize, mode);
        let src = img.as_raw();
        let mut out = vec![0u8; width as usize * in_h as usize * 3];
        for y in 0..in_h as usize {
            let row = &src[y * in_w as usize * 3..(y + 1) * in_w as usize * 3];
            for x in 0..width as usize {
                for c in 0..3 {
                    let acc: i64 = ax.weights[x]
                        .iter()
                        .enumerate()
                        .map(|(k, &w)| w as i64 * row[(ax.starts[x] + k) * 3 + c] as i64)
                        .sum();
                    out[(y * width as usize + x) * 3 + c] = to_u8(acc, ax.precision);
                }
            }
        }
        RgbImage::from_raw(width, in_h, out).expect("buffer size matches")
    } else {
        img.clone()
    };
    if in_h == height {
        return horizontal;
    }
    let ay = axis_weights(in_h as usize, height as usize, mode);
    let src = horizontal.as_raw();
    let stride = width as usize * 3;
    let mut out = vec![0u8; stride * height as usize];
    for y in 0..height as usize {
        for i in 0..stride {
            let acc: i64 = ay.weights[y]
                .iter()
                .enumerate()
                .map(|(k, &w)| w as i64 * src[(ay.starts[y] + k) * stride + i] as i64)
                .sum();
            out[y * stride + i] = to_u8(acc, ay.precision);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer size matches")
}

/// The antialiased bicubic filter of one axis as an (out_size, in_size) matrix.
fn bicubic_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let (starts, weights) = float_axis_weights(in_size, out_size);
    let mut m = vec![0f32; out_size * in_size];
    for (i, (start, w)) in starts.iter().zip(weights).enumerate() {
        for (k, w) in w.into_iter().enumerate() {
            m[i * in_size + start + k] = w as f32;
        }
    }
    m
}

/// PyTorch's `interpolate(bicubic, antialias=True)` of float planes (C, H, W) to
/// (C, out_h, out_w): the separable filter as two matrix products (width, then height), in f32,
/// so that what is resized (learned position embeddings) keeps its gradient.
pub fn resize_planes_bicubic_tensor(planes: &Tensor, (out_h, out_w): (usize, usize)) -> candle_core::Result<Tensor> {
    let (_, in_h, in_w) = planes.dims3()?;
    let dev = planes.device();
    let wx = Tensor::from_vec(bicubic_matrix(in_w, out_w), (out_w, in_w), dev)?;
    let wy = Tensor::from_vec(bicubic_matrix(in_h, out_h), (out_h, in_h), dev)?;
    let dtype = planes.dtype();
    let rows = planes.to_dtype(DType::F32)?.broadcast_matmul(&wx.t()?)?; // (C, H, out_w)
    wy.broadcast_matmul(&rows)?.to_dtype(dtype)
}

/// PyTorch's `interpolate(mode="linear", align_corners=False)` from `in_size` to `out_size`
/// samples as an (out_size, in_size) matrix.
pub fn linear_resize_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let scale = in_size as f32 / out_size as f32;
    let mut m = vec![0f32; out_size * in_size];
    for i in 0..out_size {
        let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(in_size - 1);
        let i1 = (i0 + 1).min(in_size - 1);
        let l = src - i0 as f32;
        m[i * in_size + i0] += 1.0 - l;
        m[i * in_size + i1] += l;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even() {
        for (x, want) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (2.4999, 2.0),
            (2.5001, 3.0),
            (7.0, 7.0),
        ] {
            assert_eq!(round_half_even(x), want, "round({x})");
        }
    }

    #[test]
    fn same_size_is_identity() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
        assert_eq!(resize_bicubic(&img, 7, 5), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        // Weights sum to one in fixed point, so a flat image must come back flat at any scale.
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 128]));
        for (w, h) in [(11, 5), (80, 61), (37, 100)] {
            let out = resize_bicubic(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [200, 17, 128]), "{w}x{h}");
        }
    }
}
