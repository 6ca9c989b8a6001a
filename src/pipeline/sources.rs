//! What a run reads: files, folders (searched recursively), glob patterns, and manifests (a
//! `.txt`/`.lst` file of paths, one per line, or a `.jsonl` file of `{"path": ...}` objects;
//! relative paths are relative to the manifest). PDFs and page images (PNG, JPEG, TIFF, WebP).
//!
//! A document's id is deterministic: the path relative to the folder it was found in (prefixed
//! with that folder's name), or the path as given for files, glob matches and manifest entries,
//! written plainly (`./a//b.pdf` is `a/b.pdf`). The same inputs give the same ids in every run
//! and on every rank.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const DOCUMENT_EXTENSIONS: &[&str] = &["pdf", "png", "jpg", "jpeg", "tif", "tiff", "webp"];
const MANIFEST_EXTENSIONS: &[&str] = &["txt", "lst", "jsonl"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub id: String,
    pub path: PathBuf,
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase()
}

/// The path without `.` components and repeated separators, as text.
fn plain(path: &Path) -> String {
    let plain: PathBuf = path.components().filter(|c| *c != Component::CurDir).collect();
    match plain.as_os_str().is_empty() {
        true => ".".to_string(),
        false => plain.to_string_lossy().into_owned(),
    }
}

/// The name a folder's documents are prefixed with (`.` and `..` by the folder's real name).
fn folder_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_os_string())
        .or_else(|| root.canonicalize().ok()?.file_name().map(|n| n.to_os_string()))
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Source>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if DOCUMENT_EXTENSIONS.contains(&extension(&path).as_str()) {
            let rel = plain(path.strip_prefix(root).unwrap_or(&path));
            out.push(Source {
                id: format!("{}/{rel}", folder_name(root)),
                path,
            });
        }
    }
    Ok(())
}

fn manifest(path: &Path, out: &mut Vec<Source>) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading manifest {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = if extension(path) == "jsonl" {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
            v.get("path")
                .or_else(|| v.get("source"))
                .and_then(|p| p.as_str())
                .map(String::from)
                .with_context(|| format!("{}:{}: no \"path\"", path.display(), n + 1))?
        } else {
            line.to_string()
        };
        if entry.contains("://") && !entry.starts_with("file://") {
            bail!(
                "{}:{}: {entry} is a URL; vellum reads local files (download them first)",
                path.display(),
                n + 1
            );
        }
        let entry = entry.trim_start_matches("file://");
        let p = Path::new(entry);
        out.push(Source {
            id: plain(p),
            path: if p.is_absolute() { p.to_path_buf() } else { base.join(p) },
        });
    }
    Ok(())
}

/// Every document the inputs name, sorted by id, each id once.
pub fn collect(inputs: &[String]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            walk(path, path, &mut out)?;
        } else if path.is_file() && MANIFEST_EXTENSIONS.contains(&extension(path).as_str()) {
            manifest(path, &mut out)?;
        } else if path.exists() {
            out.push(Source {
                id: plain(path),
                path: path.to_path_buf(),
            });
        } else if input.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(input)
                .with_context(|| format!("bad pattern {input}"))?
                .filter_map(|p| p.ok())
                .collect();
            matched.sort();
            if matched.is_empty() {
                bail!("{input} matches nothing");
            }
            out.extend(
                matched
                    .into_iter()
                    .filter(|p| p.is_file())
                    .map(|p| Source { id: plain(&p), path: p }),
            );
        } else {
            // A missing file is still a document: it will be reported as failed with its error.
            out.push(Source {
                id: plain(path),
                path: path.to_path_buf(),
            });
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_globs_and_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        for f in ["a.pdf", "sub/b.PNG", "notes.md"] {
            std::fs::write(docs.join(f), b"x").unwrap();
        }
        std::fs::write(tmp.path().join("list.txt"), "docs/a.pdf\n# comment\n\ndocs/sub/b.PNG\n").unwrap();
        std::fs::write(tmp.path().join("list.jsonl"), "{\"path\": \"docs/a.pdf\"}\n").unwrap();
        let got = collect(&[docs.display().to_string()]).unwrap();
        let ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["docs/a.pdf", "docs/sub/b.PNG"]);
        let listed = collect(&[tmp.path().join("list.txt").display().to_string()]).unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["docs/a.pdf", "docs/sub/b.PNG"]
        );
        assert!(listed[0].path.is_file());
        assert_eq!(
            collect(&[tmp.path().join("list.jsonl").display().to_string()])
                .unwrap()
                .len(),
            1
        );
        let pattern = format!("{}/docs/*.pdf", tmp.path().display());
        assert_eq!(collect(&[pattern]).unwrap().len(), 1);
        let dotted = format!("{}/./docs//a.pdf", tmp.path().display());
        let plain_id = format!("{}/docs/a.pdf", tmp.path().display());
        let same = collect(&[dotted, plain_id.clone()]).unwrap();
        assert_eq!(same.len(), 1, "one document however its path is written");
        assert_eq!(same[0].id, plain_id);
        std::fs::write(tmp.path().join("urls.txt"), "https://example.com/a.pdf\n").unwrap();
        assert!(collect(&[tmp.path().join("urls.txt").display().to_string()]).is_err());
    }
}
