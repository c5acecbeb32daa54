//! cuBLAS for every f32 matrix product of the backend. Our matrices are row-major
//! and cuBLAS is column-major, so a row-major `C = op(A)·op(B)` is issued as the
//! column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the operands swap places and each keeps its
//! own transpose flag, with the row strides as leading dimensions. Batched products
//! use the strided-batched call (split into pieces of at most 65535). TF32 tensor
//! ops are switched on per handle when the options ask for them.

use std::sync::{Arc, Mutex};

use cudarc::cublas::sys::{cublasHandle_t, cublasMath_t, cublasOperation_t};
use cudarc::driver::{CudaContext, CudaStream};

use super::device::{CudaError, Device};
use super::kernels;
use super::launch::{Arg, Grid, len};

struct Handle(cublasHandle_t);

// SAFETY: the handle is only used under the mutex, with the context bound.
unsafe impl Send for Handle {}

/// The backend's cuBLAS handle, bound to its stream.
pub(crate) struct Blas {
    ctx: Arc<CudaContext>,
    handle: Mutex<Handle>,
}

impl Blas {
    pub fn new(ctx: &Arc<CudaContext>, stream: &CudaStream, tf32: bool) -> Result<Blas, CudaError> {
        let fail = |what: &str, e: cudarc::cublas::result::CublasError| {
            CudaError::Blas(format!("{what} failed: {e}"))
        };
        ctx.bind_to_thread()
            .map_err(|e| CudaError::Driver(e.to_string()))?;
        let handle =
            cudarc::cublas::result::create_handle().map_err(|e| fail("creating a handle", e))?;
        let blas = Blas {
            ctx: ctx.clone(),
            handle: Mutex::new(Handle(handle)),
        };
        // SAFETY: a live handle and the backend's live stream.
        unsafe { cudarc::cublas::result::set_stream(handle, stream.cu_stream() as _) }
            .map_err(|e| fail("binding the stream", e))?;
        let mode = if tf32 {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a live handle.
        unsafe { cudarc::cublas::sys::cublasSetMathMode(handle, mode) }
            .result()
            .map_err(|e| fail("setting the math mode", e))?;
        Ok(blas)
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        let handle = self.handle.get_mut().unwrap_or_else(|e| e.into_inner());
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the handle is live and destroyed once; errors cannot be
            // reported from a drop.
            let _ = unsafe { cudarc::cublas::result::destroy_handle(handle.0) };
        }
    }
}

/// One row-major operand of a product: element (i, j) of the stored matrix is at
/// `ptr + (i·ld + j)·4`; `trans` multiplies by its transpose; `stride` is the
/// distance in elements between batch entries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub ptr: u64,
    pub ld: usize,
    pub trans: bool,
    pub stride: usize,
}

impl Mat {
    /// A contiguous row-major matrix with `cols` columns.
    pub fn rows(ptr: u64, cols: usize) -> Mat {
        Mat {
            ptr,
            ld: cols,
            trans: false,
            stride: 0,
        }
    }

    /// The same matrix, multiplied transposed.
    pub fn t(self) -> Mat {
        Mat {
            trans: !self.trans,
            ..self
        }
    }

    /// The same matrix with row stride `ld`.
    pub fn ld(self, ld: usize) -> Mat {
        Mat { ld, ..self }
    }

    /// The same matrix repeated every `stride` elements in a batch.
    pub fn stride(self, stride: usize) -> Mat {
        Mat { stride, ..self }
    }
}

/// Most batch entries one strided-batched call gets.
const MAX_BATCH: usize = 65_535;

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} = {v} is too large for cuBLAS"))
}

fn op(trans: bool) -> cublasOperation_t {
    if trans {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// The column-major call a row-major product becomes: (first operand, second
/// operand, cuBLAS m, cuBLAS n).
pub(crate) fn column_major(a: Mat, b: Mat, m: usize, n: usize) -> (Mat, Mat, usize, usize) {
    (b, a, n, m)
}

impl Device {
    /// `C = alpha·op(A)·op(B) + beta·C` for `batch` row-major products of size
    /// `m × n` with inner size `k`. With beta 0, C's old contents are ignored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: Mat,
        b: Mat,
        beta: f32,
        c: Mat,
        batch: usize,
    ) -> Result<(), String> {
        if m == 0 || n == 0 || batch == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.scale_output(c, m, n, batch, beta);
        }
        let (first, second, cm, cn) = column_major(a, b, m, n);
        let dims = (int(cm, "m")?, int(cn, "n")?, int(k, "k")?);
        let lds = (
            int(first.ld.max(1), "lda")?,
            int(second.ld.max(1), "ldb")?,
            int(c.ld.max(1), "ldc")?,
        );
        self.bind()?;
        let handle = self.blas.handle.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0;
        while done < batch {
            let count = (batch - done).min(MAX_BATCH);
            let at = |x: Mat| x.ptr + (done * x.stride * 4) as u64;
            // SAFETY: the pointers are live device buffers holding every element
            // the product reads and writes (each caller sizes them for m, n, k,
            // the leading dimensions, strides and batch); alpha and beta are host
            // values that outlive the call.
            let status = unsafe {
                if batch == 1 {
                    cudarc::cublas::result::sgemm(
                        handle.0,
                        op(first.trans),
                        op(second.trans),
                        dims.0,
                        dims.1,
                        dims.2,
                        &alpha,
                        at(first) as *const f32,
                        lds.0,
                        at(second) as *const f32,
                        lds.1,
                        &beta,
                        at(c) as *mut f32,
                        lds.2,
                    )
                } else {
                    cudarc::cublas::result::sgemm_strided_batched(
                        handle.0,
                        op(first.trans),
                        op(second.trans),
                        dims.0,
                        dims.1,
                        dims.2,
                        &alpha,
                        at(first) as *const f32,
                        lds.0,
                        first.stride as i64,
                        at(second) as *const f32,
                        lds.1,
                        second.stride as i64,
                        &beta,
                        at(c) as *mut f32,
                        lds.2,
                        c.stride as i64,
                        count as i32,
                    )
                }
            };
            status.map_err(|e| {
                format!("cuBLAS product ({m}×{k} by {k}×{n}, batch {batch}) failed: {e}")
            })?;
            done += count;
        }
        Ok(())
    }

    /// The product of an empty inner dimension: `C = beta·C` (zeros for beta 0).
    fn scale_output(
        &self,
        c: Mat,
        m: usize,
        n: usize,
        batch: usize,
        beta: f32,
    ) -> Result<(), String> {
        let contiguous = c.ld == n && (batch == 1 || c.stride == m * n);
        if !contiguous {
            return Err("internal: an empty product into a strided output".into());
        }
        let count = m * n * batch;
        if beta == 0.0 {
            self.memset(c.ptr, 0, count * 4)
        } else {
            self.launch(
                &kernels::SCALE,
                Grid::Elems(count),
                &[Arg::Ptr(c.ptr), len(count), Arg::F32(beta)],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major product of the operands as cuBLAS sees them: reads `x` (rows
    /// × cols col-major with leading dimension `ld`, transposed when asked).
    fn col_major_get(data: &[f32], ld: usize, trans: bool, r: usize, c: usize) -> f32 {
        if trans {
            data[r * ld + c]
        } else {
            data[c * ld + r]
        }
    }

    /// Emulates what cuBLAS computes for the column-major call the row-major
    /// request becomes, and checks it against a direct row-major product.
    #[test]
    fn the_transpose_identity_computes_row_major_products() {
        let (m, n, k) = (2usize, 3usize, 4usize);
        let a_rm: Vec<f32> = (0..m * k).map(|v| v as f32 + 1.0).collect(); // m×k
        let b_rm: Vec<f32> = (0..k * n).map(|v| (v as f32) * 0.5 - 1.0).collect(); // k×n
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a_rm[i * k + p] * b_rm[p * n + j]).sum();
            }
        }
        // Stored transposed: Aᵀ as k×m row-major, Bᵀ as n×k row-major.
        let mut at = vec![0f32; k * m];
        let mut bt = vec![0f32; n * k];
        for i in 0..m {
            for p in 0..k {
                at[p * m + i] = a_rm[i * k + p];
            }
        }
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b_rm[p * n + j];
            }
        }
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a_data, a_ld) = if ta { (&at, m) } else { (&a_rm, k) };
            let (b_data, b_ld) = if tb { (&bt, k) } else { (&b_rm, n) };
            let a = Mat {
                ptr: 0,
                ld: a_ld,
                trans: ta,
                stride: 0,
            };
            let b = Mat {
                ptr: 1,
                ld: b_ld,
                trans: tb,
                stride: 0,
            };
            let (first, second, cm, cn) = column_major(a, b, m, n);
            assert_eq!((first.ptr, second.ptr, cm, cn), (1, 0, n, m));
            // cuBLAS: C (cm×cn, ld cm) = op(first) (cm×k) · op(second) (k×cn).
            let mut c = vec![0f32; cm * cn];
            for r in 0..cm {
                for col in 0..cn {
                    c[col * cm + r] = (0..k)
                        .map(|p| {
                            col_major_get(b_data, first.ld, first.trans, r, p)
                                * col_major_get(a_data, second.ld, second.trans, p, col)
                        })
                        .sum();
                }
            }
            // The column-major n×m result with ld n is the row-major m×n C.
            assert_eq!(c, want, "trans_a {ta} trans_b {tb}");
        }
    }
}
