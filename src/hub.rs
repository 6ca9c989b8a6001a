//! Finding a model's files: a local directory, a snapshot in the local Hugging Face cache, or a
//! download with hf-hub (skipped when `HF_HUB_OFFLINE` is set).
//!
//! A model is a directory in the HF layout: config.json, model.safetensors or sharded
//! `*.safetensors` with `model.safetensors.index.json`, tokenizer.json, and optionally
//! tokenizer_config.json, preprocessor_config.json, generation_config.json, chat_template.json.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::weights::MmapWeights;

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";
#[cfg(feature = "download")]
const OPTIONAL_FILES: &[&str] = &[
    "tokenizer_config.json",
    "preprocessor_config.json",
    "generation_config.json",
    "chat_template.json",
];

/// The files of one model, all inside `dir`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// Checks that `dir` holds a complete model and lists its weight files.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let missing = missing_files(dir);
        if !missing.is_empty() {
            bail!(
                "{} is not a complete model directory: missing {}",
                dir.display(),
                missing.join(", ")
            );
        }
        let weights = weight_files(dir)?.into_iter().map(|name| dir.join(name)).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            weights,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The path of an optional file, if the model has it.
    pub fn optional(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        path.is_file().then_some(path)
    }

    pub fn read_json(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let Some(path) = self.optional(name) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(value))
    }

    /// The checkpoint's tensors, memory-mapped (float8 ones dequantized as they are read).
    pub fn weights(&self) -> Result<MmapWeights> {
        if let Some(config) = self.read_json("config.json")? {
            crate::weights::check_quantization(&config).with_context(|| format!("loading {}", self.dir.display()))?;
        }
        MmapWeights::open(&self.weights)
    }
}

/// Files a model directory cannot do without (the weights are checked by [`weight_files`]).
fn missing_files(dir: &Path) -> Vec<String> {
    let mut missing: Vec<String> = ["config.json", "tokenizer.json"]
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if !dir.join(SINGLE_FILE).is_file() && !dir.join(INDEX_FILE).is_file() {
        missing.push(format!("{SINGLE_FILE} (or {INDEX_FILE})"));
    }
    missing
}

/// The weight files of a directory: the single file, or every shard the index names.
fn weight_files(dir: &Path) -> Result<Vec<String>> {
    let index = dir.join(INDEX_FILE);
    if !index.is_file() {
        return Ok(vec![SINGLE_FILE.to_string()]);
    }
    let shards = index_shards(&index)?;
    if let Some(shard) = shards.iter().find(|s| !dir.join(s).is_file()) {
        bail!(
            "{} names shard {shard}, which is missing from {}",
            index.display(),
            dir.display()
        );
    }
    Ok(shards)
}

/// The distinct shard files a `model.safetensors.index.json` names, sorted.
fn index_shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let shards: BTreeSet<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    Ok(shards.into_iter().collect())
}

/// Where the local HF cache may be, in the order huggingface_hub looks.
pub fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        dirs.push(PathBuf::from(home).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    dirs
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no" | "off"
            )
        })
        .unwrap_or(false)
}

/// `org/name` or `org/name@revision`.
fn split_revision(spec: &str) -> (&str, &str) {
    spec.split_once('@').unwrap_or((spec, "main"))
}

/// Hub ids are exactly `org/name`: anything else is a path.
fn is_repo_id(id: &str) -> bool {
    id.matches('/').count() == 1 && !id.starts_with(['/', '.', '~'])
}

/// The hub repository a model spec names: its `org/name[@revision]`, or the repository of the
/// HF-cache folder a path lies in (`…/models--org--name/snapshots/<rev>`); None for other paths.
pub fn repo_id(spec: &str) -> Option<String> {
    let (id, _) = split_revision(spec);
    let cached = Path::new(id)
        .ancestors()
        .find_map(|a| a.file_name()?.to_str()?.strip_prefix("models--"));
    match cached {
        Some(repo) => Some(repo.replacen("--", "/", 1)),
        None => is_repo_id(id).then(|| id.to_string()),
    }
}

/// The snapshot directory of `repo_id` at `revision` in one cache, if present.
fn cached_snapshot(cache: &Path, repo_id: &str, revision: &str) -> Option<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo_dir.join("snapshots");
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let dir = snapshots.join(commit);
    dir.is_dir().then_some(dir)
}

/// The root cause alone: the HTTP client's errors repeat their sources in their own text.
#[cfg(feature = "download")]
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// Resolves `--model`: a local directory; else a hub id in the local HF cache; else a download.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let local = Path::new(spec);
    if local.is_dir() {
        return ModelFiles::from_dir(local);
    }
    let (repo_id, revision) = split_revision(spec);
    // Anything but org/name that names no directory is a path gone wrong.
    if !is_repo_id(repo_id) || local.exists() {
        bail!("model {spec:?}: no such model directory (and not a hub id of the form org/name[@revision])");
    }
    let caches = cache_dirs();
    let mut incomplete = Vec::new();
    for cache in &caches {
        if let Some(dir) = cached_snapshot(cache, repo_id, revision) {
            let missing = missing_files(&dir);
            if missing.is_empty() {
                return ModelFiles::from_dir(&dir);
            }
            incomplete.push(format!("{} (missing {})", dir.display(), missing.join(", ")));
        }
    }
    if offline() {
        let looked: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
        let mut msg = format!(
            "model {spec:?} is not available offline (HF_HUB_OFFLINE is set): it is not a local \
             directory, and no complete snapshot of {repo_id}@{revision} is in the HF cache. Looked in: {}.",
            looked.join(", ")
        );
        if !incomplete.is_empty() {
            msg.push_str(&format!(" Incomplete snapshots: {}.", incomplete.join("; ")));
        }
        msg.push_str(" Download it on a machine with network access (huggingface-cli download) or give the model as a local directory.");
        bail!(msg);
    }
    download(repo_id, revision, caches.first())
}

/// A checkpoint that is not a model directory (SAM, CLIP or nanochat's GPT for a pretrained
/// start: no tokenizer.json, or pytorch_model.bin alone): a local directory as it is; else the
/// snapshot of hub id `spec` in the local HF cache that holds one of `weights`; else a download of
/// the first of `weights` the repository has, with those of `extra` it has.
pub fn resolve_checkpoint(spec: &str, weights: &[&str], extra: &[&str]) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let (repo_id, revision) = split_revision(spec);
    if !is_repo_id(repo_id) || local.exists() {
        bail!("{spec:?}: no such directory (and not a hub id of the form org/name[@revision])");
    }
    let caches = cache_dirs();
    for cache in &caches {
        if let Some(dir) = cached_snapshot(cache, repo_id, revision) {
            if weights.iter().any(|w| dir.join(w).is_file()) {
                return Ok(dir);
            }
        }
    }
    if offline() {
        let looked: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
        bail!(
            "{spec:?} is not available offline (HF_HUB_OFFLINE is set): no snapshot of {repo_id}@{revision} \
             with {} is in the HF cache. Looked in: {}.",
            weights.join(" or "),
            looked.join(", ")
        );
    }
    download_checkpoint(repo_id, revision, caches.first(), weights, extra)
}

#[cfg(not(feature = "download"))]
fn download_checkpoint(
    repo_id: &str,
    revision: &str,
    _cache: Option<&PathBuf>,
    _weights: &[&str],
    _extra: &[&str],
) -> Result<PathBuf> {
    download(repo_id, revision, None).map(|files| files.dir)
}

#[cfg(feature = "download")]
fn download_checkpoint(
    repo_id: &str,
    revision: &str,
    cache: Option<&PathBuf>,
    weights: &[&str],
    extra: &[&str],
) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let mut builder = ApiBuilder::from_env().with_progress(true);
    if let Some(cache) = cache {
        builder = builder.with_cache_dir(cache.clone());
    }
    let api = builder.build().context("starting the hf-hub client")?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| {
        anyhow::anyhow!(
            "looking up {repo_id}@{revision} on the hub (set HF_HUB_OFFLINE=1 to use only the cache): {}",
            innermost(&e)
        )
    })?;
    let available: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let weight = weights
        .iter()
        .find(|w| available.contains(**w))
        .with_context(|| format!("{repo_id}@{revision} has none of {}", weights.join(", ")))?;
    let fetch = |name: &str| -> Result<PathBuf> {
        repo.get(name)
            .map_err(|e| anyhow::anyhow!("downloading {name} of {repo_id}@{revision}: {}", innermost(&e)))
    };
    for name in extra.iter().filter(|n| available.contains(**n)) {
        fetch(name)?;
    }
    let path = fetch(weight)?;
    Ok(path.parent().context("snapshot path")?.to_path_buf())
}

#[cfg(not(feature = "download"))]
fn download(repo_id: &str, revision: &str, _cache: Option<&PathBuf>) -> Result<ModelFiles> {
    bail!(
        "{repo_id}@{revision} is not in the HF cache, and this build of vellum does not download \
         (it was built without its `download` feature): download it with huggingface-cli, or give \
         the model as a local directory"
    )
}

#[cfg(feature = "download")]
fn download(repo_id: &str, revision: &str, cache: Option<&PathBuf>) -> Result<ModelFiles> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let mut builder = ApiBuilder::from_env().with_progress(true);
    if let Some(cache) = cache {
        builder = builder.with_cache_dir(cache.clone());
    }
    let api = builder.build().context("starting the hf-hub client")?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| {
        anyhow::anyhow!(
            "looking up {repo_id}@{revision} on the hub (set HF_HUB_OFFLINE=1 to use only the cache): {}",
            innermost(&e)
        )
    })?;
    let available: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let fetch = |name: &str| -> Result<PathBuf> {
        repo.get(name)
            .map_err(|e| anyhow::anyhow!("downloading {name} of {repo_id}@{revision}: {}", innermost(&e)))
    };
    let config = fetch("config.json")?;
    fetch("tokenizer.json")?;
    for name in OPTIONAL_FILES.iter().filter(|n| available.contains(**n)) {
        fetch(name)?;
    }
    if available.contains(INDEX_FILE) {
        for shard in index_shards(&fetch(INDEX_FILE)?)? {
            fetch(&shard)?;
        }
    } else {
        fetch(SINGLE_FILE)?;
    }
    ModelFiles::from_dir(config.parent().context("snapshot path")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
    }

    #[test]
    fn finds_a_snapshot_in_the_cache_through_its_ref() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--reducto--RolmOCR");
        write_model(&repo.join("snapshots/abc123"));
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let dir = cached_snapshot(tmp.path(), "reducto/RolmOCR", "main").unwrap();
        assert_eq!(dir, repo.join("snapshots/abc123"));
        assert!(missing_files(&dir).is_empty());
        // A revision given as a commit hash needs no ref.
        assert!(cached_snapshot(tmp.path(), "reducto/RolmOCR", "abc123").is_some());
        assert!(cached_snapshot(tmp.path(), "reducto/Other", "main").is_none());
    }

    #[test]
    fn sharded_weights_come_from_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in ["config.json", "tokenizer.json", "a.safetensors", "b.safetensors"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        std::fs::write(
            dir.join(INDEX_FILE),
            r#"{"weight_map": {"x": "b.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}"#,
        )
        .unwrap();
        let files = ModelFiles::from_dir(dir).unwrap();
        assert_eq!(
            files.weights,
            vec![dir.join("a.safetensors"), dir.join("b.safetensors")]
        );
        std::fs::remove_file(dir.join("b.safetensors")).unwrap();
        let err = ModelFiles::from_dir(dir).unwrap_err().to_string();
        assert!(err.contains("b.safetensors"), "{err}");
    }

    #[test]
    fn incomplete_directory_names_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
        let err = ModelFiles::from_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("model.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn revision_suffix_is_split_off() {
        assert_eq!(split_revision("org/name@v2"), ("org/name", "v2"));
        assert_eq!(split_revision("org/name"), ("org/name", "main"));
    }
}
