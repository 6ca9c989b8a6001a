//! The text of one page, printed as the model generates it.
//!
//! ```sh
//! cargo run --release --example stream -- MODEL IMAGE
//! ```

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    vellum::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, image] = args.as_slice() else {
        eprintln!("usage: stream MODEL IMAGE");
        return ExitCode::from(2);
    };
    match stream(model, image) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stream(model: &str, image: &str) -> Result<(), Box<dyn std::error::Error>> {
    let page = vellum::image::open(image).map_err(|e| format!("{image}: {e}"))?;
    let ocr = vellum::Ocr::builder(model).open()?;
    let mut tokens = ocr.stream(&page)?;
    let mut stdout = std::io::stdout();
    for piece in tokens.by_ref() {
        print!("{}", piece?);
        let _ = stdout.flush();
    }
    if let Some(g) = tokens.generation() {
        eprintln!(
            "\n{} prompt tokens, {} generated ({:?})",
            g.prompt_tokens,
            g.tokens.len(),
            g.finish_reason
        );
    }
    Ok(())
}
