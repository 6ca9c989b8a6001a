//! Imports go one way: bin → ocr (the facade) / bench → pipeline / train → engine / pdf → models → ops /
//! imaging. A module
//! may name (`crate::x`) only modules of a lower layer, never one of its own layer or above, so
//! the crate has no import cycles between its parts.

use std::collections::BTreeMap;
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

/// The module path of a source file: `src/ops/rotary.rs` is [ops, rotary], `src/models/mod.rs`
/// is [models].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The absolute module paths `line` names (`crate::a::b`, `super::c`), `module` being the
/// file's own module.
fn named_paths(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let starts_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let segments: Vec<&str> = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap()
                .split("::")
                .collect();
            let mut path: Vec<String> = Vec::new();
            let mut k = 0;
            if segments[0] == "crate" {
                k = 1;
            } else {
                path = module.to_vec();
                while k < segments.len() && segments[k] == "super" {
                    path.pop();
                    k += 1;
                }
            }
            for s in &segments[k..] {
                if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
                    break;
                }
                path.push(s.to_string());
            }
            found.push(path);
            i += segments.iter().map(|s| s.len() + 2).sum::<usize>();
        } else {
            i += rest.chars().next().unwrap().len_utf8();
        }
    }
    found
}

/// A folder's parts → the parts each imports, with a line that does.
type Graph = BTreeMap<String, Vec<(String, String)>>;

/// Within each folder module, its parts (files and subfolders) import each other without a
/// cycle. Test modules (after `#[cfg(test)]`) and comments are left out: they may look at
/// siblings freely.
#[test]
fn sibling_modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let is_module = |path: &[String]| {
        let dir = path.iter().fold(src.clone(), |d, p| d.join(p));
        dir.is_dir() || dir.with_extension("rs").is_file()
    };
    // parent module → (child → children it imports, with a line that does)
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") {
            continue;
        }
        // `super` is the parent of this path for a file and a mod.rs alike.
        let module = module_path(rel);
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for mut target in named_paths(line, &module) {
                while !target.is_empty() && !is_module(&target) {
                    target.pop(); // an item, not a module
                }
                let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common >= module.len() || common >= target.len() {
                    continue; // a module naming itself, its parent or its own children
                }
                let edges = graphs
                    .entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default();
                if !edges.iter().any(|(t, _)| *t == target[common]) {
                    edges.push((target[common].clone(), format!("src/{}:{}", rel.display(), n + 1)));
                }
            }
        }
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &graphs {
        // Depth-first search for a back edge; the stack is the cycle.
        fn visit_node<'a>(
            node: &'a str,
            graph: &'a Graph,
            stack: &mut Vec<(&'a str, &'a str)>,
            done: &mut std::collections::HashSet<&'a str>,
            cycles: &mut Vec<String>,
            parent: &str,
        ) {
            if done.contains(node) {
                return;
            }
            for (next, at) in graph.get(node).map(|v| v.as_slice()).unwrap_or(&[]) {
                if let Some(start) = stack.iter().position(|(n, _)| n == next) {
                    let mut cycle: Vec<String> = stack[start..].iter().map(|(n, at)| format!("{n} ({at})")).collect();
                    cycle.push(format!("{node} → {next} ({at})"));
                    cycles.push(format!("in {parent}: {}", cycle.join(" → ")));
                    continue;
                }
                if next == node {
                    continue;
                }
                stack.push((node, at));
                visit_node(next, graph, stack, done, cycles, parent);
                stack.pop();
            }
            done.insert(node);
        }
        let mut done = std::collections::HashSet::new();
        let name = if parent.is_empty() {
            "crate".to_string()
        } else {
            parent.join("::")
        };
        for node in graph.keys() {
            visit_node(node, graph, &mut Vec::new(), &mut done, &mut cycles, &name);
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between sibling modules:\n{}",
        cycles.join("\n")
    );
}
