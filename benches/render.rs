//! Page rendering throughput, one thread, FinePDFs mode (a text page, 980×1269 out): load and
//! render with pdfium called in-process, against the same through the isolating worker process,
//! measured in the same run; the ratio is what crash and timeout isolation costs per page.
//! Needs libpdfium (scripts/install-pdfium) and the `ocr` binary (cargo build --release --bin ocr).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vellum::pdf::render::render_page;
use vellum::pdf::worker::{Worker, WorkerCommand};
use vellum::pdf::RenderMode;

fn bench(c: &mut Criterion) {
    let pdf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/edgar.pdf");
    let pdfium = vellum::pdf::library::bind().expect("libpdfium (run scripts/install-pdfium)");
    let doc = pdfium.load_pdf_from_file(&pdf, None).unwrap();
    let mut group = c.benchmark_group("render_finepdfs_page");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    // Each page is loaded (its content parsed) and rendered once, as a pipeline does.
    group.bench_function("in_process", |b| {
        b.iter(|| render_page(doc.pages().get(0).unwrap(), RenderMode::Finepdfs).unwrap())
    });
    let ocr = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/ocr");
    let mut worker = Worker::new(WorkerCommand { program: ocr });
    group.bench_function("worker_process", |b| {
        b.iter(|| worker.render(&pdf, None, 1, RenderMode::Finepdfs).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
