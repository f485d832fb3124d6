//! How candle's CPU elementwise ops use threads in this process.
//!
//! candle 0.11 runs unary/binary maps of 64k+ elements on its own "barrier pool": the calling
//! thread busy-waits (no yield, no limit) for workers that themselves spin before parking.
//! On a machine with more runnable threads than cores — the 2-core boxes this lab runs on,
//! shared with builds and other runs — a worker is often descheduled, and the caller burns
//! its time slice waiting. Measured (perf, `bench train` on the `small` preset, 2 threads,
//! load ≈ 3): 46 % of samples in `BarrierGuard::drop`, and 3.1–3.5 s/step against
//! 0.87–1.28 s with the pool off. Matmul (gemm) and retort's own fused ops use rayon, whose
//! workers sleep, so they keep every thread.
//!
//! Default: the barrier pool is off (`CANDLE_NUM_THREADS=1`) unless the user set
//! `CANDLE_NUM_THREADS` themselves (e.g. `CANDLE_NUM_THREADS=2` on an idle machine).
//! The real fix belongs upstream (a bounded spin, then yield/park, in `BarrierGuard::drop`).
//!
//! Second: candle asks for its thread count on every matmul, and when `RAYON_NUM_THREADS` is
//! unset it counts physical cores by parsing `/proc/cpuinfo`, uncached — each call. Measured
//! (perf, `bench generate` on the `tiny` preset, variable unset): about 20 % of samples in
//! `show_cpuinfo`, `vsnprintf` and the parsing around them. So `RAYON_NUM_THREADS` defaults to
//! the number of CPUs this process may use (what rayon's own pool uses when it is unset),
//! which candle then reads as a plain variable. A user setting wins. Upstream fix: cache the
//! count in a `OnceLock` like candle's CPU-mask lookups.

/// The `CANDLE_NUM_THREADS` value to set, given the one in the environment (None: leave it).
fn candle_threads_to_set(current: Option<std::ffi::OsString>) -> Option<&'static str> {
    match current {
        Some(_) => None,
        None => Some("1"),
    }
}

/// The `RAYON_NUM_THREADS` value to set, given the one in the environment and the CPUs this
/// process may run on (None: leave it).
fn rayon_threads_to_set(current: Option<std::ffi::OsString>, available: usize) -> Option<String> {
    match current {
        Some(_) => None,
        None => Some(available.max(1).to_string()),
    }
}

/// Apply the default. Call first thing in `main`, before any thread exists and before candle
/// initialises its pool (it reads the variable once).
pub fn configure() {
    if let Some(v) = candle_threads_to_set(std::env::var_os("CANDLE_NUM_THREADS")) {
        // Setting the environment is sound here: no other thread is running yet.
        std::env::set_var("CANDLE_NUM_THREADS", v);
    }
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    if let Some(v) = rayon_threads_to_set(std::env::var_os("RAYON_NUM_THREADS"), available) {
        // As above: no other thread exists yet.
        std::env::set_var("RAYON_NUM_THREADS", v);
    }
}

/// Runs `f` on a thread of rayon's global pool and returns its result.
///
/// Why: a parallel loop started from a thread outside the pool hands its work to a pool
/// thread and sleeps until it is done — two context switches per kernel, even for a kernel
/// of one task. Decoding a tiny model is thousands of such kernels of a few microseconds:
/// measured (perf, `bench generate` on `tiny`, 2 threads) about half of all samples were the
/// scheduler (`finish_task_switch`, `sched_yield`, futex wake-ups). From inside the pool, a
/// one-task loop runs inline and a two-task loop keeps one half on the calling thread.
/// Use it around compute (a run's stage worker, the compute commands), not around a thread
/// that blocks on a terminal: that would take one of the pool's threads away from the work.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_runs_on_a_pool_thread_and_returns_its_value() {
        assert!(rayon::current_thread_index().is_none(), "the test harness thread is not a pool thread");
        let (index, value) = on_compute_pool(|| (rayon::current_thread_index(), 6 * 7));
        assert!(index.is_some(), "the closure ran outside the pool");
        assert_eq!(value, 42);
    }

    #[test]
    fn a_user_setting_wins() {
        assert_eq!(candle_threads_to_set(None), Some("1"));
        assert_eq!(candle_threads_to_set(Some("2".into())), None);
        assert_eq!(rayon_threads_to_set(None, 6).as_deref(), Some("6"));
        assert_eq!(rayon_threads_to_set(None, 0).as_deref(), Some("1"));
        assert_eq!(rayon_threads_to_set(Some("1".into()), 6), None);
    }
}
