//! The pool of KV-cache blocks (vLLM v1's `BlockPool`): reference counts, a free list in
//! least-recently-freed order, and a map from block hash to the block holding that content.
//!
//! A freed block keeps its content and hash until it is handed out again, so a later sequence
//! with the same prefix (a retry of the same page) finds it; blocks are evicted from the front
//! of the free list, the longest unused first.

use std::collections::{BTreeMap, HashMap};

pub use crate::ops::paged_attention::BlockId;
pub type BlockHash = u64;

pub struct BlockPool {
    ref_count: Vec<u32>,
    hash: Vec<Option<BlockHash>>,
    /// Free blocks by the order they were freed (stamp → block).
    free: BTreeMap<u64, BlockId>,
    /// Each free block's stamp in `free`.
    free_stamp: Vec<Option<u64>>,
    cached: HashMap<BlockHash, BlockId>,
    next_stamp: u64,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let mut pool = Self {
            ref_count: vec![0; num_blocks],
            hash: vec![None; num_blocks],
            free: BTreeMap::new(),
            free_stamp: vec![None; num_blocks],
            cached: HashMap::new(),
            next_stamp: 0,
        };
        for b in 0..num_blocks as BlockId {
            pool.push_free(b);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_count.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Whether `block` is unused (on the free list, possibly still holding cached content).
    pub fn is_free(&self, block: BlockId) -> bool {
        self.free_stamp[block as usize].is_some()
    }

    fn push_free(&mut self, block: BlockId) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.free.insert(stamp, block);
        self.free_stamp[block as usize] = Some(stamp);
    }

    /// Takes the least recently freed block, dropping whatever it cached.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let (_, block) = self.free.pop_first()?;
        self.free_stamp[block as usize] = None;
        if let Some(h) = self.hash[block as usize].take() {
            if self.cached.get(&h) == Some(&block) {
                self.cached.remove(&h);
            }
        }
        self.ref_count[block as usize] = 1;
        Some(block)
    }

    /// Takes one more reference to a cached block (taking it off the free list if unused).
    pub fn touch(&mut self, block: BlockId) {
        if let Some(stamp) = self.free_stamp[block as usize].take() {
            self.free.remove(&stamp);
        }
        self.ref_count[block as usize] += 1;
    }

    /// Drops one reference; an unused block goes to the back of the free list, content kept.
    pub fn release(&mut self, block: BlockId) {
        let rc = &mut self.ref_count[block as usize];
        assert!(*rc > 0, "block {block} released more often than taken");
        *rc -= 1;
        if *rc == 0 {
            self.push_free(block);
        }
    }

    /// Records that a full block holds the content `hash` names.
    pub fn register(&mut self, block: BlockId, hash: BlockHash) {
        if self.hash[block as usize].is_none() {
            self.hash[block as usize] = Some(hash);
            self.cached.entry(hash).or_insert(block);
        }
    }

    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_stay_findable_until_reused_least_recent_first() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.register(a, 11);
        pool.register(b, 22);
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.num_free(), 3);
        // A prefix hit takes `b` back off the free list.
        let hit = pool.lookup(22).unwrap();
        pool.touch(hit);
        assert_eq!(pool.num_free(), 2);
        // Allocation evicts the never-used block first, then `a` (freed before `b`).
        let c = pool.allocate().unwrap();
        assert!(c != a && c != b);
        assert_eq!(pool.allocate(), Some(a));
        assert_eq!(pool.lookup(11), None, "evicted content is forgotten");
        assert_eq!(pool.lookup(22), Some(b));
        assert_eq!(pool.allocate(), None);
    }
}
