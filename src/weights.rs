//! Safetensors checkpoints, memory-mapped, as a candle `VarBuilder` backend.
//!
//! Each tensor is copied out of the map (and converted to the model's dtype) when the model asks
//! for it; the map's pages for that tensor are then released. With candle's stock mmap loader
//! the mapped pages stay resident beside the copies until loading ends, so peak memory is twice
//! the weights; here it stays at the weights' size (plus one tensor in flight).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use memmap2::{Mmap, UncheckedAdvice};

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range of the data within the file.
    start: usize,
    end: usize,
}

pub struct MmapWeights {
    maps: Vec<Mmap>,
    paths: Vec<PathBuf>,
    entries: HashMap<String, Entry>,
}

impl MmapWeights {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: checkpoint files are not modified while a model loads from them (the HF
            // cache and model directories are written once); the same contract as any mmap loader.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
                .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                let dtype = DType::try_from(info.dtype).with_context(|| {
                    format!(
                        "tensor {name} in {}: unsupported dtype {:?}",
                        path.display(),
                        info.dtype
                    )
                })?;
                let (s, e) = info.data_offsets;
                entries.insert(
                    name,
                    Entry {
                        file: i,
                        dtype,
                        shape: info.shape.clone(),
                        start: data_start + s,
                        end: data_start + e,
                    },
                );
            }
            maps.push(map);
        }
        Ok(Self {
            maps,
            paths: paths.to_vec(),
            entries,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn path(&self, file: usize) -> &Path {
        &self.paths[file]
    }

    fn load(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        let map = &self.maps[entry.file];
        let bytes = map.get(entry.start..entry.end).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "tensor {name} lies outside {}",
                self.path(entry.file).display()
            ))
        })?;
        let tensor = Tensor::from_raw_buffer(bytes, entry.dtype, &entry.shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        // Only whole pages inside this tensor's range: neighbours may share the edge pages.
        let page = page_size();
        let first = entry.start.div_ceil(page) * page;
        let last = entry.end / page * page;
        if last > first {
            // SAFETY: the map is private and read-only, so dropping its pages loses nothing: a
            // later access reads them from the file again. Advice failure only costs memory.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, first, last - first) };
        }
        Ok(tensor)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

impl SimpleBackend for MmapWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_convert() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("w.safetensors");
        let a = Tensor::arange(0f32, 4096.0 * 3.0, &Device::Cpu)?.reshape((3, 4096))?;
        let b = Tensor::new(&[1u32, 2, 3], &Device::Cpu)?;
        candle_core::safetensors::save(
            &HashMap::from([
                ("a".to_string(), a.to_dtype(DType::BF16)?),
                ("b".to_string(), b.clone()),
            ]),
            &path,
        )?;
        let weights = MmapWeights::open(&[path])?;
        let mut names: Vec<_> = weights.names().collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        let vb = weights.into_var_builder(DType::F32, &Device::Cpu);
        let got = vb.get((3, 4096), "a")?;
        assert_eq!(
            got.to_vec2::<f32>()?,
            a.to_dtype(DType::BF16)?.to_dtype(DType::F32)?.to_vec2::<f32>()?
        );
        // Pages were released: reading again still gives the same values.
        assert_eq!(vb.get((3, 4096), "a")?.to_vec2::<f32>()?, got.to_vec2::<f32>()?);
        assert_eq!(
            vb.get_unchecked_dtype("b", DType::U32)?.to_vec1::<u32>()?,
            vec![1, 2, 3]
        );
        assert!(vb.get((4, 4096), "a").is_err());
        assert!(!vb.contains_tensor("c"));
        Ok(())
    }
}
