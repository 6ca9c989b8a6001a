//! Page preprocessing: vellum's torchvision-exact resize (what the Qwen2-VL processor needs)
//! against the `image` crate's Catmull-Rom resize of the same page, measured in the same run.
//! A Letter page at 150 DPI (1275×1650) goes to the FinePDFs-sized grid (980×1260).

use criterion::{criterion_group, criterion_main, Criterion};
use image::{imageops, RgbImage};
use vellum::imaging::resize_bicubic;
use vellum::models::qwen2_5_vl::processor::ImageProcessorConfig;

fn page() -> RgbImage {
    RgbImage::from_fn(1275, 1650, |x, y| {
        let ink = (x / 7 + y / 13) % 5 == 0 && (y / 20) % 3 != 0;
        let v = if ink { 30 } else { 240 - ((x + y) % 16) as u8 };
        image::Rgb([v, v, v.saturating_add(5)])
    })
}

fn bench(c: &mut Criterion) {
    let img = page();
    let cfg = ImageProcessorConfig::default().with_finepdfs_bounds();
    let (h, w) = cfg.target_size(img.height() as usize, img.width() as usize).unwrap();
    let mut group = c.benchmark_group("resize_1275x1650_to_grid");
    group.sample_size(10);
    group.bench_function("vellum_torchvision_exact", |b| {
        b.iter(|| resize_bicubic(&img, w as u32, h as u32))
    });
    group.bench_function("image_crate_catmull_rom", |b| {
        b.iter(|| imageops::resize(&img, w as u32, h as u32, imageops::FilterType::CatmullRom))
    });
    group.finish();
    c.bench_function("patchify_980x1260", |b| {
        let resized = resize_bicubic(&img, w as u32, h as u32);
        b.iter(|| cfg.patchify(&resized))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
