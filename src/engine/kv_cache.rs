//! The paged KV cache (vLLM v1's `KVCacheManager` over a `BlockPool`): a block table per
//! sequence, prefix sharing through chained block hashes, and the storage the attention op
//! reads and writes through the tables.
//!
//! A block's hash chains its parent's hash, its token ids and the content hashes of the images
//! its tokens belong to, so two prompts share a block only if everything before and in it is
//! the same, pixels included. A matched prefix is cut back so it never ends inside an image and
//! never covers the whole prompt (the last token must run to produce logits).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::block_pool::{BlockHash, BlockId, BlockPool};
use candle_core::{DType, Device};

use crate::models::ModelInfo;
use crate::ops::paged_attention::PagedKv;

pub type SeqId = u64;

/// How much memory the cache may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheBudget {
    /// What `max_num_seqs` sequences of `max_context` tokens can use, capped at this fraction
    /// of the memory available when the engine starts.
    Auto {
        fraction: f64,
    },
    Bytes(u64),
    /// A fraction of the memory available when the engine starts (MemAvailable).
    Fraction(f64),
    Blocks(usize),
}

impl std::fmt::Display for CacheBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheBudget::Auto { fraction } => write!(f, "automatic (at most {:.0}% of free memory)", fraction * 100.0),
            CacheBudget::Bytes(b) => write!(f, "{:.3} GiB", *b as f64 / (1u64 << 30) as f64),
            CacheBudget::Fraction(x) => write!(f, "{:.0}% of free memory", x * 100.0),
            CacheBudget::Blocks(n) => write!(f, "{n} blocks"),
        }
    }
}

/// Shape of the cache: what one block holds, and where.
#[derive(Debug, Clone)]
pub struct CacheShape {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Where the blocks live: the model's GPU when the kernels serve its head dimension,
    /// otherwise host memory (f32).
    pub device: Device,
    pub dtype: DType,
}

impl CacheShape {
    /// Where a model's cache goes: beside its weights, in their dtype, on a GPU whose kernels
    /// take its head dimension; in host memory as f32 otherwise.
    pub fn for_model(info: &ModelInfo, block_size: usize) -> Self {
        let (device, dtype) = if PagedKv::on_device(&info.device, info.head_dim) {
            (info.device.clone(), info.dtype)
        } else {
            (Device::Cpu, DType::F32)
        };
        Self {
            num_layers: info.num_layers,
            num_kv_heads: info.num_kv_heads,
            head_dim: info.head_dim,
            block_size,
            device,
            dtype,
        }
    }

    /// Bytes one block takes (keys and values of every layer).
    pub fn bytes_per_block(&self) -> u64 {
        (2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_dim * self.dtype.size_in_bytes()) as u64
    }

    /// Blocks the budget allows; `most_useful` is what the scheduler can ever use at once.
    pub fn num_blocks(&self, budget: CacheBudget, most_useful: usize) -> usize {
        match budget {
            CacheBudget::Auto { fraction } => {
                most_useful.min(self.num_blocks(CacheBudget::Fraction(fraction), most_useful))
            }
            CacheBudget::Blocks(n) => n,
            CacheBudget::Bytes(b) => (b / self.bytes_per_block()) as usize,
            CacheBudget::Fraction(f) => {
                ((crate::device::available_memory(&self.device) as f64 * f) as u64 / self.bytes_per_block()) as usize
            }
        }
    }
}

/// Hashes of a prompt's full blocks. `image_of[i]` is the content hash of the image token `i`
/// belongs to, if any.
pub fn block_hashes(tokens: &[u32], image_of: &[Option<u64>], block_size: usize) -> Vec<BlockHash> {
    let mut parent: BlockHash = 0;
    tokens
        .chunks_exact(block_size)
        .zip(image_of.chunks_exact(block_size))
        .map(|(toks, imgs)| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            parent.hash(&mut h);
            toks.hash(&mut h);
            imgs.hash(&mut h);
            parent = h.finish();
            parent
        })
        .collect()
}

pub struct KvCache {
    pool: BlockPool,
    shape: CacheShape,
    tables: HashMap<SeqId, Vec<BlockId>>,
    /// How many of each sequence's blocks have been registered under their hash.
    registered: HashMap<SeqId, usize>,
    pub storage: PagedKv,
}

impl KvCache {
    pub fn new(shape: CacheShape, num_blocks: usize) -> candle_core::Result<Self> {
        Ok(Self {
            pool: BlockPool::new(num_blocks),
            storage: PagedKv::new(
                shape.num_layers,
                num_blocks,
                shape.block_size,
                shape.num_kv_heads,
                shape.head_dim,
                &shape.device,
                shape.dtype,
            )?,
            shape,
            tables: HashMap::new(),
            registered: HashMap::new(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.shape.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.shape.block_size)
    }

    /// Cached blocks for the longest prefix of `hashes`, cut back so the prefix ends outside any
    /// image span (`image_spans`, token ranges) and before the prompt's last token.
    pub fn cached_prefix(
        &self,
        hashes: &[BlockHash],
        prompt_len: usize,
        image_spans: &[(usize, usize)],
    ) -> Vec<BlockId> {
        let mut blocks: Vec<BlockId> = hashes.iter().map_while(|h| self.pool.lookup(*h)).collect();
        let bs = self.shape.block_size;
        loop {
            let end = blocks.len() * bs;
            let inside_image = image_spans.iter().any(|&(s, e)| s < end && end < e);
            if end < prompt_len && !inside_image {
                return blocks;
            }
            blocks.pop();
        }
    }

    /// Starts `seq` on the `cached` blocks plus fresh ones for `tokens` in all. Without enough
    /// free blocks nothing changes and it returns false.
    pub fn allocate(&mut self, seq: SeqId, cached: &[BlockId], tokens: usize) -> bool {
        let fresh_needed = self.blocks_for(tokens).saturating_sub(cached.len());
        // Cached blocks that sit unused on the free list stop being free once taken.
        let cached_free = cached.iter().filter(|&&b| self.pool.is_free(b)).count();
        if self.pool.num_free() < fresh_needed + cached_free {
            return false;
        }
        for &b in cached {
            self.pool.touch(b);
        }
        self.tables.insert(seq, cached.to_vec());
        self.registered.insert(seq, cached.len());
        self.grow(seq, tokens)
    }

    /// Grows `seq`'s table to hold `tokens`; false (and no change) if blocks run out.
    pub fn grow(&mut self, seq: SeqId, tokens: usize) -> bool {
        let have = self.tables.get(&seq).map_or(0, Vec::len);
        let need = self.blocks_for(tokens).saturating_sub(have);
        if need > self.pool.num_free() {
            return false;
        }
        let fresh: Vec<BlockId> = (0..need)
            .map(|_| self.pool.allocate().expect("counted free blocks"))
            .collect();
        self.tables.entry(seq).or_default().extend(fresh);
        true
    }

    /// Registers the hashes of `seq`'s blocks that are now full and computed.
    pub fn register_full_blocks(&mut self, seq: SeqId, hashes: &[BlockHash], computed_tokens: usize) {
        let full = (computed_tokens / self.shape.block_size).min(hashes.len());
        let done = self.registered.get(&seq).copied().unwrap_or(0);
        if let Some(table) = self.tables.get(&seq) {
            for i in done..full {
                self.pool.register(table[i], hashes[i]);
            }
        }
        self.registered.insert(seq, full.max(done));
    }

    /// Releases `seq`'s blocks, last first, so its tail is evicted before its shared prefix.
    pub fn free(&mut self, seq: SeqId) {
        self.registered.remove(&seq);
        if let Some(table) = self.tables.remove(&seq) {
            for &b in table.iter().rev() {
                self.pool.release(b);
            }
        }
    }

    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables.get(&seq).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(blocks: usize) -> KvCache {
        KvCache::new(
            CacheShape {
                num_layers: 1,
                num_kv_heads: 1,
                head_dim: 2,
                block_size: 4,
                device: Device::Cpu,
                dtype: DType::F32,
            },
            blocks,
        )
        .unwrap()
    }

    #[test]
    fn a_retry_reuses_the_prompt_blocks() {
        let mut kv = cache(8);
        let tokens: Vec<u32> = (0..14).collect();
        let images = vec![None; 14];
        let hashes = block_hashes(&tokens, &images, 4);
        assert_eq!(hashes.len(), 3);
        assert!(kv.cached_prefix(&hashes, 14, &[]).is_empty());
        assert!(kv.allocate(1, &[], 14));
        kv.register_full_blocks(1, &hashes, 14);
        let first = kv.block_table(1).to_vec();
        kv.free(1);
        assert_eq!(kv.num_free_blocks(), 8);
        let hit = kv.cached_prefix(&hashes, 14, &[]);
        assert_eq!(hit, first[..3]);
        assert!(kv.allocate(2, &hit, 15));
        assert_eq!(&kv.block_table(2)[..3], &first[..3]);
        assert_eq!(kv.num_free_blocks(), 4);
        kv.free(2);
        assert_eq!(kv.num_free_blocks(), 8);
    }

    #[test]
    fn a_prefix_never_ends_inside_an_image_or_covers_the_whole_prompt() {
        let mut kv = cache(8);
        let tokens: Vec<u32> = (0..16).collect();
        let mut images = vec![None; 16];
        for i in images.iter_mut().take(14).skip(6) {
            *i = Some(99);
        }
        let hashes = block_hashes(&tokens, &images, 4);
        assert!(kv.allocate(1, &[], 16));
        kv.register_full_blocks(1, &hashes, 16);
        kv.free(1);
        // 16 tokens all cached: the last block is dropped (the last token must run), and the
        // 12- and 8-token prefixes would end inside the image at 6..14: one block remains.
        assert_eq!(kv.cached_prefix(&hashes, 16, &[(6, 14)]).len(), 1);
        assert_eq!(kv.cached_prefix(&hashes, 16, &[]).len(), 3);
        // Another image at the same positions shares nothing from the image on.
        let other: Vec<Option<u64>> = images.iter().map(|i| i.map(|_| 7)).collect();
        let other_hashes = block_hashes(&tokens, &other, 4);
        assert_eq!(other_hashes[0], hashes[0]);
        assert_ne!(other_hashes[1], hashes[1]);
    }

    #[test]
    fn allocation_fails_cleanly_when_blocks_run_out() {
        let mut kv = cache(3);
        assert!(kv.allocate(1, &[], 8));
        assert!(!kv.allocate(2, &[], 8));
        assert!(kv.block_table(2).is_empty());
        assert!(!kv.grow(1, 13));
        assert_eq!(kv.block_table(1).len(), 2);
        assert!(kv.grow(1, 12));
        kv.free(1);
        assert_eq!(kv.num_free_blocks(), 3);
    }

    #[test]
    fn budget_sets_the_block_count() {
        let shape = CacheShape {
            num_layers: 2,
            num_kv_heads: 4,
            head_dim: 8,
            block_size: 16,
            device: Device::Cpu,
            dtype: DType::F32,
        };
        assert_eq!(shape.bytes_per_block(), 2 * 2 * 16 * 4 * 8 * 4);
        assert_eq!(
            shape.num_blocks(CacheBudget::Bytes(shape.bytes_per_block() * 10 + 5), 99),
            10
        );
        assert!(shape.num_blocks(CacheBudget::Fraction(0.01), 99) > 0);
        assert_eq!(shape.num_blocks(CacheBudget::Auto { fraction: 0.5 }, 99), 99);
    }
}
