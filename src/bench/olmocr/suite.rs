//! An olmOCR-Bench folder: the tests of every `*.jsonl` in it, the PDFs under `pdfs/`, and the
//! baseline test olmocr's `benchmark.py` adds for each PDF that has none.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checks::{Baseline, Check, Test};

pub struct Suite {
    pub dir: PathBuf,
    pub tests: Vec<Test>,
    /// Per test, the JSONL file it came from ("baseline" for the added baseline tests): the
    /// groups `benchmark.py` averages the overall score over.
    pub groups: Vec<String>,
    /// PDF paths relative to `pdfs/`, `/`-separated.
    pub pdfs: Vec<String>,
    /// No `pdfs/` folder: the PDFs are those the tests name (the scorer needs only their names).
    pub pdfs_from_tests: bool,
}

/// Files under `dir` (recursively, hidden ones skipped as Python's glob does) whose name ends
/// with `extension`, as sorted `/`-separated paths relative to `dir`.
pub fn files_with_extension(dir: &Path, extension: &str) -> Result<Vec<String>> {
    fn visit(root: &Path, dir: &Path, extension: &str, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                visit(root, &path, extension, out)?;
            } else if name.ends_with(extension) {
                let rel = path.strip_prefix(root)?;
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(dir, dir, extension, &mut out)?;
    out.sort();
    Ok(out)
}

impl Suite {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("benchmark folder {} does not exist", dir.display());
        }
        let mut jsonl: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        jsonl.sort();
        if jsonl.is_empty() {
            bail!("no .jsonl test files in {}", dir.display());
        }
        let mut tests = Vec::new();
        let mut groups = Vec::new();
        let mut ids = HashSet::new();
        for path in &jsonl {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let group = path.file_name().unwrap().to_string_lossy().into_owned();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let test = Test::parse(line).with_context(|| format!("{}:{}: invalid test", path.display(), n + 1))?;
                // benchmark.py keys its results by id, so a repeated id would merge two tests.
                if !ids.insert(test.id.clone()) {
                    bail!("{}:{}: test id {} already used", path.display(), n + 1, test.id);
                }
                tests.push(test);
                groups.push(group.clone());
            }
        }
        let pdf_dir = dir.join("pdfs");
        let pdfs_from_tests = !pdf_dir.is_dir();
        let pdfs = if pdfs_from_tests {
            let mut named: Vec<String> = tests.iter().map(|t| t.pdf.clone()).collect();
            named.sort();
            named.dedup();
            named
        } else {
            files_with_extension(&pdf_dir, ".pdf")?
        };
        for pdf in &pdfs {
            if !tests.iter().any(|t| t.pdf == *pdf && t.kind == "baseline") {
                tests.push(Test {
                    pdf: pdf.clone(),
                    page: 1,
                    id: format!("{pdf}_baseline"),
                    kind: "baseline".into(),
                    max_diffs: 0,
                    check: Check::Baseline(Baseline::default()),
                });
                groups.push("baseline".into());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tests,
            groups,
            pdfs,
            pdfs_from_tests,
        })
    }

    /// Keeps the tests `keep` accepts (e.g. leaves a type out), as benchmark.py scores whatever
    /// subset of tests it is given.
    pub fn retain(&mut self, keep: impl Fn(&Test) -> bool) {
        let (tests, groups) = std::mem::take(&mut self.tests)
            .into_iter()
            .zip(std::mem::take(&mut self.groups))
            .filter(|(t, _)| keep(t))
            .unzip();
        self.tests = tests;
        self.groups = groups;
    }
}
