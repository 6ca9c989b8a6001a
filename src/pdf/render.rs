//! Page sizes for each render mode, and rendering a pdfium page to RGB.
//!
//! Sizes are computed from the page as displayed (its /Rotate applied), in points, the way
//! PyMuPDF sizes a pixmap: the page rectangle times the zoom, rounded outward with MuPDF's
//! 0.001 tolerance.
//!
//! Which box is drawn follows the tool each mode reproduces. FinePDFs (PyMuPDF) draws the
//! CropBox, except on a rotated page: datatrove calls `page.remove_rotation()`, which rebuilds
//! such a page on its MediaBox. olmOCR and 150-DPI dataset preparation render with pdftoppm,
//! which draws the MediaBox unless given `-cropbox`. A page whose boxes agree is unaffected.

use image::RgbImage;
use pdfium_render::prelude::{PdfPage, PdfPageRenderRotation, PdfRenderConfig};

use super::RenderMode;
use crate::imaging::round_half_even;

/// Largest image vellum renders (pixels): a page that would exceed it is refused with an error
/// instead of allocating gigabytes (a 200×200-inch page at 150 DPI is 900 Mpx).
pub const MAX_RENDER_PIXELS: u64 = 64_000_000;

/// FinePDFs' page box (datatrove's `render_page_to_base64png_pymupdf` with
/// resize_longest_side_pixels = 1280, max_visual_tokens = 2048) for a page of `width` × `height`
/// points: scale up (never down) so the longest side reaches 1280, round each side to the
/// 28-grid, and shrink to at most 2048 merged tokens. The page is then rendered at
/// zoom = min(box_w / width, box_h / height), so only one side lands on the box.
pub fn finepdfs_box(width: f64, height: f64) -> (usize, usize) {
    const LONGEST: f64 = 1280.0;
    const MAX_PIXELS: f64 = 2048.0 * 28.0 * 28.0;
    let scale = LONGEST / width.max(height);
    let (w, h) = if scale > 1.0 {
        (width * scale, height * scale)
    } else {
        (width, height)
    };
    let grid = |x: f64| (round_half_even(x / 28.0) * 28.0).max(28.0);
    let (mut bw, mut bh) = (grid(w), grid(h));
    if bw * bh > MAX_PIXELS {
        let s = (MAX_PIXELS / (bw * bh)).sqrt();
        bw = ((bw * s / 28.0).floor() * 28.0).max(28.0);
        bh = ((bh * s / 28.0).floor() * 28.0).max(28.0);
    }
    (bw as usize, bh as usize)
}

/// The zoom (pixels per point) for a page of `width` × `height` points.
pub fn zoom(width: f64, height: f64, mode: RenderMode) -> f64 {
    match mode {
        RenderMode::Finepdfs => {
            let (bw, bh) = finepdfs_box(width, height);
            (bw as f64 / width).min(bh as f64 / height)
        }
        RenderMode::Olmocr { longest } => longest as f64 / width.max(height),
        RenderMode::Dpi { dpi } => dpi as f64 / 72.0,
    }
}

/// MuPDF's `fz_round_rect` for a rectangle from 0 to `x`: ceil with a 0.001 tolerance, in f32.
fn round_outward(x: f64) -> u32 {
    ((x as f32 - 0.001).ceil()).max(1.0) as u32
}

/// Pixel size of a page of `width` × `height` points rendered in `mode`.
pub fn pixel_size(width: f64, height: f64, mode: RenderMode) -> (u32, u32) {
    let z = zoom(width, height, mode);
    (round_outward(width * z), round_outward(height * z))
}

/// Renders `page` (form fields and annotations included) at the size `mode` gives it.
pub fn render_page(mut page: PdfPage, mode: RenderMode) -> Result<RgbImage, String> {
    let rotated = !matches!(page.rotation(), Ok(PdfPageRenderRotation::None));
    let media_box = match mode {
        RenderMode::Finepdfs => rotated,
        RenderMode::Olmocr { .. } | RenderMode::Dpi { .. } => true,
    };
    let mut crop_to_restore = None;
    if media_box {
        let boxes = page.boundaries();
        if let (Ok(media), Ok(crop)) = (boxes.media(), boxes.crop()) {
            if media.bounds != crop.bounds {
                page.boundaries_mut()
                    .set_crop(media.bounds)
                    .map_err(|e| format!("pdfium could not reset the CropBox: {}", super::library::describe(&e)))?;
                crop_to_restore = Some(crop.bounds);
            }
        }
    }
    let image = render_box(&page, mode);
    // The open document is reused for the page's later requests: leave it as it was.
    if let Some(crop) = crop_to_restore {
        let _ = page.boundaries_mut().set_crop(crop);
    }
    image
}

fn render_box(page: &PdfPage, mode: RenderMode) -> Result<RgbImage, String> {
    let (pw, ph) = (page.width().value as f64, page.height().value as f64);
    if !(pw > 0.0 && ph > 0.0 && pw.is_finite() && ph.is_finite()) {
        return Err(format!("the page has no area ({pw}×{ph} pt)"));
    }
    let (w, h) = pixel_size(pw, ph, mode);
    if w as u64 * h as u64 > MAX_RENDER_PIXELS {
        return Err(format!(
            "a {pw:.0}×{ph:.0} pt page would render to {w}×{h} pixels in {mode}, more than the {MAX_RENDER_PIXELS}-pixel limit"
        ));
    }
    let config = PdfRenderConfig::new()
        .set_fixed_size(w as i32, h as i32)
        .render_form_data(true)
        .render_annotations(true);
    let bitmap = page
        .render_with_config(&config)
        .map_err(|e| format!("pdfium could not render the page: {}", super::library::describe(&e)))?;
    let image = bitmap
        .as_image()
        .map_err(|e| format!("pdfium returned an unusable bitmap: {}", super::library::describe(&e)))?;
    Ok(image.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finepdfs_box_for_a4_and_letter() {
        assert_eq!(finepdfs_box(595.0, 842.0), (896, 1288));
        assert_eq!(finepdfs_box(612.0, 792.0), (980, 1288));
    }

    #[test]
    fn finepdfs_a4_lands_one_side_on_the_box() {
        assert_eq!(pixel_size(595.0, 842.0, RenderMode::Finepdfs), (896, 1268));
        // PyMuPDF: Letter → 980×1269 (792 pt × 1.6013 = 1268.2, rounded outward).
        assert_eq!(pixel_size(612.0, 792.0, RenderMode::Finepdfs), (980, 1269));
    }

    #[test]
    fn olmocr_and_dpi_modes() {
        assert_eq!(pixel_size(612.0, 792.0, RenderMode::Olmocr { longest: 1288 }).1, 1288);
        assert_eq!(pixel_size(612.0, 792.0, RenderMode::Dpi { dpi: 150.0 }), (1275, 1650));
        assert_eq!("dpi=150".parse::<RenderMode>().unwrap(), RenderMode::Dpi { dpi: 150.0 });
        assert!("dpi=-1".parse::<RenderMode>().is_err());
    }
}
