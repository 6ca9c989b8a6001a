//! Opening an input inside a worker: a PDF through pdfium, or a page image (PNG, JPEG, TIFF,
//! WebP) as a one-page document. Load failures become typed [`PdfError`]s.

use std::io::Read;
use std::path::Path;

use image::{ImageFormat, RgbImage};
use pdfium_render::prelude::*;
use serde::{Deserialize, Serialize};

use super::features::{page_text, PageFeatures, PageText};
use super::render::render_page;
use super::{PdfError, RenderMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Pdf,
    Image,
}

/// What routing and the pipeline need to know about a document before its pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub kind: InputKind,
    pub pages: usize,
    pub producer: Option<String>,
    pub creator: Option<String>,
}

pub enum Input<'a> {
    Pdf(PdfDocument<'a>),
    Image(RgbImage),
}

/// PDF, a supported image format, or neither, from the first bytes of the file.
pub fn sniff(file: &str, path: &Path) -> Result<InputKind, PdfError> {
    let mut head = Vec::with_capacity(1024);
    std::fs::File::open(path)
        .and_then(|f| f.take(1024).read_to_end(&mut head))
        .map_err(|e| PdfError::Io {
            file: file.into(),
            reason: e.to_string(),
        })?;
    // pdfium, like most readers, accepts junk before the header within the first 1 KiB.
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Ok(InputKind::Pdf);
    }
    match image::guess_format(&head) {
        Ok(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff | ImageFormat::WebP) => Ok(InputKind::Image),
        Ok(other) => Err(PdfError::UnknownFormat {
            file: file.into(),
            reason: format!("{other:?} images are not supported"),
        }),
        Err(_) if head.is_empty() => Err(PdfError::UnknownFormat {
            file: file.into(),
            reason: "the file is empty".into(),
        }),
        Err(_) => Err(PdfError::UnknownFormat {
            file: file.into(),
            reason: "no PDF header and no known image signature".into(),
        }),
    }
}

fn load_error(file: &str, password: Option<&str>, e: PdfiumError) -> PdfError {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => PdfError::Encrypted {
            file: file.into(),
            password_given: password.is_some(),
        },
        other => PdfError::Corrupt {
            file: file.into(),
            reason: super::library::describe(&other),
        },
    }
}

impl<'a> Input<'a> {
    pub fn open(pdfium: &'a Pdfium, path: &Path, password: Option<&str>) -> Result<Self, PdfError> {
        let file = path.display().to_string();
        match sniff(&file, path)? {
            InputKind::Pdf => {
                let doc = pdfium
                    .load_pdf_from_file(path, password)
                    .map_err(|e| load_error(&file, password, e))?;
                if doc.pages().is_empty() {
                    return Err(PdfError::NoPages { file });
                }
                Ok(Input::Pdf(doc))
            }
            InputKind::Image => Self::open_image(path),
        }
    }

    /// An image file as a one-page document (no pdfium needed).
    pub fn open_image(path: &Path) -> Result<Self, PdfError> {
        let file = path.display().to_string();
        // By content, not by extension: a scan saved as "x.pdf" is still a PNG.
        let image = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| PdfError::Io {
                file: file.clone(),
                reason: e.to_string(),
            })?
            .decode()
            .map_err(|e| PdfError::Corrupt {
                file,
                reason: e.to_string(),
            })?;
        Ok(Input::Image(image.to_rgb8()))
    }

    pub fn info(&self) -> DocumentInfo {
        match self {
            Input::Pdf(doc) => {
                let tag = |t| {
                    doc.metadata()
                        .get(t)
                        .map(|v| v.value().to_string())
                        .filter(|v| !v.is_empty())
                };
                DocumentInfo {
                    kind: InputKind::Pdf,
                    pages: doc.pages().len() as usize,
                    producer: tag(PdfDocumentMetadataTagType::Producer),
                    creator: tag(PdfDocumentMetadataTagType::Creator),
                }
            }
            Input::Image(_) => DocumentInfo {
                kind: InputKind::Image,
                pages: 1,
                producer: None,
                creator: None,
            },
        }
    }

    fn page(&self, file: &str, page: usize) -> Result<PdfPage<'_>, PdfError> {
        let Input::Pdf(doc) = self else {
            unreachable!("only PDFs have pdfium pages")
        };
        let pages = doc.pages().len() as usize;
        if page == 0 || page > pages {
            return Err(PdfError::NoSuchPage {
                file: file.into(),
                page,
                pages,
            });
        }
        doc.pages().get((page - 1) as PdfPageIndex).map_err(|e| PdfError::Page {
            file: file.into(),
            page,
            reason: format!("pdfium could not load the page: {}", super::library::describe(&e)),
        })
    }

    /// The text layer and routing features of page `page` (1-based).
    pub fn text(&self, file: &str, page: usize) -> Result<PageText, PdfError> {
        match self {
            Input::Pdf(_) => page_text(&self.page(file, page)?).map_err(|reason| PdfError::Page {
                file: file.into(),
                page,
                reason,
            }),
            Input::Image(img) => {
                if page != 1 {
                    return Err(PdfError::NoSuchPage {
                        file: file.into(),
                        page,
                        pages: 1,
                    });
                }
                Ok(PageText {
                    text: String::new(),
                    features: PageFeatures {
                        width_pt: img.width() as f32,
                        height_pt: img.height() as f32,
                        image_objects: 1,
                        image_area_ratio: 1.0,
                        max_image_area_ratio: 1.0,
                        ..Default::default()
                    },
                })
            }
        }
    }

    /// Page `page` (1-based) as pixels; an image input is returned as it is.
    pub fn render(&self, file: &str, page: usize, mode: RenderMode) -> Result<RgbImage, PdfError> {
        match self {
            Input::Pdf(_) => render_page(self.page(file, page)?, mode).map_err(|reason| PdfError::Page {
                file: file.into(),
                page,
                reason,
            }),
            Input::Image(img) if page == 1 => Ok(img.clone()),
            Input::Image(_) => Err(PdfError::NoSuchPage {
                file: file.into(),
                page,
                pages: 1,
            }),
        }
    }
}
