//! Bad inputs get correct pages or a typed error naming the file (and page), never a panic or a
//! hang, and one bad file never stops the others. Every bad input is generated here.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vellum::pdf::document::InputKind;
use vellum::pdf::route::{route_document, Router};
use vellum::pdf::stream::{document_stream, StreamItem};
use vellum::pdf::worker::{Worker, WorkerCommand};
use vellum::pdf::{PdfError, RenderMode};

fn ocr() -> PathBuf {
    env!("CARGO_BIN_EXE_ocr").into()
}

fn worker() -> Worker {
    Worker::new(WorkerCommand { program: ocr() })
}

fn edgar() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/edgar.pdf")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A structurally valid PDF whose page tree is empty.
fn zero_page_pdf() -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for obj in [
        "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
        "2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n",
    ] {
        offsets.push(out.len());
        out.extend_from_slice(obj.as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(b"xref\n0 3\n0000000000 65535 f \n");
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(format!("trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes());
    out
}

fn script(dir: &Path, name: &str, body: &str) -> WorkerCommand {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    WorkerCommand { program: path }
}

#[test]
fn broken_files_give_typed_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = worker();
    let mut garbage = b"%PDF-1.7\n".to_vec();
    garbage.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let corrupt = write(tmp.path(), "corrupt.pdf", &garbage);
    let not_pdf = write(
        tmp.path(),
        "renamed.pdf",
        b"<html><body>this is a web page saved as .pdf</body></html>",
    );
    let empty = write(tmp.path(), "empty.pdf", b"");
    let zero = write(tmp.path(), "zero_pages.pdf", &zero_page_pdf());
    let missing = tmp.path().join("missing.pdf");
    type Expectation = fn(&PdfError) -> bool;
    let cases: Vec<(&PathBuf, Expectation)> = vec![
        (&corrupt, |e| matches!(e, PdfError::Corrupt { .. })),
        (&not_pdf, |e| matches!(e, PdfError::UnknownFormat { .. })),
        (
            &empty,
            |e| matches!(e, PdfError::UnknownFormat { reason, .. } if reason.contains("empty")),
        ),
        (&zero, |e| matches!(e, PdfError::NoPages { .. })),
        (&missing, |e| matches!(e, PdfError::Io { .. })),
    ];
    for (path, expected) in cases {
        let err = w.info(path, None).unwrap_err();
        assert!(expected(&err), "{}: {err:?}", path.display());
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(err.file(), path.display().to_string());
    }
    // Pages that do not exist are named too.
    let err = w.render(&edgar(), None, 99, RenderMode::Finepdfs).unwrap_err();
    assert!(
        matches!(err, PdfError::NoSuchPage { page: 99, pages: 1, .. }),
        "{err:?}"
    );
    assert_eq!(w.restarts(), 0, "no input above should have cost a worker");
}

#[test]
fn truncated_pdfs_are_repaired_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(edgar()).unwrap();
    let mut w = worker();
    for fraction in [0.3, 0.6, 0.9, 0.99] {
        let cut = write(
            tmp.path(),
            &format!("cut{fraction}.pdf"),
            &bytes[..(bytes.len() as f64 * fraction) as usize],
        );
        match w.info(&cut, None) {
            Ok(info) => {
                // pdfium rebuilt the cross-reference table: every page it reports must render.
                for page in 1..=info.pages {
                    if let Err(e) = w.render(&cut, None, page, RenderMode::Finepdfs) {
                        assert!(matches!(e, PdfError::Page { .. }), "{e:?}");
                    }
                }
            }
            Err(e) => assert!(
                matches!(e, PdfError::Corrupt { .. } | PdfError::NoPages { .. }),
                "{e:?}"
            ),
        }
    }
}

#[test]
fn encrypted_pdfs_need_the_right_password() {
    let pdf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf/encrypted.pdf");
    let mut w = worker();
    let err = w.info(&pdf, None).unwrap_err();
    assert_eq!(
        err,
        PdfError::Encrypted {
            file: pdf.display().to_string(),
            password_given: false
        }
    );
    assert!(err.to_string().contains("needs a password"));
    let err = w.info(&pdf, Some("wrong")).unwrap_err();
    assert!(matches!(
        err,
        PdfError::Encrypted {
            password_given: true,
            ..
        }
    ));
    let img = w.render(&pdf, Some("secret"), 1, RenderMode::Finepdfs).unwrap();
    assert_eq!(img.dimensions(), (980, 1269));
}

#[test]
fn images_are_one_page_documents_that_need_ocr() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(123, 77, |x, y| image::Rgb([x as u8, y as u8, 200]));
    let mut w = worker();
    for (name, format) in [
        ("p.png", image::ImageFormat::Png),
        ("p.jpg", image::ImageFormat::Jpeg),
        ("p.tiff", image::ImageFormat::Tiff),
        ("p.webp", image::ImageFormat::WebP),
    ] {
        let path = tmp.path().join(name);
        img.save_with_format(&path, format).unwrap();
        let info = w.info(&path, None).unwrap();
        assert_eq!((info.kind, info.pages), (InputKind::Image, 1), "{name}");
        let page = w.render(&path, None, 1, RenderMode::Finepdfs).unwrap();
        assert_eq!(page.dimensions(), (123, 77), "{name}");
        if format != image::ImageFormat::Jpeg {
            assert_eq!(page, img, "{name}: lossless formats come back exactly");
        }
        let route = route_document(&mut w, &Router::Rules, &path, None).unwrap();
        assert!(route.decision.needs_ocr, "{name}");
    }
    // An image with a .pdf name is still an image.
    let disguised = tmp.path().join("scan.pdf");
    img.save_with_format(&disguised, image::ImageFormat::Png).unwrap();
    assert_eq!(w.info(&disguised, None).unwrap().kind, InputKind::Image);
}

#[test]
fn a_stuck_worker_is_killed_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Worker::new(script(tmp.path(), "stuck", "sleep 30"));
    w.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = w.info(&edgar(), None).unwrap_err();
    assert!(matches!(err, PdfError::Timeout { page: None, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(w.restarts(), 1);

    // A real worker, stopped mid-render, comes back for the next page.
    let mut w = worker();
    w.set_timeout(Duration::from_millis(1));
    let err = w.render(&edgar(), None, 1, RenderMode::Dpi { dpi: 600.0 }).unwrap_err();
    assert!(matches!(err, PdfError::Timeout { page: Some(1), .. }), "{err:?}");
    assert!(err.to_string().contains("page 1"));
    w.set_timeout(Duration::from_secs(60));
    assert_eq!(w.render(&edgar(), None, 1, RenderMode::Finepdfs).unwrap().width(), 980);
    assert_eq!(w.restarts(), 1);
}

#[test]
fn a_crashing_worker_costs_only_its_page() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Worker::new(script(tmp.path(), "crash", "kill -SEGV $$"));
    let err = w.render(&edgar(), None, 2, RenderMode::Finepdfs).unwrap_err();
    match &err {
        PdfError::WorkerDied {
            page: Some(2), reason, ..
        } => assert!(reason.contains("SIGSEGV") || reason.contains("11"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("edgar.pdf page 2"), "{err}");
    // The next request starts a new worker (which dies again, and says so).
    assert!(matches!(w.info(&edgar(), None), Err(PdfError::WorkerDied { .. })));
    assert_eq!(w.restarts(), 2);
}

#[test]
fn a_missing_pdfium_says_how_to_install_it_and_images_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let ocr = ocr();
    let command = script(
        tmp.path(),
        "no-pdfium",
        &format!(
            "PDFIUM_LIB_PATH=/nonexistent/libpdfium.so VELLUM_HOME=/nonexistent exec {} \"$@\"",
            ocr.display()
        ),
    );
    let mut w = Worker::new(command);
    let err = w.info(&edgar(), None).unwrap_err();
    assert!(
        matches!(err, PdfError::Library { .. }) && err.to_string().contains("scripts/install-pdfium"),
        "{err}"
    );
    let png = tmp.path().join("page.png");
    image::RgbImage::new(40, 30).save(&png).unwrap();
    assert_eq!(w.info(&png, None).unwrap().pages, 1);
}

#[test]
fn a_mixed_batch_streams_every_good_page_and_names_every_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let form = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/form_on_later_pages.pdf");
    let corrupt = write(tmp.path(), "corrupt.pdf", b"%PDF-1.4\n\x00\x01garbage");
    let png = tmp.path().join("scan.png");
    image::RgbImage::new(50, 60).save(&png).unwrap();
    let encrypted = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf/encrypted.pdf");
    let files = vec![edgar(), corrupt.clone(), form.clone(), encrypted.clone(), png.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let stream = document_stream(worker(), files, None, RenderMode::Finepdfs, 2, |_| true, stop);
    // Nobody consumes yet: rendering stops once the channel holds `bound` items.
    std::thread::sleep(Duration::from_millis(1500));
    let ahead = stream.rendered.load(Ordering::SeqCst);
    assert!(ahead <= 3, "rendered {ahead} pages ahead with a bound of 2");
    let mut pages = Vec::new();
    let mut failed = Vec::new();
    for item in stream.items.iter() {
        match item {
            StreamItem::Page { doc, page, image, .. } => {
                image.unwrap();
                pages.push((doc, page));
            }
            StreamItem::Document {
                doc,
                result: Err(error),
            } => failed.push((doc, error)),
            StreamItem::Document {
                result: Ok((route, texts)),
                ..
            } => assert_eq!(texts.len(), route.info.pages),
        }
    }
    let worker = stream.thread.join().unwrap();
    assert_eq!(worker.restarts(), 0);
    let expected: Vec<(usize, usize)> = std::iter::once((0, 1))
        .chain((1..=10).map(|p| (2, p)))
        .chain(std::iter::once((4, 1)))
        .collect();
    assert_eq!(pages, expected);
    assert_eq!(failed.len(), 2);
    assert!(matches!(&failed[0], (1, PdfError::Corrupt { file, .. }) if *file == corrupt.display().to_string()));
    assert!(matches!(&failed[1], (3, PdfError::Encrypted { .. })));
}

#[test]
fn a_page_selection_reads_and_renders_only_those_pages() {
    let form = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/form_on_later_pages.pdf");
    let stop = Arc::new(AtomicBool::new(false));
    let selection = "9-,2".parse().unwrap();
    let stream = document_stream(
        worker(),
        vec![form],
        Some(selection),
        RenderMode::Finepdfs,
        2,
        |_| true,
        stop,
    );
    let mut rendered = Vec::new();
    for item in stream.items.iter() {
        match item {
            StreamItem::Document { result, .. } => {
                let (_, texts) = result.unwrap();
                assert_eq!(texts.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [2, 9, 10]);
            }
            StreamItem::Page { index, page, .. } => rendered.push((index, page)),
        }
    }
    assert_eq!(rendered, [(0, 2), (1, 9), (2, 10)]);
}
