//! How much memory the run may use: host RAM from `/proc/meminfo` (`MemAvailable`), a GPU's
//! from `nvidia-smi` or a figure the user gives (`--device-memory 80GiB`), so that a preset
//! can be checked against a card that is not in this machine.

use super::plan::Target;

/// One memory and where its figure came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    pub bytes: f64,
    pub source: String,
}

/// The memories a run can use: on the CPU only `host`; on a GPU the device's too (`None` when
/// it cannot be measured, e.g. Metal: then only host RAM is checked, and the printout says so).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub target: Target,
    pub device_name: String,
    pub device: Option<Memory>,
    pub host: Option<Memory>,
}

pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `80GiB`, `80G`, `80GB`, `512MiB`, `24`: G, GB and GiB all mean 2^30 bytes (as GPU makers
/// count their 24 and 80 GB cards), M, MB and MiB 2^20; a bare number is GiB.
pub fn parse_size(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size; write e.g. 80GiB, 24G or 512MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => GIB,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * GIB,
        other => return Err(format!("unknown unit `{other}` in `{s}`; use GiB, G, GB, MiB or TiB")),
    };
    Ok(n * scale)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<f64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024.0)
    })
}

/// This machine's available RAM.
pub fn host_memory() -> Option<Memory> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(Memory { bytes: mem_available(&text)?, source: "available RAM (/proc/meminfo MemAvailable)".into() })
}

/// Total memory of CUDA device `n` as `nvidia-smi` reports it.
pub fn cuda_memory(n: usize) -> Option<Memory> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", &n.to_string()])
        .output()
        .ok()?;
    let mib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(Memory { bytes: mib * 1024.0 * 1024.0, source: format!("cuda:{n} total (nvidia-smi)") })
}

/// The budget for a run on `device` (a `run.device` value) with dtype `dtype`, with the user's
/// figures, when given, in place of measured ones.
pub fn budget(device: &str, dtype: &str, device_memory: Option<f64>, host_memory_given: Option<f64>) -> Result<Budget, String> {
    use crate::device::DeviceSpec;
    let spec = DeviceSpec::parse(device)?;
    let gpu_index = match spec {
        DeviceSpec::Cpu => None,
        DeviceSpec::Cuda(n) => Some(Some(n)),
        DeviceSpec::Metal => Some(None),
        // Auto opens CUDA, then Metal, when compiled in; a user-given device figure means a GPU.
        DeviceSpec::Auto if candle_core::utils::cuda_is_available() || device_memory.is_some() => Some(Some(0)),
        DeviceSpec::Auto if candle_core::utils::metal_is_available() => Some(None),
        DeviceSpec::Auto => None,
    };
    let dtype = crate::device::parse_dtype(dtype)?;
    let gpu = gpu_index.is_some();
    // The frozen LoRA base is loaded in the run's dtype: f32 on the CPU, bf16 on a GPU by default.
    let lora_base_bytes = match dtype {
        Some(candle_core::DType::F32) => 4.0,
        Some(_) => 2.0,
        None if gpu => 2.0,
        None => 4.0,
    };
    let given = |bytes: f64, what: &str| Memory { bytes, source: format!("{what} given on the command line") };
    let host = host_memory_given.map(|b| given(b, "host memory")).or_else(host_memory);
    let (device_name, device_mem) = match gpu_index {
        None => ("cpu".to_string(), None),
        Some(idx) => {
            let name = match idx {
                Some(n) => format!("cuda:{n}"),
                None => "metal".to_string(),
            };
            let m = device_memory.map(|b| given(b, "device memory")).or_else(|| idx.and_then(cuda_memory));
            (name, m)
        }
    };
    Ok(Budget { target: Target { gpu, lora_base_bytes }, device_name, device: device_mem, host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("80GiB").unwrap(), 80.0 * GIB);
        assert_eq!(parse_size("24G").unwrap(), 24.0 * GIB);
        assert_eq!(parse_size("24 GB").unwrap(), 24.0 * GIB);
        assert_eq!(parse_size("512MiB").unwrap(), 512.0 * 1024.0 * 1024.0);
        assert_eq!(parse_size("1.5").unwrap(), 1.5 * GIB);
        assert!(parse_size("lots").unwrap_err().contains("80GiB"));
        assert!(parse_size("3 parsecs").unwrap_err().contains("unit"));
    }

    #[test]
    fn mem_available_reads_kilobytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(text), Some(20_000_000.0 * 1024.0));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_given_device_figure_means_a_gpu_and_bf16_lora_base() {
        let b = budget("auto", "auto", Some(80.0 * GIB), Some(512.0 * GIB)).unwrap();
        assert!(b.target.gpu);
        assert_eq!(b.target.lora_base_bytes, 2.0);
        assert_eq!(b.device.unwrap().bytes, 80.0 * GIB);
        let cpu = budget("cpu", "auto", None, Some(GIB)).unwrap();
        assert!(!cpu.target.gpu && cpu.device.is_none());
        assert_eq!(cpu.target.lora_base_bytes, 4.0);
    }
}
