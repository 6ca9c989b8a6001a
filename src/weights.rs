//! Safetensors checkpoints, memory-mapped, as a candle `VarBuilder` backend.
//!
//! Each tensor is copied out of the map (and converted to the model's dtype) when the model asks
//! for it; the map's pages for that tensor are then released. With candle's stock mmap loader
//! the mapped pages stay resident beside the copies until loading ends, so peak memory is twice
//! the weights; here it stays at the weights' size (plus one tensor in flight).
//!
//! FP8 checkpoints in the compressed-tensors layout (llm-compressor's `float-quantized` format:
//! a Linear's `weight` stored as float8 e4m3 beside its `weight_scale`, per output channel or per
//! tensor) are dequantized here, tensor by tensor, to the model's dtype: `weight · weight_scale`.
//! Other quantization formats are refused by [`check_quantization`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
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

    /// Bytes the tensors take once converted to `dtype`.
    pub fn bytes_as(&self, dtype: DType) -> u64 {
        self.entries
            .values()
            .map(|e| e.shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64)
            .sum()
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn path(&self, file: usize) -> &Path {
        &self.paths[file]
    }

    /// A float8 weight times its `weight_scale` (one per output row, or one for the tensor), in f32.
    fn dequantize(&self, name: &str, weight: &Tensor) -> candle_core::Result<Tensor> {
        let scale_name = match name.strip_suffix("weight") {
            Some(prefix) => format!("{prefix}weight_scale"),
            None => {
                candle_core::bail!("float8 tensor {name} is not a weight: only compressed-tensors weights are read")
            }
        };
        if !self.entries.contains_key(&scale_name) {
            candle_core::bail!("float8 weight {name} has no {scale_name}");
        }
        let scale = self.load(&scale_name, DType::F32, &Device::Cpu)?;
        let weight = weight.to_dtype(DType::F32)?;
        let scale = match scale.elem_count() {
            1 => scale.reshape(())?,
            n if n == weight.dim(0)? => scale.reshape((n, 1))?,
            n => candle_core::bail!("{scale_name} has {n} values for the {} rows of {name}", weight.dim(0)?),
        };
        weight.broadcast_mul(&scale)
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
        let stored = Tensor::from_raw_buffer(bytes, entry.dtype, &entry.shape, &Device::Cpu)?;
        let tensor = if entry.dtype == DType::F8E4M3 {
            self.dequantize(name, &stored)?
        } else {
            stored
        }
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

/// Refuses a checkpoint quantized in a way vellum does not read, naming the format; accepts none
/// and compressed-tensors float8 weights (8-bit float, channel or tensor scales).
pub fn check_quantization(config: &serde_json::Value) -> Result<()> {
    let Some(q) = config.get("quantization_config") else {
        return Ok(());
    };
    let method = q["quant_method"].as_str().unwrap_or("unnamed");
    let format = q["format"].as_str().unwrap_or("");
    let refuse = |why: String| -> Result<()> {
        anyhow::bail!(
            "the checkpoint is quantized with {method}{}: {why}; vellum reads compressed-tensors float8 \
             checkpoints (dequantized to the compute dtype at load), or unquantized ones",
            if format.is_empty() {
                String::new()
            } else {
                format!(" ({format})")
            }
        )
    };
    if method != "compressed-tensors" || format != "float-quantized" {
        return refuse("not supported".into());
    }
    let groups = q["config_groups"]
        .as_object()
        .map(|g| g.values().collect::<Vec<_>>())
        .unwrap_or_default();
    for group in groups {
        let w = &group["weights"];
        let strategy = w["strategy"].as_str().unwrap_or("");
        if w["num_bits"] != 8 || w["type"] != "float" || !["channel", "tensor"].contains(&strategy) {
            return refuse(format!(
                "weights of {} bits, type {}, strategy {strategy:?}",
                w["num_bits"], w["type"]
            ));
        }
    }
    Ok(())
}

/// `tensor` if it has the shape the model asks `name` to have.
fn expect_shape(tensor: Tensor, shape: Shape, name: &str) -> candle_core::Result<Tensor> {
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

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

impl SimpleBackend for MmapWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        expect_shape(self.load(name, dtype, device)?, shape, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// A model's parameters as `Var`s in one store, shared by whoever serves and whoever trains.
///
/// The engine's model reads them through views that carry no gradient ([`ParamStore::serving`]):
/// tensors on the very same storage, so the fused kernels still serve them and no graph is kept.
/// The trainer builds the same model code over [`ParamStore::training`], whose tensors are the
/// `Var`s; an optimizer step writes into that storage in place, and the next engine step sees it.
#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<BTreeMap<String, Var>>,
    requested: Arc<Mutex<BTreeSet<String>>>,
    /// Bumped by every writer after an update: caches of model outputs (the engine's vision and
    /// prefix caches, keyed by content hashes) must include it.
    version: Arc<AtomicU64>,
}

impl ParamStore {
    /// Every tensor of the files: floating-point ones in `dtype` on `device`, others (integer
    /// buffers such as `position_ids`) as they are stored.
    pub fn load(weights: &MmapWeights, dtype: DType, device: &Device) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for name in weights.names() {
            let entry = &weights.entries[name];
            let target = if entry.dtype.is_float() { dtype } else { entry.dtype };
            tensors.insert(name.to_string(), weights.load(name, target, device)?);
        }
        Self::from_tensors(tensors)
    }

    /// A store holding this one's parameters (the same storage) and `extra` besides, such as
    /// adapters; versions and requested names start afresh.
    pub fn extended(&self, extra: BTreeMap<String, Tensor>) -> Result<Self> {
        let mut vars = (*self.vars).clone();
        for (name, t) in extra {
            if vars.contains_key(&name) {
                anyhow::bail!("{name} is already a parameter");
            }
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self {
            vars: Arc::new(vars),
            requested: Default::default(),
            version: Default::default(),
        })
    }

    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Result<Self> {
        let vars = tensors
            .into_iter()
            .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            vars: Arc::new(vars),
            requested: Default::default(),
            version: Default::default(),
        })
    }

    /// Tensors without gradient tracking on the store's storage.
    pub fn serving(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        self.view(Box::new(|_| false), dtype, device)
    }

    /// The `Var`s themselves, but for those whose names `frozen` accepts: what a model built
    /// over this view computes carries gradients to its unfrozen parameters.
    pub fn training(
        &self,
        dtype: DType,
        device: &Device,
        frozen: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> VarBuilder<'static> {
        self.view(Box::new(move |name| !frozen(name)), dtype, device)
    }

    fn view(
        &self,
        tracked: Box<dyn Fn(&str) -> bool + Send + Sync>,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let view = StoreView {
            store: self.clone(),
            tracked,
        };
        VarBuilder::from_backend(Box::new(view), dtype, device.clone())
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Marks the parameters as changed (after an optimizer step wrote them).
    pub fn bump_version(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// The names a model built over a view of this store has read (its parameters; unused
    /// checkpoint entries such as CLIP's `patch_embedding` are not among them).
    pub fn requested(&self) -> BTreeSet<String> {
        self.requested.lock().expect("the name set is never poisoned").clone()
    }

    /// Writes every tensor, under its checkpoint name, as `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        candle_core::safetensors::save(&tensors, path).with_context(|| format!("writing {}", path.display()))
    }
}

struct StoreView {
    store: ParamStore,
    tracked: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl SimpleBackend for StoreView {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        expect_shape(self.get_unchecked(name, dtype, device)?, shape, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let var = self
            .store
            .vars
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        if var.dtype() != dtype || !var.device().same_device(device) {
            // A view in another dtype or place would be a copy the optimizer never updates.
            candle_core::bail!(
                "{name} is stored as {:?} on {:?}, asked for {dtype:?} on {device:?}",
                var.dtype(),
                var.device()
            );
        }
        self.store
            .requested
            .lock()
            .expect("the name set is never poisoned")
            .insert(name.to_string());
        Ok(if (self.tracked)(name) {
            var.as_tensor().clone()
        } else {
            var.as_tensor().detach()
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.store.vars.contains_key(name)
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
