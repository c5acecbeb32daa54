//! MatMul (numpy semantics: 1-D promotion, broadcast batch dimensions) and Gemm.
//! Float products go to our packed AVX2 product (`sgemm`) on CPUs whose widest
//! level is AVX2 (all but the thin ones), else to the `gemm` crate (its AVX-512
//! kernels), both reading the operands through their strides, so transposed views
//! need no copy. A batch whose
//! right operand is shared is folded into one tall product; other batches (the
//! attention products) run one single-threaded product per batch entry across the
//! rayon pool, which beats parallelising each small product. Integer products use a
//! plain loop.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::exec::shapes::{self, MatMulShape};
use crate::ir::GemmAttrs;

use super::sgemm;
use super::strided::{Strided, map1};
use super::value::{CpuValue, OpError, OpResult, bail};

/// Products with at least this many multiply-adds let gemm use several threads.
const PAR_MIN_FLOPS: usize = 1 << 18;

/// One matrix inside a buffer: element (i, j) at `offset + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: isize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix with `cols` columns.
    pub(crate) fn row_major(data: &'a [f32], cols: usize) -> MatRef<'a> {
        MatRef {
            data,
            offset: 0,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// Whether every element of a `rows × cols` matrix lies inside the buffer.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let mut lo = self.offset;
        let mut hi = self.offset;
        for span in [(rows as isize - 1) * self.rs, (cols as isize - 1) * self.cs] {
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        lo >= 0 && hi < self.data.len() as isize
    }
}

/// `dst = dst_scale·dst + prod_scale·(a × b)` for an `m × k` by `k × n` product;
/// `dst` is a contiguous `m × n` row-major matrix. With `dst_scale` `None` the old
/// contents of `dst` are ignored.
pub(crate) fn gemm_into(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: MatRef<'_>,
    b: MatRef<'_>,
    prod_scale: f32,
    dst_scale: Option<f32>,
    parallel: bool,
) -> OpResult<()> {
    if dst.len() != m * n || !a.fits(m, k) || !b.fits(k, n) {
        bail!("internal: matrix product operands out of bounds");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        let s = dst_scale.unwrap_or(0.0);
        dst.iter_mut().for_each(|d| *d *= s);
        if dst_scale.is_none() {
            dst.fill(0.0);
        }
        return Ok(());
    }
    let parallel = parallel && m * n * k >= PAR_MIN_FLOPS;
    let at = |v: &MatRef<'_>| (v.data.as_ptr().wrapping_offset(v.offset), v.rs, v.cs);
    if sgemm::enabled() && sgemm::suits(m, n) {
        // SAFETY: `enabled` checked the CPU; `fits` checked that every element of
        // both operands lies inside its buffer; `dst` is m·n and m, n, k are non-zero.
        unsafe {
            sgemm::gemm(
                dst,
                (m, n, k),
                at(&a),
                at(&b),
                prod_scale,
                dst_scale,
                parallel,
            )
        };
        return Ok(());
    }
    let par = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: `fits` checked that every element gemm reads through these pointers and
    // strides lies inside `a.data` and `b.data`, and `dst` is exactly m·n elements
    // written with row stride n and column stride 1. The slices outlive the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            dst_scale.is_some(),
            a.data.as_ptr().offset(a.offset),
            a.cs,
            a.rs,
            b.data.as_ptr().offset(b.offset),
            b.cs,
            b.rs,
            dst_scale.unwrap_or(0.0),
            prod_scale,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

fn matmul_shape(a: &[usize], b: &[usize]) -> OpResult<MatMulShape> {
    shapes::matmul_shape(a, b).map_err(OpError)
}

/// A view of `v` as a batch of matrices `batch + [rows, cols]`, 1-D operands promoted.
fn as_matrices<'a, T: Copy>(
    v: &Strided<'a, T>,
    batch: &[usize],
    rows: usize,
    cols: usize,
    vector_is_row: bool,
) -> OpResult<Strided<'a, T>> {
    let promoted = if v.rank() == 1 {
        let s = v.strides[0];
        let (dims, strides) = if vector_is_row {
            (vec![1, v.dims[0]], vec![0, s])
        } else {
            (vec![v.dims[0], 1], vec![s, 0])
        };
        Strided::new(v.data, v.offset, dims, strides)?
    } else {
        v.clone()
    };
    let mut dims = batch.to_vec();
    dims.extend([rows, cols]);
    promoted.broadcast_to(&dims)
}

/// A float MatMul as a row-major vector and its shape, for kernels that go on
/// working on the product in place.
pub(crate) fn matmul_f32(a: &CpuValue, b: &CpuValue) -> OpResult<(Vec<f32>, Vec<usize>)> {
    let s = matmul_shape(a.dims(), b.dims())?;
    let out = a.read_f32(|va| {
        b.read_f32(|vb| {
            let va = as_matrices(&va, &s.batch, s.m, s.k, true)?;
            let vb = as_matrices(&vb, &s.batch, s.k, s.n, false)?;
            batched_f32(&va, &vb, &s)
        })
    })?;
    Ok((out, s.out))
}

pub(crate) fn matmul(a: &CpuValue, b: &CpuValue) -> OpResult<CpuValue> {
    if a.dtype() != b.dtype() {
        bail!("operand types differ: {} and {}", a.dtype(), b.dtype());
    }
    let s = matmul_shape(a.dims(), b.dims())?;
    let dtype = a.dtype();
    if dtype.is_float() {
        let (out, dims) = matmul_f32(a, b)?;
        CpuValue::from_f32(out, &dims, dtype)
    } else if dtype.is_int() {
        let out = a.read_i64(|va| {
            b.read_i64(|vb| {
                let va = as_matrices(&va, &s.batch, s.m, s.k, true)?;
                let vb = as_matrices(&vb, &s.batch, s.k, s.n, false)?;
                Ok(batched_i64(&va, &vb, &s))
            })
        })?;
        CpuValue::from_i64(out, &s.out, dtype)
    } else {
        bail!("not defined on {dtype}")
    }
}

/// Offsets of each batch entry in a view whose leading dims are `batch`.
fn batch_offsets<T>(v: &Strided<'_, T>, batch: &[usize]) -> Vec<isize> {
    let nb: usize = batch.iter().product();
    (0..nb)
        .map(|mut i| {
            let mut off = v.offset;
            for d in (0..batch.len()).rev() {
                off += (i % batch[d]) as isize * v.strides[d];
                i /= batch[d];
            }
            off
        })
        .collect()
}

/// The row stride when the batch dims and the row dim of `v` form one evenly
/// strided run of rows, so that the whole batch is one tall matrix.
fn folded_row_stride<T: Copy>(v: &Strided<'_, T>) -> Option<isize> {
    let r = v.rank();
    let mut run: Option<(usize, isize)> = None;
    for i in 0..r - 1 {
        let (d, s) = (v.dims[i], v.strides[i]);
        if d == 1 {
            continue;
        }
        if let Some((_, prev_s)) = run
            && prev_s != s * d as isize
        {
            return None;
        }
        run = Some((d, s));
    }
    Some(run.map_or(v.strides[r - 2], |(_, s)| s))
}

fn batched_f32(a: &Strided<'_, f32>, b: &Strided<'_, f32>, s: &MatMulShape) -> OpResult<Vec<f32>> {
    let (m, k, n) = (s.m, s.k, s.n);
    let nb: usize = s.batch.iter().product();
    let mut out = super::alloc::zeroed(nb * m * n);
    if out.is_empty() {
        return Ok(out);
    }
    let r = a.rank();
    fn mat<'a>(v: &Strided<'a, f32>, offset: isize, rs: isize) -> MatRef<'a> {
        MatRef {
            data: v.data,
            offset,
            rs,
            cs: v.strides[v.strides.len() - 1],
        }
    }
    let b_shared = b.strides[..r - 2].iter().all(|&st| st == 0);
    if b_shared && let Some(rs) = folded_row_stride(a) {
        // One tall (nb·m) × k product against the shared right operand.
        return gemm_into(
            &mut out,
            (nb * m, n, k),
            mat(a, a.offset, rs),
            mat(b, b.offset, b.strides[r - 2]),
            1.0,
            None,
            true,
        )
        .map(|_| out);
    }
    let a_offs = batch_offsets(a, &s.batch);
    let b_offs = batch_offsets(b, &s.batch);
    let threads = rayon::current_num_threads();
    let across_batch = nb > 1 && (nb >= 2 * threads || nb.is_multiple_of(threads));
    let one = |i: usize, dst: &mut [f32], parallel: bool| {
        gemm_into(
            dst,
            (m, n, k),
            mat(a, a_offs[i], a.strides[r - 2]),
            mat(b, b_offs[i], b.strides[r - 2]),
            1.0,
            None,
            parallel,
        )
    };
    if across_batch {
        out.par_chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(i, dst)| one(i, dst, false))?;
    } else {
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            one(i, dst, true)?;
        }
    }
    Ok(out)
}

fn batched_i64(a: &Strided<'_, i64>, b: &Strided<'_, i64>, s: &MatMulShape) -> Vec<i64> {
    let (m, k, n) = (s.m, s.k, s.n);
    let nb: usize = s.batch.iter().product();
    let r = a.rank();
    let a_offs = batch_offsets(a, &s.batch);
    let b_offs = batch_offsets(b, &s.batch);
    let (ars, acs, brs, bcs) = (
        a.strides[r - 2],
        a.strides[r - 1],
        b.strides[r - 2],
        b.strides[r - 1],
    );
    let mut out = vec![0i64; nb * m * n];
    for (bi, dst) in out.chunks_mut((m * n).max(1)).enumerate().take(nb) {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i64;
                for p in 0..k {
                    let x = a.data[(a_offs[bi] + i as isize * ars + p as isize * acs) as usize];
                    let y = b.data[(b_offs[bi] + p as isize * brs + j as isize * bcs) as usize];
                    acc = acc.wrapping_add(x.wrapping_mul(y));
                }
                dst[i * n + j] = acc;
            }
        }
    }
    out
}

/// Gemm: `alpha·A'·B' + beta·C` with A' and B' optionally transposed, C broadcast
/// to the output.
pub(crate) fn gemm_op(
    attrs: &GemmAttrs,
    a: &CpuValue,
    b: &CpuValue,
    c: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    let (m, k, n) =
        shapes::gemm_shape(attrs, a.dims(), b.dims(), c.map(CpuValue::dims)).map_err(OpError)?;
    if a.dtype() != b.dtype() || c.is_some_and(|c| c.dtype() != a.dtype()) {
        bail!("operand types differ");
    }
    let dims = [m, n];
    let dtype = a.dtype();
    if dtype.is_float() {
        let dst = gemm_f32(attrs, a, b, c, (m, n, k))?;
        return CpuValue::from_f32(dst, &dims, dtype);
    }
    if !dtype.is_int() {
        bail!("not defined on {dtype}");
    }
    let prod = a.read_i64(|va| {
        b.read_i64(|vb| {
            let va = if attrs.trans_a {
                va.permuted(&[1, 0])
            } else {
                va
            };
            let vb = if attrs.trans_b {
                vb.permuted(&[1, 0])
            } else {
                vb
            };
            let s = MatMulShape {
                batch: vec![],
                a_batch: vec![],
                b_batch: vec![],
                m,
                k,
                n,
                out: dims.to_vec(),
            };
            Ok(batched_i64(&va, &vb, &s))
        })
    })?;
    let (alpha, beta) = (attrs.alpha as i64, attrs.beta as i64);
    let out = match c {
        Some(c) => {
            let cv = c.read_i64(|vc| Ok(map1(&dims, &vc.broadcast_to(&dims)?, |x| x)))?;
            prod.iter()
                .zip(cv)
                .map(|(&p, c)| alpha.wrapping_mul(p).wrapping_add(beta.wrapping_mul(c)))
                .collect()
        }
        None => prod.iter().map(|&p| alpha.wrapping_mul(p)).collect(),
    };
    CpuValue::from_i64(out, &dims, dtype)
}

/// The float Gemm of checked operands as a row-major `m × n` vector.
pub(crate) fn gemm_f32(
    attrs: &GemmAttrs,
    a: &CpuValue,
    b: &CpuValue,
    c: Option<&CpuValue>,
    (m, n, k): (usize, usize, usize),
) -> OpResult<Vec<f32>> {
    fn transposed(v: Strided<'_, f32>, t: bool) -> Strided<'_, f32> {
        if t { v.permuted(&[1, 0]) } else { v }
    }
    let dims = [m, n];
    let mut dst = match c {
        Some(c) if attrs.beta != 0.0 => {
            c.read_f32(|vc| Ok(map1(&dims, &vc.broadcast_to(&dims)?, |x| x)))?
        }
        _ => vec![0f32; m * n],
    };
    let accumulate = c.is_some() && attrs.beta != 0.0;
    a.read_f32(|va| {
        b.read_f32(|vb| {
            let va = transposed(va, attrs.trans_a);
            let vb = transposed(vb, attrs.trans_b);
            gemm_into(
                &mut dst,
                (m, n, k),
                MatRef {
                    data: va.data,
                    offset: va.offset,
                    rs: va.strides[0],
                    cs: va.strides[1],
                },
                MatRef {
                    data: vb.data,
                    offset: vb.offset,
                    rs: vb.strides[0],
                    cs: vb.strides[1],
                },
                attrs.alpha,
                accumulate.then_some(attrs.beta),
                true,
            )
        })
    })?;
    Ok(dst)
}
