//! Moving data between host and device: new values from the pool, zero fills,
//! uploads of host tensors (asynchronous: the driver stages pageable memory before
//! the call returns, so the host data may go at once) and downloads (which wait
//! for the stream). Integer inputs that ops read on the host (shapes, axes,
//! indices, labels) come from a value's host mirror when it has one.

use crate::ir::{DType, Tensor};

use super::device::Device;
use super::value::CudaValue;

impl Device {
    /// A value of `dtype` and `dims` with uninitialised contents.
    pub(crate) fn alloc(&self, dtype: DType, dims: &[usize]) -> Result<CudaValue, String> {
        let n: usize = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("shape {dims:?} is too large"))?;
        let bytes = n
            .checked_mul(dtype.size_of())
            .ok_or_else(|| format!("shape {dims:?} is too large"))?;
        let buf = self.pool.alloc(bytes)?;
        Ok(CudaValue::new(buf, dtype, dims.to_vec()))
    }

    /// A value of zeros (all-zero bytes: 0, 0.0 or false).
    pub(crate) fn zeros(&self, dtype: DType, dims: &[usize]) -> Result<CudaValue, String> {
        let v = self.alloc(dtype, dims)?;
        self.memset(v.ptr(), 0, v.num_bytes())?;
        Ok(v)
    }

    /// Sets `bytes` bytes at `ptr` to `byte`, in stream order.
    pub(crate) fn memset(&self, ptr: u64, byte: u8, bytes: usize) -> Result<(), String> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `ptr` starts a live device buffer of at least `bytes` bytes.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, byte, bytes, self.stream.cu_stream())
        }
        .map_err(|e| format!("filling device memory failed: {e}"))
    }

    /// Copies host bytes into a device buffer, in stream order.
    pub(crate) fn write_bytes(&self, ptr: u64, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `ptr` starts a live device buffer of at least `bytes.len()` bytes;
        // a copy from pageable memory is staged before the call returns.
        unsafe { cudarc::driver::result::memcpy_htod_async(ptr, bytes, self.stream.cu_stream()) }
            .map_err(|e| format!("copying to the device failed: {e}"))
    }

    /// A new device copy of a host tensor. Integer and bool tensors keep the host
    /// tensor as their mirror; float values do not, because an optimiser may update
    /// their buffer in place (through any clone of the value).
    pub(crate) fn upload(&self, t: &Tensor) -> Result<CudaValue, String> {
        let v = self.alloc(t.dtype(), t.shape())?;
        self.write_bytes(v.ptr(), &t.to_le_bytes())?;
        Ok(if t.dtype().is_float() {
            v
        } else {
            v.with_host(t.clone())
        })
    }

    /// A device vector of i64 values (normalised indices, labels, tables).
    pub(crate) fn upload_i64(&self, values: &[i64]) -> Result<CudaValue, String> {
        let t = Tensor::vec_i64(values.to_vec());
        self.upload(&t)
    }

    /// The value as a host tensor; waits for the stream unless it has a mirror.
    pub(crate) fn download(&self, v: &CudaValue) -> Result<Tensor, String> {
        if let Some(t) = v.host() {
            return Ok(t.clone());
        }
        let mut bytes = vec![0u8; v.num_bytes()];
        if !bytes.is_empty() {
            self.bind()?;
            // SAFETY: the value's buffer holds `num_bytes` bytes; the copy is
            // complete when the stream synchronises below, before `bytes` is read.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut bytes,
                    v.ptr(),
                    self.stream.cu_stream(),
                )
            }
            .map_err(|e| format!("copying from the device failed: {e}"))?;
            self.synchronize()?;
        }
        Tensor::from_le_bytes(v.dtype(), v.dims().to_vec(), &bytes).map_err(|e| e.to_string())
    }

    /// The elements of an integer value (shapes, axes, indices, labels).
    pub(crate) fn host_ints(&self, v: &CudaValue, what: &str) -> Result<Vec<i64>, String> {
        if !v.dtype().is_int() {
            return Err(format!(
                "{what} must be an integer tensor, got {}",
                v.dtype()
            ));
        }
        Ok(self.download(v)?.to_i64_vec())
    }

    /// The elements of any value as f64 (scalar parameters).
    pub(crate) fn host_f64(&self, v: &CudaValue) -> Result<Vec<f64>, String> {
        Ok(self.download(v)?.to_f64_vec())
    }
}
