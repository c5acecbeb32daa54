//! Ops that move data: Transpose, Concat, Split, Gather, Slice, Expand, and the
//! views Reshape, Flatten, Squeeze and Unsqueeze (which share the input's buffer).
//! Every copy is one strided read or write kernel over merged axes, for elements of
//! any size; the shape and index work happens on the host (`exec/shapes.rs`). Also the
//! broadcasting and permuting copies other ops build on.

use crate::ir::DType;

use super::device::Device;
use super::kernels::{GATHER_AXIS, STRIDED_READ, STRIDED_WRITE, by_size};
use super::launch::{Arg, Grid, Kernel, len};
use super::layout::{
    as_i64, axis_index, broadcast_shape, broadcast_strides, collapse, contiguous_strides,
    dims_array, sh,
};
use super::value::CudaValue;
use crate::exec::shapes::{
    self, Operand, concat_dims, flatten_dims, gather_dims, gather_positions, reshape_dims,
    slice_plan, split_sizes, squeeze_dims, transpose_perm, unsqueeze_dims,
};

/// Reads `x` through (`dims`, `strides`, `offset`, all in elements) into `out`, a
/// contiguous buffer of shape `dims`.
pub(crate) fn read_into(
    dev: &Device,
    out: &CudaValue,
    x: &CudaValue,
    dims: &[usize],
    strides: &[i64],
    offset: i64,
) -> Result<(), String> {
    strided_copy(dev, STRIDED_READ, out, x, dims, strides, offset)
}

/// Writes the contiguous `x` (shape `dims`) into `out` through (`strides`,
/// `offset`).
pub(crate) fn write_into(
    dev: &Device,
    out: &CudaValue,
    x: &CudaValue,
    dims: &[usize],
    strides: &[i64],
    offset: i64,
) -> Result<(), String> {
    strided_copy(dev, STRIDED_WRITE, out, x, dims, strides, offset)
}

/// One launch of a strided read or write kernel (by element size) over `dims`,
/// with the axes merged where the strides allow.
fn strided_copy(
    dev: &Device,
    table: [&'static Kernel; 4],
    out: &CudaValue,
    x: &CudaValue,
    dims: &[usize],
    strides: &[i64],
    offset: i64,
) -> Result<(), String> {
    let n: usize = dims.iter().product();
    let (cd, cs) = collapse(dims, &[strides]);
    let k = by_size(table, x.dtype().size_of())?;
    dev.launch(
        k,
        Grid::Elems(n),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(x.ptr()),
            len(n),
            Arg::I32(cd.len() as i32),
            Arg::Dims(dims_array(&as_i64(&cd))?),
            Arg::Dims(dims_array(&cs[0])?),
            Arg::I64(offset),
        ],
    )
}

/// A new contiguous value: `x` read through (`dims`, `strides`, `offset`).
pub(crate) fn strided_read(
    dev: &Device,
    x: &CudaValue,
    dims: &[usize],
    strides: &[i64],
    offset: i64,
) -> Result<CudaValue, String> {
    let out = dev.alloc(x.dtype(), dims)?;
    read_into(dev, &out, x, dims, strides, offset)?;
    Ok(out)
}

/// `x` broadcast (numpy rules) to exactly `dims`, as a new contiguous value.
pub(crate) fn broadcast_to(
    dev: &Device,
    x: &CudaValue,
    dims: &[usize],
) -> Result<CudaValue, String> {
    if x.dims() == dims {
        return Ok(x.clone());
    }
    let strides = broadcast_strides(x.dims(), dims)
        .ok_or_else(|| format!("cannot broadcast {} to {}", sh(x.dims()), sh(dims)))?;
    strided_read(dev, x, dims, &strides, 0)
}

/// `x` with its axes reordered, as a new contiguous value.
pub(crate) fn permute(dev: &Device, x: &CudaValue, perm: &[usize]) -> Result<CudaValue, String> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x.clone());
    }
    let own = contiguous_strides(x.dims());
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims()[p]).collect();
    let strides: Vec<i64> = perm.iter().map(|&p| own[p]).collect();
    strided_read(dev, x, &dims, &strides, 0)
}

/// The inverse of a permutation.
pub(crate) fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

pub(crate) fn reshape(
    dev: &Device,
    x: &CudaValue,
    shape: &CudaValue,
    allowzero: bool,
) -> Result<CudaValue, String> {
    let spec = int_list(dev, shape, "shape")?;
    x.reshaped(reshape_dims(x.dims(), &spec, allowzero)?)
}

pub(crate) fn flatten(x: &CudaValue, axis: i64) -> Result<CudaValue, String> {
    x.reshaped(flatten_dims(x.dims(), axis)?)
}

pub(crate) fn squeeze(x: &CudaValue, axes: Option<&[i64]>) -> Result<CudaValue, String> {
    x.reshaped(squeeze_dims(x.dims(), axes)?)
}

pub(crate) fn unsqueeze(x: &CudaValue, axes: &[i64]) -> Result<CudaValue, String> {
    x.reshaped(unsqueeze_dims(x.dims(), axes)?)
}

/// A 1-D (or scalar) integer input read on the host.
pub(crate) fn int_list(dev: &Device, v: &CudaValue, what: &str) -> Result<Vec<i64>, String> {
    if v.rank() > 1 {
        return Err(format!("{what} must be 1-D, got shape {}", sh(v.dims())));
    }
    dev.host_ints(v, what)
}

pub(crate) fn transpose(
    dev: &Device,
    x: &CudaValue,
    perm: Option<&[usize]>,
) -> Result<CudaValue, String> {
    let perm = transpose_perm(x.rank(), perm)?;
    permute(dev, x, &perm)
}

pub(crate) fn concat(dev: &Device, xs: &[&CudaValue], axis: i64) -> Result<CudaValue, String> {
    let parts: Vec<Operand> = xs.iter().map(|x| x.operand()).collect();
    let (ax, dims) = concat_dims(&parts, axis)?;
    let dtype = parts[0].dtype;
    let out = dev.alloc(dtype, &dims)?;
    let strides = contiguous_strides(&dims);
    let mut start = 0i64;
    for x in xs {
        write_into(dev, &out, x, x.dims(), &strides, start * strides[ax])?;
        start += x.dims()[ax] as i64;
    }
    Ok(out)
}

pub(crate) fn split(
    dev: &Device,
    x: &CudaValue,
    axis: i64,
    sizes: Option<&[usize]>,
    outputs: usize,
) -> Result<Vec<CudaValue>, String> {
    let ax = axis_index(axis, x.rank())?;
    let sizes = split_sizes(x.dims()[ax], ax, sizes, outputs)?;
    let strides = contiguous_strides(x.dims());
    let mut start = 0i64;
    sizes
        .iter()
        .map(|&n| {
            let mut dims = x.dims().to_vec();
            dims[ax] = n;
            let piece = strided_read(dev, x, &dims, &strides, start * strides[ax]);
            start += n as i64;
            piece
        })
        .collect()
}

/// Gather positions of an integer indices value along an axis of size `d`.
pub(crate) fn positions(
    dev: &Device,
    indices: &CudaValue,
    d: usize,
    ax: usize,
) -> Result<Vec<i64>, String> {
    if !indices.dtype().is_int() {
        return Err(format!("indices must be integers, got {}", indices.dtype()));
    }
    gather_positions(&dev.host_ints(indices, "indices")?, d, ax)
}

pub(crate) fn gather(
    dev: &Device,
    x: &CudaValue,
    indices: &CudaValue,
    axis: i64,
) -> Result<CudaValue, String> {
    let ax = axis_index(axis, x.rank())?;
    let d = x.dims()[ax];
    let pos = positions(dev, indices, d, ax)?;
    let dims = gather_dims(x.dims(), ax, indices.dims());
    let out = dev.alloc(x.dtype(), &dims)?;
    let outer: usize = x.dims()[..ax].iter().product();
    let inner: usize = x.dims()[ax + 1..].iter().product();
    if out.numel() == 0 {
        return Ok(out);
    }
    let pos_dev = dev.upload_i64(&pos)?;
    dev.launch(
        by_size(GATHER_AXIS, x.dtype().size_of())?,
        Grid::Elems(out.numel()),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(pos_dev.ptr()),
            len(outer),
            len(pos.len()),
            len(d),
            len(inner),
        ],
    )?;
    Ok(out)
}

/// The Slice plan of `dims` from the op's integer inputs.
pub(crate) fn plan(
    dev: &Device,
    dims: &[usize],
    starts: &CudaValue,
    ends: &CudaValue,
    axes: Option<&CudaValue>,
    steps: Option<&CudaValue>,
) -> Result<Vec<shapes::SliceAxis>, String> {
    let starts = int_list(dev, starts, "starts")?;
    let ends = int_list(dev, ends, "ends")?;
    let axes = axes.map(|a| int_list(dev, a, "axes")).transpose()?;
    let steps = steps.map(|s| int_list(dev, s, "steps")).transpose()?;
    slice_plan(dims, &starts, &ends, axes.as_deref(), steps.as_deref())
}

/// Where a slice plan's element 0 lies and how far each output axis moves, in a
/// contiguous tensor of shape `dims`.
pub(crate) fn slice_window(
    dims: &[usize],
    plan: &[shapes::SliceAxis],
) -> (Vec<usize>, Vec<i64>, i64) {
    let strides = contiguous_strides(dims);
    let lens: Vec<usize> = plan.iter().map(|p| p.len).collect();
    let offset: i64 = plan.iter().zip(&strides).map(|(p, &s)| p.start * s).sum();
    let steps: Vec<i64> = plan
        .iter()
        .zip(&strides)
        .map(|(p, &s)| p.step * s)
        .collect();
    (lens, steps, offset)
}

pub(crate) fn slice(
    dev: &Device,
    x: &CudaValue,
    starts: &CudaValue,
    ends: &CudaValue,
    axes: Option<&CudaValue>,
    steps: Option<&CudaValue>,
) -> Result<CudaValue, String> {
    let plan = plan(dev, x.dims(), starts, ends, axes, steps)?;
    let (lens, strides, offset) = slice_window(x.dims(), &plan);
    if lens == x.dims() && plan.iter().all(|p| p.step == 1) {
        return Ok(x.clone());
    }
    if lens.contains(&0) {
        return dev.alloc(x.dtype(), &lens);
    }
    strided_read(dev, x, &lens, &strides, offset)
}

pub(crate) fn expand(dev: &Device, x: &CudaValue, shape: &CudaValue) -> Result<CudaValue, String> {
    let want: Vec<usize> = int_list(dev, shape, "shape")?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("shape has a negative size {d}")))
        .collect::<Result<_, _>>()?;
    let Some(dims) = broadcast_shape(x.dims(), &want) else {
        return Err(format!("cannot expand {} to {}", sh(x.dims()), sh(&want)));
    };
    broadcast_to(dev, x, &dims)
}

/// Element types the data-movement kernels carry (integer and bool tensors are
/// shape work, which runs on the host).
pub(crate) fn movable(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// `x` zero-filled except for `dy` scattered into the window of a slice plan
/// (the Slice backward).
pub(crate) fn scatter_window(
    dev: &Device,
    dy: &CudaValue,
    x_shape: &[usize],
    plan: &[shapes::SliceAxis],
) -> Result<CudaValue, String> {
    let (lens, strides, offset) = slice_window(x_shape, plan);
    if dy.dims() != lens {
        return Err(format!(
            "dy of shape {} does not match the Slice output {} of x {}",
            sh(dy.dims()),
            sh(&lens),
            sh(x_shape)
        ));
    }
    let dx = dev.zeros(dy.dtype(), x_shape)?;
    if !lens.contains(&0) {
        write_into(dev, &dx, dy, &lens, &strides, offset)?;
    }
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::shapes::SliceAxis;

    #[test]
    fn inverse_permutations_undo_the_permutation() {
        let p = [2, 0, 3, 1];
        let inv = inverse_perm(&p);
        for (i, &x) in p.iter().enumerate() {
            assert_eq!(inv[x], i);
        }
    }

    #[test]
    fn slice_windows_address_the_sliced_elements() {
        // x [4, 5]; rows 3,1 (step -2 from 3), columns 1..4.
        let plan = [
            SliceAxis {
                start: 3,
                step: -2,
                len: 2,
            },
            SliceAxis {
                start: 1,
                step: 1,
                len: 3,
            },
        ];
        let (lens, steps, offset) = slice_window(&[4, 5], &plan);
        assert_eq!(lens, vec![2, 3]);
        assert_eq!(steps, vec![-10, 1]);
        assert_eq!(offset, 16);
        // Element (1, 2) of the slice is x[1, 3] = flat 8.
        assert_eq!(offset + steps[0] + 2 * steps[1], 8);
    }
}
