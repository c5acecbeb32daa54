//! Keeping freed memory for reuse. Every op allocates its output and the session
//! frees it after its last use, megabytes at a time; with glibc's default settings
//! much of that memory goes back to the kernel and the next allocation faults it
//! in again page by page (about 90 000 page faults per ViT-S forward at batch 8,
//! some 15 % of the run). On glibc the CPU backend therefore raises the mmap and
//! trim thresholds once per process, so blocks up to 32 MiB are recycled from the
//! heap. Elsewhere this is a no-op. Recycled blocks come back dirty, so a zeroed
//! output is a memset on the calling thread: [`zeroed`] spreads large ones over
//! the pool.

use std::sync::Once;

/// Applies the allocator settings once; later calls do nothing.
pub(crate) fn retain_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(apply);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() {
    use std::ffi::c_int;
    // Parameter numbers from glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_TOP_PAD: c_int = -2;
    const M_MMAP_THRESHOLD: c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt only changes allocator tuning parameters; it takes plain
    // integers and is safe to call at any time from any thread.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() {}

/// Floats below which zeroing on the calling thread beats waking the pool.
const PARALLEL_ZERO_MIN: usize = 1 << 18;

/// A vector of `len` zeros, written across the rayon pool when it is large.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if len < PARALLEL_ZERO_MIN {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend((0..len).into_par_iter().map(|_| 0f32));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_gives_len_zeros_on_both_sides_of_the_threshold() {
        for len in [
            0,
            7,
            super::PARALLEL_ZERO_MIN - 1,
            super::PARALLEL_ZERO_MIN + 3,
        ] {
            let v = super::zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0));
        }
    }
}
