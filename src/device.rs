//! Device and dtype selection: `auto | cpu | cuda:N | metal`, `auto | f32 | bf16 | f16`.

use candle_core::{DType, Device};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "metal" => Ok(DeviceSpec::Metal),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!("unknown device `{s}`; expected auto, cpu, cuda:N or metal")),
            },
        }
    }

    /// Open the device. `auto` picks CUDA, then Metal, when compiled in and present, else CPU.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    anyhow::bail!("device cuda:{n} requested, but this retort was built without the `cuda` feature (rebuild with `cargo build --release --features cuda`)");
                }
                Ok(Device::new_cuda(n)?)
            }
            DeviceSpec::Metal => {
                if !candle_core::utils::metal_is_available() {
                    anyhow::bail!("device metal requested, but this retort was built without the `metal` feature (rebuild with `--features metal`)");
                }
                Ok(Device::new_metal(0)?)
            }
            DeviceSpec::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// `None` means auto: f32 on the CPU, bf16 on a GPU.
pub fn parse_dtype(s: &str) -> Result<Option<DType>, String> {
    match s {
        "auto" => Ok(None),
        "f32" => Ok(Some(DType::F32)),
        "bf16" => Ok(Some(DType::BF16)),
        "f16" => Ok(Some(DType::F16)),
        _ => Err(format!("unknown dtype `{s}`; expected auto, f32, bf16 or f16")),
    }
}

pub fn resolve_dtype(spec: Option<DType>, device: &Device) -> DType {
    spec.unwrap_or(if device.is_cpu() { DType::F32 } else { DType::BF16 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceSpec::parse("cuda:1"), Ok(DeviceSpec::Cuda(1)));
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert!(DeviceSpec::parse("tpu").unwrap_err().contains("cuda:N"));
        assert!(parse_dtype("f64").is_err());
    }
}
