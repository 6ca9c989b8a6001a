//! Minimal PDF writer for generated test corpora: born-digital text pages (Helvetica) and
//! image-only pages (an uncompressed RGB image drawn over the whole page).

use vellum::pdf::write::{assemble, stream};

/// One Letter page of text lines (letters, digits and spaces only).
pub fn text_pdf(lines: &[String]) -> Vec<u8> {
    let mut content = String::from("BT /F1 11 Tf 72 720 Td 14 TL\n");
    for line in lines {
        content.push_str(&format!("({line}) Tj T*\n"));
    }
    content.push_str("ET");
    assemble(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        stream("", content.as_bytes()),
    ])
}

/// One page of `width` × `height` points covered by an RGB image (a scan without text).
pub fn image_pdf(image: &image::RgbImage, width: u32, height: u32) -> Vec<u8> {
    let content = format!("q {width} 0 0 {height} 0 0 cm /Im1 Do Q");
    assemble(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] /Resources << /XObject << /Im1 4 0 R >> >> /Contents 5 0 R >>")
            .into_bytes(),
        stream(
            &format!("/Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceRGB /BitsPerComponent 8", image.width(), image.height()),
            image.as_raw(),
        ),
        stream("", content.as_bytes()),
    ])
}
