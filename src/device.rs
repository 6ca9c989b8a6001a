//! Where a model runs: `cpu`, `cuda` (GPU 0) or `cuda:N`, and the dtype that suits it.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .with_context(|| format!("unknown device {spec:?}: use cpu, cuda or cuda:N"))?,
                None => bail!("unknown device {spec:?}: use cpu, cuda or cuda:N"),
            };
            if !cfg!(feature = "cuda") {
                bail!("device {spec} needs a build with the cuda feature (cargo build --release --features cuda; see scripts/setup-cuda)");
            }
            Device::new_cuda(ordinal).with_context(|| format!("opening GPU {ordinal}"))
        }
    }
}

/// f32 on the CPU (its matmuls have no bf16 kernels), bf16 on a GPU.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Bytes free for new allocations on `device`: the GPU's free memory, or MemAvailable.
pub fn available_memory(device: &Device) -> u64 {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        if let Ok((free, _total)) = d.cuda_stream().context().mem_get_info() {
            return free as u64;
        }
    }
    let _ = device;
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(4 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_or_say_why_not() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(default_dtype(&Device::Cpu), DType::F32);
        for bad in ["gpu", "cuda:x", "cuda0"] {
            assert!(parse(bad).unwrap_err().to_string().contains("unknown device"), "{bad}");
        }
        if !cfg!(feature = "cuda") {
            assert!(parse("cuda:1").unwrap_err().to_string().contains("--features cuda"));
        }
    }
}
