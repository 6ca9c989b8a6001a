//! pdfium in a child process. The parent sends one JSON request per line on the child's stdin;
//! the child answers one JSON line on stdout, followed for an image by its raw RGB bytes.
//! A request that outlives its time bound gets the child killed; a child that dies (pdfium
//! crashed on a malformed file) is replaced at the next request. Either way the caller gets a
//! typed error naming the file and page, and the next document is unaffected.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use image::RgbImage;
use pdfium_render::prelude::Pdfium;
use serde::{Deserialize, Serialize};

use super::document::{sniff, DocumentInfo, Input, InputKind};
use super::features::PageText;
use super::{library, PdfError, RenderMode};

/// The hidden `ocr` subcommand that runs [`serve`].
pub const WORKER_SUBCOMMAND: &str = "__pdf-worker";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const PIPE_BYTES: libc::c_int = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Is libpdfium there? Asked once before a run, so a missing library stops it up front.
    Check,
    Info {
        path: PathBuf,
        password: Option<String>,
    },
    Text {
        path: PathBuf,
        password: Option<String>,
        page: usize,
    },
    Render {
        path: PathBuf,
        password: Option<String>,
        page: usize,
        mode: RenderMode,
    },
    Anchor {
        path: PathBuf,
        password: Option<String>,
        page: usize,
        max_length: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Ready,
    Info(DocumentInfo),
    Text(PageText),
    Anchor(String),
    /// Followed by width·height·3 bytes of RGB.
    Image {
        width: u32,
        height: u32,
    },
    Error(PdfError),
}

/// The worker's side: answers requests on stdin until it closes.
pub fn serve() -> std::io::Result<()> {
    let pdfium = library::bind();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut open: Option<(PathBuf, Option<String>, Input)> = None;
    // Fault injection for the tests that prove a crash costs only its page, in any host.
    let fault = std::env::var_os("VELLUM_WORKER_ABORT_ON");
    for line in std::io::stdin().lock().lines() {
        let request: Request = match serde_json::from_str(&line?) {
            Ok(r) => r,
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let (path, password) = match &request {
            Request::Check => {
                let reply = match &pdfium {
                    Ok(_) => Reply::Ready,
                    Err(reason) => Reply::Error(PdfError::Library {
                        file: String::new(),
                        reason: reason.clone(),
                    }),
                };
                serde_json::to_writer(&mut out, &reply)?;
                out.write_all(b"\n")?;
                out.flush()?;
                continue;
            }
            Request::Info { path, password }
            | Request::Text { path, password, .. }
            | Request::Render { path, password, .. }
            | Request::Anchor { path, password, .. } => (path.clone(), password.clone()),
        };
        let file = path.display().to_string();
        if fault
            .as_deref()
            .is_some_and(|name| path.file_name().is_some_and(|n| n == name))
        {
            // As pdfium does on some malformed files: the worker dies without a word.
            std::process::abort();
        }
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<(Reply, Vec<u8>), PdfError> {
                let reuse = matches!(&open, Some((p, pw, _)) if *p == path && *pw == password);
                if !reuse {
                    open = None; // close the previous document before opening the next
                    open = Some((
                        path.clone(),
                        password.clone(),
                        open_input(&pdfium, &path, password.as_deref())?,
                    ));
                }
                let input = &open.as_ref().expect("opened above").2;
                Ok(match &request {
                    Request::Check => (Reply::Ready, Vec::new()),
                    Request::Info { .. } => (Reply::Info(input.info()), Vec::new()),
                    Request::Text { page, .. } => (Reply::Text(input.text(&file, *page)?), Vec::new()),
                    Request::Anchor { page, max_length, .. } => {
                        (Reply::Anchor(input.anchor(&file, *page, *max_length)?), Vec::new())
                    }
                    Request::Render { page, mode, .. } => {
                        let img = input.render(&file, *page, *mode)?;
                        (
                            Reply::Image {
                                width: img.width(),
                                height: img.height(),
                            },
                            img.into_raw(),
                        )
                    }
                })
            },
        ))
        .unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            let page = match &request {
                Request::Check | Request::Info { .. } => 1,
                Request::Text { page, .. } | Request::Render { page, .. } | Request::Anchor { page, .. } => *page,
            };
            Err(PdfError::Page {
                file: file.clone(),
                page,
                reason: format!("internal error: {}", reason.unwrap_or_default()),
            })
        });
        let (reply, bytes) = reply.unwrap_or_else(|e| (Reply::Error(e), Vec::new()));
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.write_all(&bytes)?;
        out.flush()?;
    }
    Ok(())
}

fn open_input<'a>(
    pdfium: &'a Result<Pdfium, String>,
    path: &Path,
    password: Option<&str>,
) -> Result<Input<'a>, PdfError> {
    let file = path.display().to_string();
    match (sniff(&file, path)?, pdfium) {
        (InputKind::Pdf, Err(reason)) => Err(PdfError::Library {
            file,
            reason: reason.clone(),
        }),
        (_, Ok(pdfium)) => Input::open(pdfium, path, password),
        (InputKind::Image, Err(_)) => Input::open_image(path),
    }
}

/// Set by [`run_if_worker`]: this executable answers [`WORKER_SUBCOMMAND`] itself.
static HOOKED: AtomicBool = AtomicBool::new(false);

/// Makes the running executable its own pdfium worker: started with [`WORKER_SUBCOMMAND`] it
/// serves requests and exits; otherwise it returns at once and remembers that workers can be
/// this executable re-run. Called first in `main`, before any thread starts (what
/// [`crate::init`] does).
pub fn run_if_worker() {
    if std::env::args_os().nth(1).is_some_and(|a| a == WORKER_SUBCOMMAND) {
        let code = match serve() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pdfium worker: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    HOOKED.store(true, Ordering::Relaxed);
}

/// How to start a worker: an executable that answers [`WORKER_SUBCOMMAND`].
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
}

impl WorkerCommand {
    /// `$VELLUM_WORKER`, else the running executable if it called [`run_if_worker`] (or is the
    /// `ocr` binary), else an `ocr` beside it (or one folder up, where cargo puts test binaries).
    pub fn locate() -> Result<Self, String> {
        if let Some(p) = std::env::var_os("VELLUM_WORKER") {
            return Ok(Self { program: p.into() });
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
        if HOOKED.load(Ordering::Relaxed) || exe.file_stem().is_some_and(|s| s == "ocr") {
            return Ok(Self { program: exe });
        }
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        [dir.join("ocr"), dir.join("../ocr")]
            .into_iter()
            .find(|p| p.is_file())
            .map(|program| Self { program })
            .ok_or_else(|| {
                "no pdfium worker: call vellum::init() first in main (the process then re-runs itself as \
                 the worker), or set VELLUM_WORKER to a program that does"
                    .into()
            })
    }
}

struct Running {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    replies: Receiver<std::io::Result<(Reply, Vec<u8>)>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parent's handle on one worker process (started on first use, replaced after a crash
/// or a timeout).
pub struct Worker {
    command: WorkerCommand,
    timeout: Duration,
    running: Option<Running>,
    restarts: usize,
}

fn read_replies(stdout: impl Read + Send + 'static, tx: mpsc::Sender<std::io::Result<(Reply, Vec<u8>)>>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        let message = match reader.read_line(&mut line) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the worker closed its output",
            )),
            Ok(_) => serde_json::from_str::<Reply>(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                .and_then(|reply| {
                    let mut bytes = Vec::new();
                    if let Reply::Image { width, height } = reply {
                        bytes.resize(width as usize * height as usize * 3, 0);
                        reader.read_exact(&mut bytes)?;
                    }
                    Ok((reply, bytes))
                }),
            Err(e) => Err(e),
        };
        let stop = message.is_err();
        if tx.send(message).is_err() || stop {
            return;
        }
    }
}

/// Spawns, retrying for a moment while the executable is busy (ETXTBSY: it is being written,
/// or another thread's fork briefly holds it open for writing).
fn spawn_retrying(command: &mut Command) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

impl Worker {
    pub fn new(command: WorkerCommand) -> Self {
        Self {
            command,
            timeout: DEFAULT_TIMEOUT,
            running: None,
            restarts: 0,
        }
    }

    /// The time bound for each request (one page's text or rendering, or opening a document).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// How many times a worker was replaced after dying or timing out.
    pub fn restarts(&self) -> usize {
        self.restarts
    }

    fn start(&mut self) -> std::io::Result<&mut Running> {
        if self.running.is_none() {
            let mut child = spawn_retrying(
                Command::new(&self.command.program)
                    .arg(WORKER_SUBCOMMAND)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
            )?;
            let stdin = BufWriter::new(child.stdin.take().expect("piped"));
            let stdout = child.stdout.take().expect("piped");
            // A page is megabytes of RGB: a larger pipe saves dozens of wake-ups per page.
            // SAFETY: fcntl on a pipe descriptor we own; failure only leaves the default size.
            unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&stdout), libc::F_SETPIPE_SZ, PIPE_BYTES) };
            let (tx, replies) = mpsc::channel();
            std::thread::spawn(move || read_replies(stdout, tx));
            self.running = Some(Running { child, stdin, replies });
        }
        Ok(self.running.as_mut().expect("started above"))
    }

    fn request(&mut self, request: &Request, file: &str, page: Option<usize>) -> Result<(Reply, Vec<u8>), PdfError> {
        let timeout = self.timeout;
        let sent = self.start().and_then(|running| {
            serde_json::to_writer(&mut running.stdin, request)?;
            running.stdin.write_all(b"\n")?;
            running.stdin.flush()
        });
        if let Err(e) = sent {
            if self.running.is_none() {
                return Err(PdfError::Library {
                    file: file.into(),
                    reason: format!("cannot start the pdfium worker {}: {e}", self.command.program.display()),
                });
            }
        }
        let running = self.running.as_mut().expect("started above");
        match running.replies.recv_timeout(timeout) {
            Ok(Ok((Reply::Error(e), _))) => Err(e),
            Ok(Ok(reply)) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => {
                self.running = None; // kills the child
                self.restarts += 1;
                Err(PdfError::Timeout {
                    file: file.into(),
                    page,
                    seconds: timeout.as_secs_f64(),
                })
            }
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                let mut running = self.running.take().expect("running");
                let status = running
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                self.restarts += 1;
                Err(PdfError::WorkerDied {
                    file: file.into(),
                    page,
                    reason: status,
                })
            }
        }
    }

    /// Starts the worker and checks that it has libpdfium; the error says what to install.
    pub fn check(&mut self) -> Result<(), String> {
        match self.request(&Request::Check, "", None) {
            Ok((Reply::Ready, _)) => Ok(()),
            Ok((other, _)) => Err(format!("the pdfium worker gave an unexpected reply {other:?}")),
            Err(PdfError::Library { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Page count and metadata.
    pub fn info(&mut self, path: &Path, password: Option<&str>) -> Result<DocumentInfo, PdfError> {
        let request = Request::Info {
            path: path.into(),
            password: password.map(String::from),
        };
        match self.request(&request, &path.display().to_string(), None)? {
            (Reply::Info(info), _) => Ok(info),
            other => Err(unexpected(path, other.0)),
        }
    }

    /// The text layer and routing features of page `page` (1-based).
    pub fn text(&mut self, path: &Path, password: Option<&str>, page: usize) -> Result<PageText, PdfError> {
        let request = Request::Text {
            path: path.into(),
            password: password.map(String::from),
            page,
        };
        match self.request(&request, &path.display().to_string(), Some(page))? {
            (Reply::Text(text), _) => Ok(text),
            other => Err(unexpected(path, other.0)),
        }
    }

    /// olmOCR's anchor text of page `page` (1-based), at most `max_length` characters.
    pub fn anchor(
        &mut self,
        path: &Path,
        password: Option<&str>,
        page: usize,
        max_length: usize,
    ) -> Result<String, PdfError> {
        let request = Request::Anchor {
            path: path.into(),
            password: password.map(String::from),
            page,
            max_length,
        };
        match self.request(&request, &path.display().to_string(), Some(page))? {
            (Reply::Anchor(text), _) => Ok(text),
            other => Err(unexpected(path, other.0)),
        }
    }

    /// Page `page` (1-based) rendered in `mode`.
    pub fn render(
        &mut self,
        path: &Path,
        password: Option<&str>,
        page: usize,
        mode: RenderMode,
    ) -> Result<RgbImage, PdfError> {
        let request = Request::Render {
            path: path.into(),
            password: password.map(String::from),
            page,
            mode,
        };
        match self.request(&request, &path.display().to_string(), Some(page))? {
            (Reply::Image { width, height }, bytes) => {
                Ok(RgbImage::from_raw(width, height, bytes).expect("size checked by the reader"))
            }
            other => Err(unexpected(path, other.0)),
        }
    }
}

fn unexpected(path: &Path, reply: Reply) -> PdfError {
    PdfError::WorkerDied {
        file: path.display().to_string(),
        page: None,
        reason: format!("unexpected reply {reply:?}"),
    }
}
