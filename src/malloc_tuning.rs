//! glibc malloc settings for a process that allocates and frees the same large activation
//! buffers thousands of times per training step.
//!
//! By default glibc gives memory above its trim threshold back to the kernel as soon as the
//! top of the heap is free, and serves large blocks (above a dynamic threshold, at most
//! 32 MiB) with fresh `mmap`s that it unmaps on free. Each step then faults every page of its
//! activations in again, zeroed by the kernel: at the Qwen2.5-0.5B shape the logits, their
//! gradient and the embedding gradient alone are several GB a step, and `clear_page_erms`
//! was the top symbol of a profile. So: no `mmap` for blocks (everything from the heap, which
//! a step reuses from the previous one), and free heap memory kept up to 1 GiB.
//!
//! Measured (`bench train`, 2 threads): `tiny`, 4 interleaved pairs of 7-step medians,
//! 0.24–0.38 s/step with the defaults and 0.18–0.26 s with the heap kept; Qwen2.5-0.5B shape,
//! one step after a warm-up, 42.6 s (bwd 31.6 s) with the heap kept but large blocks mapped,
//! 34.8 s (bwd 24.2 s) without `mmap`, at 11.4 vs 11.7 GB peak RSS.
//!
//! Users can override with `GLIBC_TUNABLES=glibc.malloc.…` (read by glibc at start-up); this
//! module leaves the settings alone when that variable names any of them.

/// No block is served by `mmap` (glibc then grows the heap; a thread arena that cannot
/// fit a block retries in the main one).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_MAX: libc::c_int = 0;

/// Free memory at the top of the heap is kept up to this much (1 GiB) instead of 128 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Whether the user already chose malloc settings through glibc's tunables.
fn user_tuned(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| ["trim_threshold", "mmap_threshold", "mmap_max"].iter().any(|k| t.contains(&format!("glibc.malloc.{k}"))))
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
    unsafe { libc::mallopt(libc::M_MMAP_MAX, MMAP_MAX) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
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
        assert!(user_tuned(Some("glibc.malloc.mmap_max=1")));
        assert!(!user_tuned(Some("glibc.cpu.hwcaps=-AVX512F")));
        assert!(!user_tuned(None));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_values() {
        // mallopt returns 0 for a value it rejects: this checks both are accepted here, and
        // that a 200 MB block (far above glibc's default mmap threshold) still allocates.
        assert!(apply());
        let big = vec![1u8; 200 << 20];
        assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 200 << 20);
    }
}
