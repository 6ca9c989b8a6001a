//! Chunked JSONL output that survives being killed at any moment.
//!
//! Each rank writes `<out>/<rank:05>/<chunk:05>.jsonl[.gz]` (documents) and, for chunks with
//! failures, `<out>/failed/<rank:05>/<chunk:05>.jsonl[.gz]`. A chunk is written to a temporary
//! file that stays open across documents; once it holds `chunk_size` documents it is flushed,
//! fsynced and renamed, and only then is it recorded in `<out>/<rank:05>/progress.jsonl` (one
//! line per committed chunk, with its document ids). The record is the truth: on restart,
//! chunk files it does not list (a kill between rename and record, or a half-written temporary)
//! are deleted and their documents done again. So every document is written exactly once.
//!
//! The record also keeps each chunk's failed ids and page/token counts, so the folder's state
//! (what is done, what failed, the work it took) is known across runs; with `retry_failed`, a
//! document whose latest outcome is a failure is not done and is attempted again.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

const PROGRESS: &str = "progress.jsonl";

enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Sink {
    fn create(path: &Path, gzip: bool) -> Result<Self> {
        let file = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
        Ok(if gzip {
            Sink::Gzip(GzEncoder::new(file, flate2::Compression::default()))
        } else {
            Sink::Plain(file)
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let w: &mut dyn Write = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
        };
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")
    }

    /// Flushes everything to disk.
    fn finish(self) -> std::io::Result<()> {
        let buffered = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish()?,
        };
        buffered.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

/// Work a chunk took, summed across runs in [`Ledger::totals`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Work {
    pub pages: usize,
    pub pages_ocr: usize,
    pub pages_fallback: usize,
    pub pages_retried: usize,
    /// Every attempt's tokens, retries included.
    pub generated_tokens: usize,
}

impl std::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Self) {
        self.pages += o.pages;
        self.pages_ocr += o.pages_ocr;
        self.pages_fallback += o.pages_fallback;
        self.pages_retried += o.pages_retried;
        self.generated_tokens += o.generated_tokens;
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChunkRecord {
    chunk: usize,
    documents: Vec<String>,
    failed: usize,
    #[serde(default)]
    failed_ids: Vec<String>,
    #[serde(default)]
    work: Work,
}

#[derive(Default)]
struct OpenChunk {
    good: Option<Sink>,
    failed: Option<Sink>,
    documents: Vec<String>,
    failed_ids: Vec<String>,
    work: Work,
}

/// What earlier runs committed under one rank's folder.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids not to do again.
    pub done: HashSet<String>,
    /// Ids whose latest outcome is a failure.
    pub failed: HashSet<String>,
    pub totals: Work,
}

pub struct ChunkWriter {
    dir: PathBuf,
    failed_dir: PathBuf,
    chunk_size: usize,
    gzip: bool,
    next_chunk: usize,
    open: OpenChunk,
    progress: File,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The chunk number a file name carries (`00007.jsonl`, `.00007.jsonl.tmp`, ...).
fn chunk_of(name: &str) -> Option<usize> {
    name.trim_start_matches('.').split('.').next()?.parse().ok()
}

impl ChunkWriter {
    /// Opens rank `rank`'s output under `out`, cleaning up after an earlier run that was
    /// killed, and returns what earlier runs committed; with `retry_failed`, failed documents
    /// are not counted as done.
    pub fn open(out: &Path, rank: usize, chunk_size: usize, gzip: bool, retry_failed: bool) -> Result<(Self, Ledger)> {
        let dir = out.join(format!("{rank:05}"));
        let failed_dir = out.join("failed").join(format!("{rank:05}"));
        for d in [&dir, &failed_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let progress_path = dir.join(PROGRESS);
        // id → failed, by the latest record that names it.
        let mut outcome: HashMap<String, bool> = HashMap::new();
        let mut totals = Work::default();
        let mut committed = HashSet::new();
        let mut valid_len = 0u64;
        if let Ok(f) = File::open(&progress_path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A line cut short by a kill ends the record; it is dropped below.
                let Ok(record) = serde_json::from_str::<ChunkRecord>(&line) else {
                    break;
                };
                valid_len += line.len() as u64 + 1;
                committed.insert(record.chunk);
                totals += record.work;
                // Records written before failed ids were kept count their failures only.
                let failed: HashSet<&String> = record.failed_ids.iter().collect();
                for id in &record.documents {
                    outcome.insert(id.clone(), failed.contains(id));
                }
            }
        }
        let progress = OpenOptions::new().create(true).append(true).open(&progress_path)?;
        progress.set_len(valid_len)?;
        for d in [&dir, &failed_dir] {
            for entry in std::fs::read_dir(d)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Only chunk files are ours to clean: stats and lists beside them stay.
                let orphan = chunk_of(&name).is_some_and(|c| !committed.contains(&c) || name.ends_with(".tmp"));
                if orphan && entry.path().is_file() {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        let next_chunk = committed.iter().max().map_or(0, |m| m + 1);
        let writer = Self {
            dir,
            failed_dir,
            chunk_size: chunk_size.max(1),
            gzip,
            next_chunk,
            open: OpenChunk::default(),
            progress,
        };
        let failed: HashSet<String> = outcome.iter().filter(|(_, &f)| f).map(|(id, _)| id.clone()).collect();
        let ledger = Ledger {
            done: outcome
                .keys()
                .filter(|id| !(retry_failed && failed.contains(*id)))
                .cloned()
                .collect(),
            failed,
            totals,
        };
        Ok((writer, ledger))
    }

    pub fn rank_dir(&self) -> &Path {
        &self.dir
    }

    fn name(&self, chunk: usize) -> String {
        format!("{chunk:05}.jsonl{}", if self.gzip { ".gz" } else { "" })
    }

    /// Adds one document's JSON line, to the documents or to the failed output; commits the
    /// chunk when it is full.
    pub fn write(&mut self, id: &str, line: &str, failed: bool, work: Work) -> Result<()> {
        let temp = |dir: &Path, name: &str| dir.join(format!(".{name}.tmp"));
        let name = self.name(self.next_chunk);
        let (slot, dir) = if failed {
            (&mut self.open.failed, &self.failed_dir)
        } else {
            (&mut self.open.good, &self.dir)
        };
        if slot.is_none() {
            *slot = Some(Sink::create(&temp(dir, &name), self.gzip)?);
        }
        slot.as_mut().expect("opened above").write_line(line)?;
        self.open.documents.push(id.to_string());
        if failed {
            self.open.failed_ids.push(id.to_string());
        }
        self.open.work += work;
        if self.open.documents.len() >= self.chunk_size {
            self.commit()?;
        }
        Ok(())
    }

    /// Makes the open chunk visible and records it (a partial chunk too, when a run stops).
    pub fn commit(&mut self) -> Result<()> {
        if self.open.documents.is_empty() {
            return Ok(());
        }
        let _span = tracing::debug_span!("write", documents = self.open.documents.len()).entered();
        let name = self.name(self.next_chunk);
        let open = std::mem::take(&mut self.open);
        for (sink, dir) in [(open.good, &self.dir), (open.failed, &self.failed_dir)] {
            if let Some(sink) = sink {
                sink.finish()?;
                std::fs::rename(dir.join(format!(".{name}.tmp")), dir.join(&name))?;
                sync_dir(dir)?;
            }
        }
        let record = ChunkRecord {
            chunk: self.next_chunk,
            documents: open.documents,
            failed: open.failed_ids.len(),
            failed_ids: open.failed_ids,
            work: open.work,
        };
        writeln!(self.progress, "{}", serde_json::to_string(&record)?)?;
        self.progress.sync_all()?;
        self.next_chunk += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn chunks_appear_only_when_complete_and_resume_skips_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, ledger) = ChunkWriter::open(tmp.path(), 3, 2, false, false).unwrap();
        assert!(ledger.done.is_empty());
        w.write("a", r#"{"id":"a"}"#, false, Work::default()).unwrap();
        let rank = tmp.path().join("00003");
        assert!(!rank.join("00000.jsonl").exists(), "half a chunk is invisible");
        w.write("b", r#"{"id":"b"}"#, true, Work::default()).unwrap();
        assert_eq!(lines(&rank.join("00000.jsonl")), [r#"{"id":"a"}"#]);
        assert_eq!(lines(&tmp.path().join("failed/00003/00000.jsonl")), [r#"{"id":"b"}"#]);
        w.write("c", r#"{"id":"c"}"#, false, Work::default()).unwrap();
        drop(w); // killed with "c" in an uncommitted chunk
        let (mut w, ledger) = ChunkWriter::open(tmp.path(), 3, 2, false, false).unwrap();
        assert_eq!(ledger.done, HashSet::from(["a".to_string(), "b".to_string()]));
        assert_eq!(ledger.failed, HashSet::from(["b".to_string()]));
        assert!(std::fs::read_dir(&rank)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
        w.write("c", r#"{"id":"c"}"#, false, Work::default()).unwrap();
        w.commit().unwrap();
        assert_eq!(lines(&rank.join("00001.jsonl")), [r#"{"id":"c"}"#]);
    }

    #[test]
    fn a_chunk_renamed_but_not_recorded_is_redone() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) = ChunkWriter::open(tmp.path(), 0, 1, true, false).unwrap();
        w.write("a", r#"{"id":"a"}"#, false, Work::default()).unwrap();
        drop(w);
        let rank = tmp.path().join("00000");
        // As if killed after the rename of chunk 1 and before its record, mid-way through a line.
        std::fs::write(rank.join("00001.jsonl.gz"), b"orphan").unwrap();
        let mut progress = OpenOptions::new().append(true).open(rank.join(PROGRESS)).unwrap();
        write!(progress, "{{\"chunk\":1,\"docu").unwrap();
        let (_, ledger) = ChunkWriter::open(tmp.path(), 0, 1, true, false).unwrap();
        assert_eq!(ledger.done.len(), 1);
        assert!(!rank.join("00001.jsonl.gz").exists());
        assert_eq!(lines(&rank.join(PROGRESS)).len(), 1);
        let mut gz = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(File::open(rank.join("00000.jsonl.gz")).unwrap()),
            &mut gz,
        )
        .unwrap();
        assert_eq!(gz, "{\"id\":\"a\"}\n");
    }

    #[test]
    fn retried_failures_count_by_their_latest_outcome() {
        let tmp = tempfile::tempdir().unwrap();
        let work = Work {
            pages: 2,
            generated_tokens: 7,
            ..Default::default()
        };
        let (mut w, _) = ChunkWriter::open(tmp.path(), 0, 10, false, false).unwrap();
        w.write("a", "{}", true, work).unwrap();
        w.write("b", "{}", false, work).unwrap();
        w.commit().unwrap();
        drop(w);
        let (_, ledger) = ChunkWriter::open(tmp.path(), 0, 10, false, false).unwrap();
        assert!(ledger.done.contains("a"), "without --retry-failed a failure is final");
        let (mut w, ledger) = ChunkWriter::open(tmp.path(), 0, 10, false, true).unwrap();
        assert_eq!(ledger.done, HashSet::from(["b".to_string()]));
        w.write("a", "{}", false, work).unwrap();
        w.commit().unwrap();
        drop(w);
        let (_, ledger) = ChunkWriter::open(tmp.path(), 0, 10, false, true).unwrap();
        assert!(ledger.failed.is_empty());
        assert_eq!(ledger.done.len(), 2, "each id once, by its latest outcome");
        assert_eq!(ledger.totals.pages, 6, "the work of every attempt");
        assert_eq!(ledger.totals.generated_tokens, 21);
    }
}
