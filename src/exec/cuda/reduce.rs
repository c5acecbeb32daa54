//! ReduceSum, ReduceMean and ReduceMax over any axes: the kept axes are moved in
//! front of the reduced ones (a copy only when the order changes), then one block
//! reduces each contiguous row. Also the double-precision row and column sums the
//! gradient kernels use, and the scan for non-finite values.

use crate::ir::{DType, ReduceOp};

use super::copy::permute;
use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, MAX_GRID_Y, len};
use super::value::CudaValue;
use crate::exec::shapes::reduce_plan;

pub(crate) fn reduce_code(op: ReduceOp) -> i32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
    }
}

pub(crate) fn reduce(
    dev: &Device,
    x: &CudaValue,
    op: ReduceOp,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<CudaValue, String> {
    let Some(plan) = reduce_plan(x.dims(), axes, keepdims, noop_with_empty_axes)? else {
        return Ok(x.clone());
    };
    let out = dev.alloc(DType::F32, &plan.out_dims)?;
    if plan.rows == 0 {
        return Ok(out);
    }
    let src = permute(dev, x, &plan.perm)?;
    reduce_rows(dev, &out, &src, plan.rows, plan.row_len, reduce_code(op))?;
    Ok(out)
}

/// `out[r] = op(x[r, ..len])` over contiguous rows.
pub(crate) fn reduce_rows(
    dev: &Device,
    out: &CudaValue,
    x: &CudaValue,
    rows: usize,
    row_len: usize,
    code: i32,
) -> Result<(), String> {
    dev.launch(
        &kernels::REDUCE_ROWS,
        Grid::Rows(rows),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(x.ptr()),
            len(rows),
            len(row_len),
            Arg::I32(code),
        ],
    )
}

/// A device scratch buffer of `n` doubles (typed as 8-byte integers, since the IR
/// has no f64; only kernels read it).
pub(crate) fn scratch_f64(dev: &Device, n: usize) -> Result<CudaValue, String> {
    dev.alloc(DType::I64, &[n])
}

/// Row sums in double of a contiguous `rows × row_len` f32 matrix at `x`.
pub(crate) fn row_sums_f64(
    dev: &Device,
    x: u64,
    rows: usize,
    row_len: usize,
) -> Result<CudaValue, String> {
    let out = scratch_f64(dev, rows)?;
    dev.launch(
        &kernels::ROW_SUMS_F64,
        Grid::Rows(rows),
        &[Arg::Ptr(out.ptr()), Arg::Ptr(x), len(rows), len(row_len)],
    )?;
    Ok(out)
}

/// Rows per chunk of a column sum: a function of the shape only, so results do not
/// depend on the device.
pub(crate) fn rows_per_chunk(rows: usize) -> usize {
    rows.div_ceil(512).max(64).max(rows.div_ceil(MAX_GRID_Y))
}

/// Column sums in double of a contiguous `rows × cols` f32 matrix at `x`: partial
/// sums over fixed chunks of rows, then the chunks in order.
pub(crate) fn col_sums_f64(
    dev: &Device,
    x: u64,
    rows: usize,
    cols: usize,
) -> Result<CudaValue, String> {
    let out = scratch_f64(dev, cols)?;
    if rows == 0 {
        dev.memset(out.ptr(), 0, out.num_bytes())?;
        return Ok(out);
    }
    let rpc = rows_per_chunk(rows);
    let chunks = rows.div_ceil(rpc);
    let part = scratch_f64(dev, chunks * cols)?;
    dev.launch(
        &kernels::COL_SUM_PARTIALS,
        Grid::Cols { cols, chunks },
        &[
            Arg::Ptr(part.ptr()),
            Arg::Ptr(x),
            len(rows),
            len(cols),
            len(rpc),
        ],
    )?;
    sum_partials(dev, &out, &part, chunks, cols)?;
    Ok(out)
}

/// `out[c] = Σ_chunk part[chunk, c]` in chunk order.
pub(crate) fn sum_partials(
    dev: &Device,
    out: &CudaValue,
    part: &CudaValue,
    chunks: usize,
    cols: usize,
) -> Result<(), String> {
    dev.launch(
        &kernels::SUM_PARTIALS,
        Grid::Elems(cols),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(part.ptr()),
            len(chunks),
            len(cols),
        ],
    )
}

/// An f32 value of shape `dims` from a scratch buffer of doubles.
pub(crate) fn to_f32(
    dev: &Device,
    doubles: &CudaValue,
    dims: &[usize],
) -> Result<CudaValue, String> {
    let out = dev.alloc(DType::F32, dims)?;
    let n = out.numel();
    dev.launch(
        &kernels::F64_TO_F32,
        Grid::Elems(n),
        &[Arg::Ptr(out.ptr()), Arg::Ptr(doubles.ptr()), len(n)],
    )?;
    Ok(out)
}

/// For each f32 value, the index of its first non-finite element (others: None).
pub(crate) fn first_non_finite(
    dev: &Device,
    values: &[&CudaValue],
) -> Result<Vec<Option<usize>>, String> {
    let flags = dev.alloc(DType::I64, &[values.len()])?;
    dev.memset(flags.ptr(), 0xff, flags.num_bytes())?;
    for (i, v) in values.iter().enumerate() {
        if v.dtype() != DType::F32 {
            continue;
        }
        dev.launch(
            &kernels::FIRST_NON_FINITE,
            Grid::Elems(v.numel()),
            &[
                Arg::Ptr(flags.ptr() + 8 * i as u64),
                Arg::Ptr(v.ptr()),
                len(v.numel()),
            ],
        )?;
    }
    let found = dev.download(&flags)?.to_i64_vec();
    Ok(found
        .into_iter()
        .map(|f| (f != -1).then_some(f as usize))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_codes_match_the_kernel() {
        let src = crate::exec::cuda::kernel_sources()
            .iter()
            .find(|(n, _)| *n == "reduce.cu")
            .map(|(_, s)| *s)
            .unwrap();
        assert!(src.contains("// op: 0 sum, 1 mean, 2 max"));
        assert_eq!(reduce_code(ReduceOp::Sum), 0);
        assert_eq!(reduce_code(ReduceOp::Mean), 1);
        assert_eq!(reduce_code(ReduceOp::Max), 2);
    }

    #[test]
    fn column_sum_chunks_fit_the_grid_and_cover_every_row() {
        for rows in [1usize, 63, 64, 1000, 12_608, 1 << 20, 1 << 26] {
            let rpc = rows_per_chunk(rows);
            let chunks = rows.div_ceil(rpc);
            assert!(chunks <= MAX_GRID_Y, "{rows}");
            assert!(chunks * rpc >= rows);
            assert!(rpc >= 64);
        }
    }
}
