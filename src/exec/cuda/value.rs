//! The CUDA backend's value: a contiguous row-major device buffer with the IR
//! element type and shape it holds. Elements are stored as the host stores them
//! (f32, f16, bf16, i64, i32; bool as one byte 0/1), so uploads and downloads copy
//! the little-endian bytes of [`Tensor`]. Reshape-like ops share the buffer. An
//! integer or bool value uploaded from the host keeps that host tensor as a mirror
//! (shared, not copied), so shapes, indices and labels that ops read on the host
//! need no download. Only an in-place update (AdamW, on f32 values, which have no
//! mirror) writes a buffer; cloning a value shares its buffer, so every clone sees
//! such an update.

use std::fmt;
use std::sync::Arc;

use crate::exec::shapes::Operand;
use crate::ir::{DType, Tensor};

use super::pool::Buffer;

/// A tensor in GPU memory. Cloning shares the buffer.
#[derive(Clone)]
pub struct CudaValue {
    buf: Arc<Buffer>,
    dtype: DType,
    dims: Vec<usize>,
    host: Option<Tensor>,
}

impl fmt::Debug for CudaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaValue({}{:?} at {:#x})",
            self.dtype,
            self.dims,
            self.buf.ptr()
        )
    }
}

impl CudaValue {
    pub(crate) fn new(buf: Buffer, dtype: DType, dims: Vec<usize>) -> CudaValue {
        CudaValue {
            buf: Arc::new(buf),
            dtype,
            dims,
            host: None,
        }
    }

    pub(crate) fn with_host(mut self, t: Tensor) -> CudaValue {
        self.host = Some(t);
        self
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The dims and type, as the backend-neutral shape checks take them.
    pub(crate) fn operand(&self) -> Operand<'_> {
        Operand::new(self.dims(), self.dtype)
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Bytes of element data.
    pub fn num_bytes(&self) -> usize {
        self.numel() * self.dtype.size_of()
    }

    /// The device address of element 0.
    pub(crate) fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    /// The host tensor this value was uploaded from, when it still matches.
    pub(crate) fn host(&self) -> Option<&Tensor> {
        self.host.as_ref()
    }

    /// The same buffer under another shape with the same element count.
    pub(crate) fn reshaped(&self, dims: Vec<usize>) -> Result<CudaValue, String> {
        let n: usize = dims.iter().product();
        if n != self.numel() {
            return Err(format!("internal: cannot view {:?} as {dims:?}", self.dims));
        }
        let host = match &self.host {
            Some(t) => Some(t.reshaped(dims.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(CudaValue {
            buf: self.buf.clone(),
            dtype: self.dtype,
            dims,
            host,
        })
    }

    /// Forgets the host mirror before the buffer is written in place.
    pub(crate) fn drop_host(&mut self) {
        self.host = None;
    }
}
