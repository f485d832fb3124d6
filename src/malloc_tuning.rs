//! glibc malloc settings for a process that allocates and frees the same large activation
//! buffers thousands of times per training step.
//!
//! By default glibc gives memory above its trim threshold back to the kernel as soon as the
//! top of the heap is free, and serves blocks above a (dynamic) mmap threshold with fresh
//! `mmap`s. Each step then faults every page of its activations in again, zeroed by the
//! kernel. Measured (`bench train` on the `tiny` preset, 2 threads, 4 interleaved pairs of
//! 7-step medians): 0.24–0.38 s/step with the defaults, 0.18–0.26 s with the heap kept and
//! blocks up to 32 MiB taken from it; peak RSS unchanged (105 MiB), since a step reuses what
//! the previous one freed. Blocks above 32 MiB (glibc's limit for this setting), such as
//! full-vocabulary logits, still come from `mmap`.
//!
//! Users can override with `GLIBC_TUNABLES=glibc.malloc.trim_threshold=…` (read by glibc at
//! start-up); this module leaves the settings alone when that variable names them.

/// The largest mmap threshold glibc accepts on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;

/// Free memory at the top of the heap is kept up to this much (1 GiB) instead of 128 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Whether the user already chose malloc settings through glibc's tunables.
fn user_tuned(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| t.contains("glibc.malloc.trim_threshold") || t.contains("glibc.malloc.mmap_threshold"))
}

/// Applies the settings; returns whether glibc accepted them (false elsewhere, or when the
/// user set them). Call early in `main`, before large allocations.
pub fn configure() -> bool {
    if user_tuned(std::env::var("GLIBC_TUNABLES").ok().as_deref()) {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate (and glibc locks its arena for the call in any case).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_tunables_win() {
        assert!(user_tuned(Some("glibc.malloc.trim_threshold=0")));
        assert!(user_tuned(Some("glibc.cpu.x=1:glibc.malloc.mmap_threshold=65536")));
        assert!(!user_tuned(Some("glibc.cpu.hwcaps=-AVX512F")));
        assert!(!user_tuned(None));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_values() {
        // mallopt rejects an mmap threshold above its maximum (returns 0): this checks the
        // constants are in range on this glibc.
        assert!(apply());
    }
}
