//! Splitting documents among the ranks of a cluster job: a document belongs to rank
//! `fnv1a(id) mod world_size`. The hash is fixed (FNV-1a, 64 bit), so the split is the same in
//! every run, whatever the input order: the ranks' shares are disjoint and cover everything.
//! Inside a Slurm array job the rank and world size default to the array's.
//!
//! The world size is recorded in the output folder (`sharding.json`): a later run with another
//! world size would own other documents per rank and write some of them twice, so it is refused.

use std::path::Path;

use anyhow::{bail, Context, Result};

const RECORD: &str = "sharding.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    world_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Shard {
    /// From the flags, else from SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN and
    /// SLURM_ARRAY_TASK_COUNT, else a single rank.
    pub fn resolve(rank: Option<usize>, world_size: Option<usize>) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let slurm = match (
            env("SLURM_ARRAY_TASK_ID"),
            env("SLURM_ARRAY_TASK_MIN"),
            env("SLURM_ARRAY_TASK_COUNT"),
        ) {
            (Some(id), min, Some(count)) => Some((id - min.unwrap_or(0), count)),
            _ => None,
        };
        let rank = rank.or(slurm.map(|s| s.0)).unwrap_or(0);
        let world_size = world_size.or(slurm.map(|s| s.1)).unwrap_or(1);
        if world_size == 0 || rank >= world_size {
            bail!("rank {rank} is outside a world of {world_size}");
        }
        Ok(Self { rank, world_size })
    }

    /// Refuses an output folder that another world size wrote to.
    pub fn check_folder(&self, out: &Path) -> Result<()> {
        let path = out.join(RECORD);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let record: Record = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if record.world_size != self.world_size {
            bail!(
                "{} was written by a run with --world-size {}, and this one has {}: documents would move \
                 between ranks and some would be written twice. Use --world-size {} (or another --out)",
                out.display(),
                record.world_size,
                self.world_size,
                record.world_size
            );
        }
        Ok(())
    }

    /// Checks `out` (see [`Shard::check_folder`]) and records this world size there.
    pub fn record(&self, out: &Path) -> Result<()> {
        self.check_folder(out)?;
        let path = out.join(RECORD);
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        // Ranks starting together write the same content; the rename makes each write whole.
        let temp = out.join(format!(".{RECORD}.{}.tmp", std::process::id()));
        std::fs::write(
            &temp,
            serde_json::to_string(&Record {
                world_size: self.world_size,
            })?,
        )?;
        std::fs::rename(&temp, &path)?;
        Ok(())
    }

    pub fn owns(&self, id: &str) -> bool {
        fnv1a(id.as_bytes()) % self.world_size as u64 == self.rank as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_disjoint_and_cover_everything() {
        let ids: Vec<String> = (0..1000).map(|i| format!("docs/{i}.pdf")).collect();
        let shards: Vec<Shard> = (0..3).map(|rank| Shard { rank, world_size: 3 }).collect();
        for id in &ids {
            assert_eq!(shards.iter().filter(|s| s.owns(id)).count(), 1);
        }
        let counts: Vec<usize> = shards
            .iter()
            .map(|s| ids.iter().filter(|id| s.owns(id)).count())
            .collect();
        assert!(counts.iter().all(|&c| c > 250), "{counts:?}");
        // A known value keeps the split stable across releases.
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn flags_win_and_bad_ranks_are_refused() {
        assert_eq!(
            Shard::resolve(Some(2), Some(4)).unwrap(),
            Shard { rank: 2, world_size: 4 }
        );
        assert!(Shard::resolve(Some(4), Some(4)).is_err());
    }

    #[test]
    fn a_folder_keeps_its_world_size() {
        let tmp = tempfile::tempdir().unwrap();
        let two = Shard { rank: 1, world_size: 2 };
        two.record(tmp.path()).unwrap();
        two.record(tmp.path()).unwrap();
        let err = Shard { rank: 0, world_size: 1 }.check_folder(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("--world-size 2"), "{err}");
    }
}
