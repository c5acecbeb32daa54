//! MatMul (numpy semantics) and Gemm through cuBLAS. A MatMul whose right operand
//! has no batch dims of its own folds the left operand's batch into one tall
//! product; a shared left operand becomes a strided-batched product with stride 0;
//! other batches are broadcast to full size (a copy only when an operand
//! broadcasts) and run strided-batched. Gemm starts from C broadcast to the output
//! when beta is non-zero.

use crate::ir::{DType, GemmAttrs};

use super::blas::Mat;
use super::copy::{broadcast_to, read_into};
use super::device::Device;
use super::layout::{broadcast_strides, sh};
use super::value::CudaValue;
use crate::exec::shapes::{gemm_shape, matmul_shape};

/// The operand as a full batch of matrices `batch + [rows, cols]`.
fn full_batch(
    dev: &Device,
    v: &CudaValue,
    own_batch: &[usize],
    batch: &[usize],
    mat: [usize; 2],
) -> Result<CudaValue, String> {
    let mut own = own_batch.to_vec();
    own.extend(mat);
    let viewed = v.reshaped(own)?;
    if own_batch == batch {
        return Ok(viewed);
    }
    let mut full = batch.to_vec();
    full.extend(mat);
    broadcast_to(dev, &viewed, &full)
}

pub(crate) fn matmul(dev: &Device, a: &CudaValue, b: &CudaValue) -> Result<CudaValue, String> {
    let s = matmul_shape(a.dims(), b.dims())?;
    let out = dev.alloc(DType::F32, &s.out)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (m, k, n) = (s.m, s.k, s.n);
    let nb: usize = s.batch.iter().product();
    let ones = |d: &[usize]| d.iter().all(|&x| x == 1);
    if ones(&s.b_batch) {
        // The broadcast batch is a's own, so a is one contiguous (nb·m) × k matrix.
        return dev
            .gemm(
                (nb * m, n, k),
                1.0,
                Mat::rows(a.ptr(), k),
                Mat::rows(b.ptr(), n),
                0.0,
                Mat::rows(out.ptr(), n),
                1,
            )
            .map(|_| out);
    }
    let c = Mat::rows(out.ptr(), n).stride(m * n);
    if ones(&s.a_batch) {
        dev.gemm(
            (m, n, k),
            1.0,
            Mat::rows(a.ptr(), k).stride(0),
            Mat::rows(b.ptr(), n).stride(k * n),
            0.0,
            c,
            nb,
        )?;
        return Ok(out);
    }
    let af = full_batch(dev, a, &s.a_batch, &s.batch, [m, k])?;
    let bf = full_batch(dev, b, &s.b_batch, &s.batch, [k, n])?;
    dev.gemm(
        (m, n, k),
        1.0,
        Mat::rows(af.ptr(), k).stride(m * k),
        Mat::rows(bf.ptr(), n).stride(k * n),
        0.0,
        c,
        nb,
    )?;
    Ok(out)
}

/// Gemm: `alpha·A'·B' + beta·C` with A', B' optionally transposed, C broadcast to
/// the output.
pub(crate) fn gemm(
    dev: &Device,
    attrs: &GemmAttrs,
    a: &CudaValue,
    b: &CudaValue,
    c: Option<&CudaValue>,
) -> Result<CudaValue, String> {
    let (m, k, n) = gemm_shape(attrs, a.dims(), b.dims(), c.map(CudaValue::dims))?;
    let dims = [m, n];
    let out = dev.alloc(DType::F32, &dims)?;
    let beta = match c {
        Some(c) if attrs.beta != 0.0 => {
            let strides = broadcast_strides(c.dims(), &dims).ok_or_else(|| {
                format!(
                    "C of shape {} does not broadcast to [{m},{n}]",
                    sh(c.dims())
                )
            })?;
            read_into(dev, &out, c, &dims, &strides, 0)?;
            attrs.beta
        }
        _ => 0.0,
    };
    let mut am = Mat::rows(a.ptr(), a.dims()[1]);
    am.trans = attrs.trans_a;
    let mut bm = Mat::rows(b.ptr(), b.dims()[1]);
    bm.trans = attrs.trans_b;
    dev.gemm(
        (m, n, k),
        attrs.alpha,
        am,
        bm,
        beta,
        Mat::rows(out.ptr(), n),
        1,
    )?;
    Ok(out)
}
