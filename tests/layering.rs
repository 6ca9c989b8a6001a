//! Imports go one way: bin → ocr (the facade) / bench → pipeline / train → engine / pdf → models → ops /
//! imaging. A module
//! may name (`crate::x`) only modules of a lower layer, never one of its own layer or above, so
//! the crate has no import cycles between its parts.

use std::path::Path;

/// Layer of each top-level module (src/<name>.rs or src/<name>/).
const LAYERS: &[(&str, u32)] = &[
    ("ops", 0),
    ("imaging", 0),
    ("weights", 0),
    ("device", 0),
    ("hub", 1),
    ("chat_template", 2),
    ("models", 3),
    ("engine", 4),
    ("pdf", 4),
    ("pipeline", 5),
    ("error", 5),
    ("train", 5),
    ("bench", 6),
    ("selftest", 6),
    ("ocr", 6),
];

fn layer(module: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("src/{module} has no layer in tests/layering.rs"))
        .1
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        if top == "bin" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                // Items at the crate root (`crate::init`) are not modules.
                let module = src.join(format!("{name}.rs")).is_file() || src.join(&name).is_dir();
                if name.is_empty() || name == top || !module {
                    continue;
                }
                if layer(&name) >= layer(top) {
                    wrong.push(format!("src/{}:{}: {top} imports {name}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "backward or sideways imports:\n{}", wrong.join("\n"));
}
