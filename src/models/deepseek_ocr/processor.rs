//! The model's image processing and prompt facts, as the fork's image_process.py and
//! vision_dataloader.py have them: the page padded to a square, the image-token count of a base
//! size, the instruction per kind of page.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};

use crate::imaging::{resize_bicubic_with, round_half_even, Precision};

/// The instruction for each kind of page.
pub const DOCUMENT_INSTRUCTION: &str = "OCR this document.";
pub const TABLE_INSTRUCTION: &str = "Convert this table to HTML.";
pub const DIAGRAM_INSTRUCTION: &str = "Describe this diagram.";

/// Image tokens for a base size: (n+1)·n+1 with n = base/64.
pub fn num_image_tokens(base_size: usize) -> usize {
    let n = base_size / 64;
    (n + 1) * n + 1
}

/// image_process.py: RGB, then PIL's `ImageOps.pad` to base × base (bicubic resize keeping the
/// aspect ratio, centred on a (127, 127, 127) canvas), then ToTensor and mean = std = 0.5.
/// Returns the padded image and its (3, base, base) tensor.
pub fn preprocess(image: &DynamicImage, base: usize, device: &Device) -> Result<(RgbImage, Tensor)> {
    let img = image.to_rgb8();
    let (w, h) = (img.width() as f64, img.height() as f64);
    if img.width() == 0 || img.height() == 0 {
        bail!("the image has no pixels");
    }
    let size = base as u32;
    // ImageOps.contain: the longer side becomes `base`, the shorter one round(ratio · base);
    // Pillow resizes whenever the size differs, even when only the longer side does.
    let base_f = base as f64;
    let (new_w, new_h) = if w > h {
        (size, (round_half_even(h / w * base_f) as u32).max(1))
    } else if w < h {
        ((round_half_even(w / h * base_f) as u32).max(1), size)
    } else {
        (size, size)
    };
    let resized = if img.dimensions() == (new_w, new_h) {
        img
    } else {
        resize_bicubic_with(&img, new_w, new_h, Precision::Pillow)
    };
    // ImageOps.pad: centred on the grey canvas, offsets rounded half to even.
    let mut canvas = RgbImage::from_pixel(size, size, image::Rgb([127, 127, 127]));
    let offset = |len: u32| round_half_even((base_f - len as f64) * 0.5) as i64;
    image::imageops::replace(&mut canvas, &resized, offset(new_w), offset(new_h));
    let plane = base * base;
    let mut values = vec![0f32; 3 * plane];
    for (i, p) in canvas.pixels().enumerate() {
        for c in 0..3 {
            values[c * plane + i] = (p.0[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    Ok((canvas, Tensor::from_vec(values, (3, base, base), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 129×128 at base 64: round(128/129 · 64) = 64, so only the width changes. Pillow's
    /// ImageOps.pad then resizes to 64×64 (checked with Pillow 13: equal to `resize((64, 64))`
    /// everywhere) rather than pasting a crop of the unresized image.
    #[test]
    fn a_near_square_image_is_resized_not_cropped() {
        let img = RgbImage::from_fn(129, 128, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x ^ y) * 3) as u8])
        });
        let (padded, _) = preprocess(&DynamicImage::ImageRgb8(img.clone()), 64, &Device::Cpu).unwrap();
        assert_eq!(padded, resize_bicubic_with(&img, 64, 64, Precision::Pillow));
    }
}
