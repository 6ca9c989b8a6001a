//! Vision-tower outputs kept by image hash (vLLM's `EncoderCacheManager`): a retry of a page, or
//! a sequence preempted and readmitted, skips the tower. The least recently used entry goes
//! first when the cache is full.

use std::collections::HashMap;

use candle_core::Tensor;

pub struct EncoderCache {
    entries: HashMap<u64, (Tensor, u64)>,
    capacity: usize,
    tick: u64,
}

impl EncoderCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            tick: 0,
        }
    }

    /// Starts a new engine step (recency is counted in steps).
    pub fn next_step(&mut self) {
        self.tick += 1;
    }

    pub fn get(&mut self, hash: u64) -> Option<Tensor> {
        let (rows, used) = self.entries.get_mut(&hash)?;
        *used = self.tick;
        Some(rows.clone())
    }

    pub fn insert(&mut self, hash: u64, rows: Tensor) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            let oldest = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(h, _)| *h);
            oldest.map(|h| self.entries.remove(&h));
        }
        self.entries.insert(hash, (rows, self.tick));
    }
}
