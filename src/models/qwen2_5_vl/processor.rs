//! Qwen2-VL's image processor and prompt layout: smart_resize to the 28-pixel grid, bicubic
//! resize, rescale and normalise, two-frame patchify into rows of 3·2·14·14 values in
//! merge-block order, the image placeholder expanded to one pad per merged token, and the
//! M-RoPE positions of the result (transformers' `get_rope_index`).
//!
//! Every rounding follows Python's `round` (half to even), as the reference does.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use crate::imaging::{resize_bicubic, round_half_even};

/// transformers' `smart_resize`: the (height, width) on the `factor` grid closest to the
/// input, scaled to stay within [min_pixels, max_pixels].
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 {
        bail!("image has no pixels ({width}×{height})");
    }
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        bail!("absolute aspect ratio must be smaller than 200, got {ratio} ({width}×{height})");
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// The Qwen processor refuses images more elongated than this.
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Pads the short side with white (the content centred) so the long side is at most
/// `max_ratio` times the short one. vellum pads rather than tiles such pages (receipts,
/// banners, a line of a scroll): the model sees the whole page in one request, and the text
/// on it is a single strip, which smart_resize then scales like any other page.
pub fn pad_to_aspect(image: RgbImage, max_ratio: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    let (long, short) = (w.max(h) as f64, w.min(h).max(1) as f64);
    if long / short <= max_ratio {
        return image;
    }
    let padded_short = (long / max_ratio).ceil() as u32;
    let (pw, ph) = if w >= h { (w, padded_short) } else { (padded_short, h) };
    let mut out = RgbImage::from_pixel(pw, ph, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, &image, ((pw - w) / 2) as i64, ((ph - h) / 2) as i64);
    out
}

/// preprocessor_config.json, in the old (`min_pixels`/`max_pixels`) or new
/// (`size: {shortest_edge, longest_edge}`, both in pixels) layout. Where a file has both and
/// they disagree (transformers 4.49's fast processor writes its defaults into `size`),
/// transformers reads the top-level keys: so does vellum.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessorConfig {
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_two")]
    pub temporal_patch_size: usize,
    #[serde(default = "default_two")]
    pub merge_size: usize,
    #[serde(default = "clip_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "clip_std")]
    pub image_std: [f32; 3],
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    size: Option<SizeField>,
}

#[derive(Debug, Clone, Deserialize)]
struct SizeField {
    shortest_edge: Option<usize>,
    longest_edge: Option<usize>,
}

fn default_patch_size() -> usize {
    14
}
fn default_two() -> usize {
    2
}
fn clip_mean() -> [f32; 3] {
    [0.481_454_66, 0.457_827_5, 0.408_210_73]
}
fn clip_std() -> [f32; 3] {
    [0.268_629_54, 0.261_302_6, 0.275_777_1]
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl ImageProcessorConfig {
    pub const DEFAULT_MIN_PIXELS: usize = 56 * 56;
    pub const DEFAULT_MAX_PIXELS: usize = 28 * 28 * 1280;

    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).context("parsing preprocessor_config.json")
    }

    pub fn min_pixels(&self) -> usize {
        self.min_pixels
            .or(self.size.as_ref().and_then(|s| s.shortest_edge))
            .unwrap_or(Self::DEFAULT_MIN_PIXELS)
    }

    pub fn max_pixels(&self) -> usize {
        self.max_pixels
            .or(self.size.as_ref().and_then(|s| s.longest_edge))
            .unwrap_or(Self::DEFAULT_MAX_PIXELS)
    }

    /// The bounds FinePDFs ran RolmOCR with: at most 2048 and at least 56 merged tokens.
    pub fn with_finepdfs_bounds(mut self) -> Self {
        self.min_pixels = Some(56 * 28 * 28);
        self.max_pixels = Some(2048 * 28 * 28);
        self
    }

    fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Size (height, width) the image is resized to.
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        smart_resize(height, width, self.factor(), self.min_pixels(), self.max_pixels())
    }

    /// Converts to RGB as transformers does: alpha composited over white.
    pub fn to_rgb(image: &DynamicImage) -> RgbImage {
        if !image.color().has_alpha() {
            return image.to_rgb8();
        }
        let rgba = image.to_rgba8();
        let (w, h) = rgba.dimensions();
        RgbImage::from_fn(w, h, |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            let blend = |c: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8;
            image::Rgb([blend(r), blend(g), blend(b)])
        })
    }

    /// Resizes an RGB image to the grid, as uint8 (the tensor the reference normalises).
    pub fn resize(&self, image: &RgbImage) -> Result<RgbImage> {
        let (w, h) = image.dimensions();
        let (th, tw) = self.target_size(h as usize, w as usize)?;
        Ok(resize_bicubic(image, tw as u32, th as u32))
    }

    /// Normalises a grid-sized RGB image and lays it out as patch rows: returns
    /// (rows × 1176 values, grid_thw in patches).
    pub fn patchify(&self, image: &RgbImage) -> (Vec<f32>, [usize; 3]) {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gh, gw) = (h / p, w / p);
        // The reference folds the 1/255 rescale into mean and std (both × 255, in f32).
        let unscale = (1.0 / self.rescale_factor) as f32;
        let mean: Vec<f32> = self.image_mean.iter().map(|v| v * unscale).collect();
        let std: Vec<f32> = self.image_std.iter().map(|v| v * unscale).collect();
        let raw = image.as_raw();
        let row_len = 3 * t * p * p;
        let mut out = Vec::with_capacity(gh * gw * row_len);
        for by in 0..gh / m {
            for bx in 0..gw / m {
                for my in 0..m {
                    for mx in 0..m {
                        let (py, px) = ((by * m + my) * p, (bx * m + mx) * p);
                        for c in 0..3 {
                            // A single image is repeated to fill the temporal patch.
                            for _ in 0..t {
                                for y in py..py + p {
                                    for x in px..px + p {
                                        let v = raw[(y * w + x) * 3 + c] as f32;
                                        out.push((v - mean[c]) / std[c]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, [1, gh, gw])
    }

    /// The whole image path: RGB, padding of extreme aspect ratios, resize, normalise, patchify.
    pub fn preprocess(&self, image: &DynamicImage, device: &Device) -> Result<ProcessedImage> {
        let resized = self.resize(&pad_to_aspect(Self::to_rgb(image), MAX_ASPECT_RATIO))?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            resized.dimensions().hash(&mut h);
            resized.as_raw().hash(&mut h);
            h.finish()
        };
        let (values, grid_thw) = self.patchify(&resized);
        let rows = grid_thw.iter().product::<usize>();
        let pixel_values = Tensor::from_vec(
            values,
            (rows, 3 * self.temporal_patch_size * self.patch_size.pow(2)),
            device,
        )?;
        Ok(ProcessedImage {
            pixel_values,
            grid_thw,
            hash,
        })
    }

    /// Merged tokens (LM positions) an image of this grid takes.
    pub fn num_image_tokens(&self, grid_thw: [usize; 3]) -> usize {
        grid_thw.iter().product::<usize>() / self.merge_size.pow(2)
    }
}

pub struct ProcessedImage {
    /// (patches, 3·t·p·p) in f32.
    pub pixel_values: Tensor,
    pub grid_thw: [usize; 3],
    /// Content hash of the resized pixels.
    pub hash: u64,
}

/// M-RoPE positions of a prompt (transformers' `get_rope_index`): text tokens count up on all
/// three axes; a run of image tokens with grid (t, h, w) patches gets (start + t_i, start + row,
/// start + col) over its merged grid, and text after it resumes at start + max(h, w) / merge.
/// Returns the positions and the delta that maps later decode steps (position = index + delta).
pub fn mrope_positions(
    input_ids: &[u32],
    image_token_id: u32,
    grids: &[[usize; 3]],
    merge: usize,
) -> Result<([Vec<i64>; 3], i64)> {
    let mut pos: [Vec<i64>; 3] = Default::default();
    let mut grids = grids.iter();
    let mut current = 0i64;
    let mut i = 0;
    while i < input_ids.len() {
        if input_ids[i] != image_token_id {
            for axis in &mut pos {
                axis.push(current);
            }
            current += 1;
            i += 1;
            continue;
        }
        let &[t, h, w] = grids
            .next()
            .context("more image placeholders in the prompt than images")?;
        let (mh, mw) = (h / merge, w / merge);
        let run = input_ids[i..].iter().take_while(|&&id| id == image_token_id).count();
        if run < t * mh * mw {
            bail!("an image of {t}×{mh}×{mw} merged tokens has only {run} placeholders");
        }
        for ti in 0..t {
            for y in 0..mh {
                for x in 0..mw {
                    pos[0].push(current + ti as i64);
                    pos[1].push(current + y as i64);
                    pos[2].push(current + x as i64);
                }
            }
        }
        i += t * mh * mw;
        current += mh.max(mw) as i64;
    }
    if grids.next().is_some() {
        bail!("more images than image placeholders in the prompt");
    }
    let max = pos.iter().flatten().copied().max().unwrap_or(-1);
    Ok((pos, max + 1 - input_ids.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_python_at_ties() {
        // 70/28 = 2.5 rounds to 2 in Python (f64::round would give 3).
        assert_eq!(smart_resize(70, 2000, 28, 3136, 1003520).unwrap(), (56, 1988));
        // 42/28 = 1.5 → 2; 98/28 = 3.5 → 4.
        assert_eq!(smart_resize(42, 98, 28, 0, 1 << 30).unwrap(), (56, 112));
        assert!(smart_resize(10, 2500, 28, 3136, 1003520).is_err());
    }

    #[test]
    fn finepdfs_bounds_give_an_a4_page_1440_tokens() {
        // An A4 page rendered by the FinePDFs rule is about 896×1268 pixels.
        let cfg = ImageProcessorConfig::default().with_finepdfs_bounds();
        let (h, w) = cfg.target_size(1268, 896).unwrap();
        assert_eq!((h, w), (1260, 896));
        assert_eq!(cfg.num_image_tokens([1, h / 14, w / 14]), 1440);
        // Big pages are capped at 2048 merged tokens.
        let (h, w) = cfg.target_size(4000, 3000).unwrap();
        assert!(h * w / (28 * 28) <= 2048);
    }

    #[test]
    fn pages_beyond_200_to_1_are_padded_not_refused() {
        let strip = RgbImage::from_pixel(6000, 10, image::Rgb([0, 0, 0]));
        let padded = pad_to_aspect(strip, MAX_ASPECT_RATIO);
        assert_eq!(padded.dimensions(), (6000, 30));
        assert_eq!(padded.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(padded.get_pixel(0, 10).0, [0, 0, 0]);
        let cfg = ImageProcessorConfig::default();
        let tall = DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 3000, image::Rgb([9, 9, 9])));
        let out = cfg.preprocess(&tall, &Device::Cpu).unwrap();
        assert!(out.grid_thw[1] > 0 && out.grid_thw[2] > 0);
        // Within the limit nothing changes.
        let ok = RgbImage::new(400, 2);
        assert_eq!(pad_to_aspect(ok.clone(), MAX_ASPECT_RATIO), ok);
    }

    #[test]
    fn preprocessor_config_accepts_both_layouts() {
        let old = ImageProcessorConfig::from_json(r#"{"min_pixels": 100, "max_pixels": 200}"#).unwrap();
        let new = ImageProcessorConfig::from_json(r#"{"size": {"shortest_edge": 100, "longest_edge": 200}}"#).unwrap();
        for c in [old, new] {
            assert_eq!((c.min_pixels(), c.max_pixels()), (100, 200));
        }
        let d = ImageProcessorConfig::default();
        assert_eq!((d.min_pixels(), d.max_pixels()), (3136, 1003520));
    }

    #[test]
    fn rope_positions_resume_after_the_image() {
        // 2 text tokens, an image of 4×6 patches (2×3 merged), 2 text tokens.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3, 4];
        let (pos, delta) = mrope_positions(&ids, 9, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(pos[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(pos[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(delta, 7 - 10);
    }
}
