//! The CUDA device a backend computes on: the library probe, the options, the
//! error type, and [`Device`], which owns the context, the backend's one stream,
//! the cuBLAS handle, the buffer pool and the compiled kernels. Every op of the
//! backend reaches the GPU through a `Device`; everything it enqueues runs in
//! stream order, and only downloads and [`Device::synchronize`] wait for it.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream};

use super::blas::Blas;
use super::compile::Kernels;
use super::pool::Pool;

/// Settings of a [`super::CudaBackend`].
#[derive(Clone, Debug, Default)]
pub struct CudaOptions {
    /// Let cuBLAS use TF32 tensor cores for f32 products (faster, about 1e-3
    /// relative error).
    pub tf32: bool,
    /// Folder of the compiled-kernel cache; `None` picks `$GLORA_KERNEL_CACHE`,
    /// `$XDG_CACHE_HOME/glora/kernels` or `$HOME/.cache/glora/kernels`.
    pub kernel_cache: Option<PathBuf>,
}

/// Why the CUDA backend could not start or compile its kernels. Messages are one
/// line.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "no CUDA driver found: could not load libcuda.so.1 (also tried {tried}); install the NVIDIA driver, or run on the CPU"
    )]
    NoDriver { tried: String },
    #[error(
        "CUDA library {lib} not found (tried {tried}); add the folder that holds it to the library path, e.g. LD_LIBRARY_PATH=/usr/local/cuda/lib64"
    )]
    MissingLibrary { lib: &'static str, tried: String },
    #[error("CUDA device {ordinal} does not exist: this machine has {count} CUDA device(s)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    #[error("cuBLAS: {0}")]
    Blas(String),
}

/// The CUDA libraries the backend loads at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Library {
    Driver,
    Nvrtc,
    Cublas,
}

impl Library {
    /// The file name the error message leads with, and the others tried.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Library::Driver => ("libcuda.so.1", "libcuda.so"),
            Library::Nvrtc => ("libnvrtc.so.13", "libnvrtc.so, libnvrtc.so.12"),
            Library::Cublas => ("libcublas.so.13", "libcublas.so, libcublas.so.12"),
        }
    }

    fn present(self) -> bool {
        // SAFETY: each call only tries to dlopen the library's candidate names.
        unsafe {
            match self {
                Library::Driver => cudarc::driver::sys::is_culib_present(),
                Library::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Library::Cublas => cudarc::cublas::sys::is_culib_present(),
            }
        }
    }

    /// The error for a library that cannot be loaded.
    fn missing(self) -> CudaError {
        let (lib, others) = self.names();
        match self {
            Library::Driver => CudaError::NoDriver {
                tried: others.to_string(),
            },
            _ => CudaError::MissingLibrary {
                lib,
                tried: format!("{lib}, {others}"),
            },
        }
    }
}

/// Loads `lib` if it is present; cudarc panics on a missing library, so every
/// path into cudarc checks first.
pub(crate) fn require(lib: Library) -> Result<(), CudaError> {
    if lib.present() {
        Ok(())
    } else {
        Err(lib.missing())
    }
}

/// Checks that the driver, NVRTC and cuBLAS libraries can be loaded, without
/// panicking.
pub fn probe() -> Result<(), CudaError> {
    require(Library::Driver)?;
    require(Library::Nvrtc)?;
    require(Library::Cublas)
}

/// One GPU as the backend uses it.
pub(crate) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: Blas,
    pub pool: Arc<Pool>,
    pub kernels: Kernels,
    /// `sm_XY` of the device's compute capability.
    pub arch: String,
    pub name: String,
    pub total_mem: usize,
    pub sm_count: u32,
    /// Synchronise after every node, so that a failing kernel is reported at the
    /// node that launched it (set `GLORA_CUDA_SYNC=1`).
    pub sync_each: bool,
}

fn driver(e: impl std::fmt::Display) -> CudaError {
    CudaError::Driver(e.to_string())
}

impl Device {
    pub fn new(ordinal: usize, opts: &CudaOptions) -> Result<Device, CudaError> {
        require(Library::Driver)?;
        require(Library::Nvrtc)?;
        require(Library::Cublas)?;
        cudarc::driver::result::init().map_err(driver)?;
        let count = CudaContext::device_count().map_err(driver)?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        // One stream and no cross-stream sharing: cudarc's per-buffer events are
        // not needed (the backend does not use cudarc's buffers anyway).
        // SAFETY: nothing else uses this context's buffers on another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().map_err(driver)?;
        let total_mem = ctx.total_mem().map_err(driver)?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver)?;
        let blas = Blas::new(&ctx, &stream, opts.tf32)?;
        let pool = Arc::new(Pool::new(ctx.clone(), stream.clone()));
        let kernels = Kernels::new(ctx.clone(), arch.clone(), opts.kernel_cache.clone());
        let sync_each = std::env::var("GLORA_CUDA_SYNC").is_ok_and(|v| !v.is_empty() && v != "0");
        Ok(Device {
            ctx,
            stream,
            blas,
            pool,
            kernels,
            arch,
            name,
            total_mem,
            sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
            sync_each,
        })
    }

    /// "NVIDIA H200 (sm_90, 139.8 GiB)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {:.1} GiB)",
            self.name,
            self.arch,
            self.total_mem as f64 / (1u64 << 30) as f64
        )
    }

    /// Makes the context current on the calling thread; every entry point calls it
    /// before using the raw driver API.
    pub fn bind(&self) -> Result<(), String> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context failed: {e}"))
    }

    /// Waits for everything enqueued so far.
    pub fn synchronize(&self) -> Result<(), String> {
        self.stream
            .synchronize()
            .map_err(|e| format!("the GPU reported an error: {e}"))
    }
}
