//! Finding and binding libpdfium at run time: `$PDFIUM_LIB_PATH` (the library or its folder),
//! then where `scripts/install-pdfium` puts it (`${VELLUM_HOME:-~/.cache/vellum}/pdfium`), then
//! the system library path.

use std::path::PathBuf;

use pdfium_render::prelude::{Pdfium, PdfiumError, PdfiumInternalError};

const INSTALL_HINT: &str = "install it with scripts/install-pdfium (it takes libpdfium.so from the PyPI wheel \
     pypdfium2; only PyPI is needed), or set PDFIUM_LIB_PATH to a libpdfium.so";

/// Where `scripts/install-pdfium` installs the library.
pub fn installed_path() -> Option<PathBuf> {
    let home = std::env::var_os("VELLUM_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vellum")))?;
    Some(home.join("pdfium").join(Pdfium::pdfium_platform_library_name()))
}

/// The candidate library paths, in the order they are tried.
pub fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("PDFIUM_LIB_PATH").map(PathBuf::from) {
        paths.push(if p.is_dir() {
            p.join(Pdfium::pdfium_platform_library_name())
        } else {
            p
        });
    }
    paths.extend(installed_path());
    paths
}

/// A pdfium error in words (its Debug-derived Display shows enum variants).
pub fn describe(e: &PdfiumError) -> String {
    match e {
        PdfiumError::LoadLibraryError(e) => match std::error::Error::source(e) {
            Some(source) => source.to_string(),
            None => e.to_string(),
        },
        PdfiumError::PdfiumLibraryInternalError(internal) => match internal {
            PdfiumInternalError::FileError => "pdfium could not read the file".into(),
            PdfiumInternalError::FormatError => "not a valid PDF (pdfium could not parse it)".into(),
            PdfiumInternalError::PasswordError => "wrong or missing password".into(),
            PdfiumInternalError::SecurityError => "the PDF's security handler is not supported".into(),
            PdfiumInternalError::PageError => "pdfium could not load the page".into(),
            PdfiumInternalError::Unknown => "pdfium failed without saying why".into(),
        },
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Binds pdfium, or says where it looked and how to install it. pdfium-render binds once per
/// process; a later call reuses those bindings.
pub fn bind() -> Result<Pdfium, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        if !path.is_file() {
            tried.push(format!("{} (absent)", path.display()));
            continue;
        }
        match Pdfium::bind_to_library(&path) {
            Ok(bindings) => return Ok(Pdfium::new(bindings)),
            // `default` hands out a handle on the bindings already made.
            Err(PdfiumError::PdfiumLibraryBindingsAlreadyInitialized) => return Ok(Pdfium::default()),
            Err(e) => tried.push(format!("{} ({})", path.display(), describe(&e))),
        }
    }
    match Pdfium::bind_to_system_library() {
        Ok(bindings) => Ok(Pdfium::new(bindings)),
        Err(PdfiumError::PdfiumLibraryBindingsAlreadyInitialized) => Ok(Pdfium::default()),
        Err(e) => {
            tried.push(format!("the system library path ({})", describe(&e)));
            Err(format!(
                "libpdfium was not found: tried {}; {INSTALL_HINT}",
                tried.join(", ")
            ))
        }
    }
}
