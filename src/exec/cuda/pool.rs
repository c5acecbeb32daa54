//! A caching allocator of plain device memory (`cuMemAlloc`, never managed
//! memory). Buffers are keyed by their size rounded up to [`GRANULE`] bytes; a
//! dropped [`Buffer`] goes back to its pool and the next request of that size
//! reuses it. Reuse is safe without synchronisation because every use of device
//! memory is enqueued on the backend's one stream: work of a later op runs after the
//! work of the op that dropped the buffer. When an allocation fails for lack of
//! memory, the cached buffers are freed and the allocation is tried once more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, CudaStream};

/// Allocation sizes are rounded up to a multiple of this many bytes.
pub(crate) const GRANULE: usize = 256;

/// The size class a request of `bytes` bytes is served from.
pub(crate) fn size_class(bytes: usize) -> usize {
    bytes.div_ceil(GRANULE) * GRANULE
}

#[derive(Default)]
struct Cache {
    free: HashMap<usize, Vec<u64>>,
    cached_bytes: usize,
    live_bytes: usize,
}

/// The device memory of one backend.
pub(crate) struct Pool {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cache: Mutex<Cache>,
}

/// One device allocation; returns to its pool when dropped.
pub(crate) struct Buffer {
    ptr: u64,
    class: usize,
    pool: Arc<Pool>,
}

impl Buffer {
    /// The device address (0 for an empty buffer).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.ptr != 0 {
            let mut cache = self.pool.lock();
            cache.live_bytes -= self.class;
            cache.cached_bytes += self.class;
            cache.free.entry(self.class).or_default().push(self.ptr);
        }
    }
}

impl Pool {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Pool {
        Pool {
            ctx,
            stream,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of at least `bytes` bytes, uninitialised.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Buffer, String> {
        if bytes == 0 {
            return Ok(Buffer {
                ptr: 0,
                class: 0,
                pool: self.clone(),
            });
        }
        let class = size_class(bytes);
        {
            let mut cache = self.lock();
            if let Some(ptr) = cache.free.get_mut(&class).and_then(Vec::pop) {
                cache.cached_bytes -= class;
                cache.live_bytes += class;
                return Ok(Buffer {
                    ptr,
                    class,
                    pool: self.clone(),
                });
            }
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context failed: {e}"))?;
        // SAFETY: a plain allocation; the pointer is freed only by `release_cached`
        // or the pool's drop, after the stream has finished with it.
        let ptr = match unsafe { cudarc::driver::result::malloc_sync(class) } {
            Ok(p) => p,
            Err(e) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.release_cached()?;
                // SAFETY: as above.
                unsafe { cudarc::driver::result::malloc_sync(class) }.map_err(|e| {
                    let live = self.lock().live_bytes;
                    format!(
                        "out of device memory allocating {} ({} in use): {e}",
                        human_bytes(class),
                        human_bytes(live)
                    )
                })?
            }
            Err(e) => return Err(format!("allocating {} failed: {e}", human_bytes(class))),
        };
        self.lock().live_bytes += class;
        Ok(Buffer {
            ptr,
            class,
            pool: self.clone(),
        })
    }

    /// Frees every cached buffer once the stream is idle.
    pub fn release_cached(&self) -> Result<(), String> {
        self.stream
            .synchronize()
            .map_err(|e| format!("the GPU reported an error: {e}"))?;
        let freed: Vec<u64> = {
            let mut cache = self.lock();
            cache.cached_bytes = 0;
            cache.free.drain().flat_map(|(_, v)| v).collect()
        };
        for ptr in freed {
            // SAFETY: the pointer came from malloc_sync, is in no live buffer, and
            // the stream has finished every use of it.
            unsafe { cudarc::driver::result::free_sync(ptr) }
                .map_err(|e| format!("freeing device memory failed: {e}"))?;
        }
        Ok(())
    }

    /// Bytes held by live buffers and by the cache.
    pub fn usage(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.live_bytes, cache.cached_bytes)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Errors cannot be reported from a drop; the memory goes with the context.
        if self.ctx.bind_to_thread().is_ok() {
            let _ = self.release_cached();
        }
    }
}

pub(crate) fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_the_granule() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(4 * 1000), 4096);
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
