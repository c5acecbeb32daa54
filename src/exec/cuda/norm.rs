//! Softmax and LayerNormalization, forward and backward, as row kernels: a softmax
//! over an inner axis moves that axis last (a copy) and back; LayerNorm's scale and
//! bias are broadcast to the normalised shape first when they are smaller, and the
//! scale and bias gradients are summed back to their shapes.

use crate::ir::{DType, ReduceOp};

use super::copy::{broadcast_to, inverse_perm, permute};
use super::device::Device;
use super::elementwise::fill;
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::layout::{axis_index, broadcast_shape, sh};
use super::reduce::{reduce, rows_per_chunk, scratch_f64, sum_partials, to_f32};
use super::value::CudaValue;

/// The permutation that moves `ax` last.
fn axis_last(rank: usize, ax: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..rank).filter(|&i| i != ax).collect();
    perm.push(ax);
    perm
}

pub(crate) fn softmax(dev: &Device, x: &CudaValue, axis: i64) -> Result<CudaValue, String> {
    let r = x.rank();
    let ax = axis_index(axis, r)?;
    let perm = axis_last(r, ax);
    let src = permute(dev, x, &perm)?;
    let row_len = x.dims()[ax];
    let rows = x.numel().checked_div(row_len).unwrap_or(0);
    let y = dev.alloc(DType::F32, src.dims())?;
    dev.launch(
        &kernels::SOFTMAX_ROWS,
        Grid::Rows(rows),
        &[
            Arg::Ptr(y.ptr()),
            Arg::Ptr(src.ptr()),
            len(rows),
            len(row_len),
        ],
    )?;
    permute(dev, &y, &inverse_perm(&perm))
}

pub(crate) fn softmax_grad(
    dev: &Device,
    y: &CudaValue,
    dy: &CudaValue,
    axis: i64,
) -> Result<CudaValue, String> {
    if y.dims() != dy.dims() {
        return Err(format!(
            "dy of shape {} does not match y of shape {}",
            sh(dy.dims()),
            sh(y.dims())
        ));
    }
    let r = y.rank();
    let ax = axis_index(axis, r)?;
    let perm = axis_last(r, ax);
    let (ys, ds) = (permute(dev, y, &perm)?, permute(dev, dy, &perm)?);
    let row_len = y.dims()[ax];
    let rows = y.numel().checked_div(row_len).unwrap_or(0);
    let dx = dev.alloc(DType::F32, ys.dims())?;
    dev.launch(
        &kernels::SOFTMAX_GRAD_ROWS,
        Grid::Rows(rows),
        &[
            Arg::Ptr(dx.ptr()),
            Arg::Ptr(ys.ptr()),
            Arg::Ptr(ds.ptr()),
            len(rows),
            len(row_len),
        ],
    )?;
    permute(dev, &dx, &inverse_perm(&perm))
}

/// A per-feature parameter as a contiguous vector over the normalised dims.
fn feature_vector(
    dev: &Device,
    p: &CudaValue,
    dims: &[usize],
    what: &str,
) -> Result<CudaValue, String> {
    if broadcast_shape(p.dims(), dims).as_deref() != Some(dims) {
        return Err(format!(
            "{what} of shape {} does not fit {}",
            sh(p.dims()),
            sh(dims)
        ));
    }
    if p.numel() == dims.iter().product::<usize>() {
        return Ok(p.clone());
    }
    broadcast_to(dev, p, dims)
}

/// LayerNormalization over axes `axis..`; returns `y` and, when the node asks for
/// them, the mean and inverse standard deviation (normalised axes kept as 1).
pub(crate) fn layer_norm(
    dev: &Device,
    x: &CudaValue,
    scale: &CudaValue,
    bias: Option<&CudaValue>,
    axis: i64,
    epsilon: f32,
    outputs: usize,
) -> Result<Vec<CudaValue>, String> {
    let r = x.rank();
    let ax = axis_index(axis, r)?;
    let dims = x.dims().to_vec();
    let row_len: usize = dims[ax..].iter().product();
    let rows: usize = dims[..ax].iter().product();
    let gamma = feature_vector(dev, scale, &dims[ax..], "scale")?;
    let beta = bias
        .map(|b| feature_vector(dev, b, &dims[ax..], "bias"))
        .transpose()?;
    let y = dev.alloc(DType::F32, &dims)?;
    let mut sdims = dims[..ax].to_vec();
    sdims.resize(r, 1);
    let want_stats = outputs > 1;
    let (mean, inv) = if want_stats {
        (
            Some(dev.alloc(DType::F32, &sdims)?),
            Some(dev.alloc(DType::F32, &sdims)?),
        )
    } else {
        (None, None)
    };
    if row_len == 0 {
        // Statistics of empty rows are NaN, as on the CPU.
        for s in [&mean, &inv].into_iter().flatten() {
            fill(dev, s, f32::NAN)?;
        }
    } else {
        dev.launch(
            &kernels::LAYER_NORM_ROWS,
            Grid::Rows(rows),
            &[
                Arg::Ptr(y.ptr()),
                Arg::Ptr(mean.as_ref().map_or(0, CudaValue::ptr)),
                Arg::Ptr(inv.as_ref().map_or(0, CudaValue::ptr)),
                Arg::Ptr(x.ptr()),
                Arg::Ptr(gamma.ptr()),
                Arg::Ptr(beta.as_ref().map_or(0, CudaValue::ptr)),
                len(rows),
                len(row_len),
                Arg::F32(epsilon),
                Arg::I32(i32::from(beta.is_some())),
                Arg::I32(i32::from(want_stats)),
            ],
        )?;
    }
    let mut out = vec![y];
    if let Some(m) = mean {
        out.push(m);
    }
    if outputs > 2
        && let Some(i) = inv
    {
        out.push(i);
    }
    Ok(out)
}

/// `full` (shape `full_dims`) summed down to `target`, which broadcasts to it.
fn sum_to_shape(dev: &Device, full: &CudaValue, target: &[usize]) -> Result<CudaValue, String> {
    if full.dims() == target {
        return Ok(full.clone());
    }
    let fd = full.dims();
    let Some(lead) = fd.len().checked_sub(target.len()) else {
        return Err(format!("cannot sum {} down to {}", sh(fd), sh(target)));
    };
    let axes: Vec<i64> = (0..fd.len())
        .filter(|&i| i < lead || (target[i - lead] == 1 && fd[i] != 1))
        .map(|i| i as i64)
        .collect();
    let summed = reduce(dev, full, ReduceOp::Sum, Some(&axes), true, true)?;
    summed.reshaped(target.to_vec())
}

/// The backward of LayerNormalization: `dx` and, as the node asks, `dscale` and
/// `dbias` in the shape of `scale`.
pub(crate) fn layer_norm_grad(
    dev: &Device,
    x: &CudaValue,
    scale: &CudaValue,
    dy: &CudaValue,
    axis: i64,
    epsilon: f32,
    outputs: usize,
) -> Result<Vec<CudaValue>, String> {
    if !(1..=3).contains(&outputs) {
        return Err(format!(
            "expects 1 to 3 outputs (dx, dscale, dbias), the node has {outputs}"
        ));
    }
    if x.dims() != dy.dims() {
        return Err(format!(
            "dy of shape {} does not match x of shape {}",
            sh(dy.dims()),
            sh(x.dims())
        ));
    }
    let dims = x.dims().to_vec();
    let ax = axis_index(axis, dims.len())?;
    let norm_dims = dims[ax..].to_vec();
    let row_len: usize = norm_dims.iter().product();
    let rows: usize = dims[..ax].iter().product();
    let gamma = feature_vector(dev, scale, &norm_dims, "scale")?;
    let dx = dev.alloc(DType::F32, &dims)?;
    let mean = dev.alloc(DType::F32, &[rows])?;
    let inv = dev.alloc(DType::F32, &[rows])?;
    if row_len > 0 {
        dev.launch(
            &kernels::LAYER_NORM_GRAD_ROWS,
            Grid::Rows(rows),
            &[
                Arg::Ptr(dx.ptr()),
                Arg::Ptr(mean.ptr()),
                Arg::Ptr(inv.ptr()),
                Arg::Ptr(x.ptr()),
                Arg::Ptr(dy.ptr()),
                Arg::Ptr(gamma.ptr()),
                len(rows),
                len(row_len),
                Arg::F32(epsilon),
            ],
        )?;
    }
    let mut out = vec![dx];
    if outputs == 1 {
        return Ok(out);
    }
    let sums_g = scratch_f64(dev, row_len)?;
    let sums_b = scratch_f64(dev, row_len)?;
    if rows == 0 || row_len == 0 {
        dev.memset(sums_g.ptr(), 0, sums_g.num_bytes())?;
        dev.memset(sums_b.ptr(), 0, sums_b.num_bytes())?;
    } else {
        let rpc = rows_per_chunk(rows);
        let chunks = rows.div_ceil(rpc);
        let pg = scratch_f64(dev, chunks * row_len)?;
        let pb = scratch_f64(dev, chunks * row_len)?;
        dev.launch(
            &kernels::LAYER_NORM_PARAM_PARTIALS,
            Grid::Cols {
                cols: row_len,
                chunks,
            },
            &[
                Arg::Ptr(pg.ptr()),
                Arg::Ptr(pb.ptr()),
                Arg::Ptr(x.ptr()),
                Arg::Ptr(dy.ptr()),
                Arg::Ptr(mean.ptr()),
                Arg::Ptr(inv.ptr()),
                len(rows),
                len(row_len),
                len(rpc),
            ],
        )?;
        sum_partials(dev, &sums_g, &pg, chunks, row_len)?;
        sum_partials(dev, &sums_b, &pb, chunks, row_len)?;
    }
    let dgamma = to_f32(dev, &sums_g, &norm_dims)?;
    out.push(sum_to_shape(dev, &dgamma, scale.dims())?);
    if outputs > 2 {
        let dbeta = to_f32(dev, &sums_b, &norm_dims)?;
        out.push(sum_to_shape(dev, &dbeta, scale.dims())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_softmax_axis_moves_last_and_back() {
        let p = axis_last(4, 1);
        assert_eq!(p, vec![0, 2, 3, 1]);
        assert_eq!(inverse_perm(&p), vec![0, 3, 1, 2]);
        assert_eq!(axis_last(3, 2), vec![0, 1, 2]);
    }
}
