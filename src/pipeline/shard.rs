//! Splitting documents among the ranks of a cluster job: a document belongs to rank
//! `fnv1a(id) mod world_size`. The hash is fixed (FNV-1a, 64 bit), so the split is the same in
//! every run, whatever the input order: the ranks' shares are disjoint and cover everything.
//! Inside a Slurm array job the rank and world size default to the array's.

use anyhow::{bail, Result};

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
}
