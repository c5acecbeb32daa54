//! Ops that move or describe data without arithmetic: Reshape, Transpose, Concat,
//! Split, Gather, Slice, Squeeze, Unsqueeze, Flatten, Shape, Expand, and the
//! creators ConstantOfShape and Range. Where candle can express the result as a view
//! (permute, narrow, broadcast, squeeze) no data is copied; the rest copy through
//! strided views and work on every dtype.

use crate::exec::shapes::{self, Operand};
use crate::ir::{DType, Tensor, TensorData};

use super::strided::{Strided, broadcast_shape, map1};
use super::value::{CpuValue, OpError, OpResult, bail, sh, with_storage_type};
use super::{axis_index, permute_value};

/// Largest element count an op may create from sizes found in tensor data.
const MAX_CREATED_ELEMS: usize = 1 << 34;

fn int_values(v: &CpuValue, what: &str) -> OpResult<Vec<i64>> {
    if !v.dtype().is_int() {
        bail!("{what} must be an integer tensor, got {}", v.dtype());
    }
    if v.rank() > 1 {
        bail!("{what} must be 1-D, got shape {}", sh(v.dims()));
    }
    v.to_i64_vec()
}

fn checked_numel(dims: &[usize]) -> OpResult<usize> {
    let mut n: usize = 1;
    for &d in dims {
        n = match n.checked_mul(d) {
            Some(n) if n <= MAX_CREATED_ELEMS => n,
            _ => bail!("shape {} is too large", sh(dims)),
        };
    }
    Ok(n)
}

fn reshape_to(x: &CpuValue, dims: &[usize]) -> OpResult<CpuValue> {
    CpuValue::from_candle(x.tensor().reshape(dims)?, x.dtype())
}

pub(crate) fn reshape(x: &CpuValue, shape: &CpuValue, allowzero: bool) -> OpResult<CpuValue> {
    let spec = int_values(shape, "shape")?;
    let dims = shapes::reshape_dims(x.dims(), &spec, allowzero).map_err(OpError)?;
    reshape_to(x, &dims)
}

pub(crate) fn transpose(x: &CpuValue, perm: Option<&[usize]>) -> OpResult<CpuValue> {
    let perm = shapes::transpose_perm(x.rank(), perm).map_err(OpError)?;
    permute_value(x, &perm)
}

pub(crate) fn concat(xs: &[&CpuValue], axis: i64) -> OpResult<CpuValue> {
    let parts: Vec<Operand> = xs.iter().map(|x| x.operand()).collect();
    let (ax, dims) = shapes::concat_dims(&parts, axis).map_err(OpError)?;
    let dtype = parts[0].dtype;
    let outer: usize = dims[..ax].iter().product();
    let inner: usize = dims[ax + 1..].iter().product();
    let total = dims[ax] * inner;
    with_storage_type!(dtype, T => {
        let mut out: Vec<T> = vec![T::default(); outer * total];
        let mut start = 0;
        for x in xs {
            let width = x.dims()[ax] * inner;
            if width > 0 {
                x.read::<T, _>(|v| {
                    let data = v.to_contiguous();
                    for (o, src) in data.chunks(width).enumerate() {
                        out[o * total + start..o * total + start + width].copy_from_slice(src);
                    }
                    Ok(())
                })?;
            }
            start += width;
        }
        CpuValue::from_storage_vec(out, &dims, dtype)
    })
}

pub(crate) fn split(
    x: &CpuValue,
    axis: i64,
    sizes: Option<&[usize]>,
    outputs: usize,
) -> OpResult<Vec<CpuValue>> {
    let ax = axis_index(axis, x.rank())?;
    let sizes = shapes::split_sizes(x.dims()[ax], ax, sizes, outputs).map_err(OpError)?;
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let t = x.tensor().narrow(ax, start, n)?;
            start += n;
            CpuValue::from_candle(t, x.dtype())
        })
        .collect()
}

/// Gather indices as positions along axis `ax` of size `d`, negatives counted from
/// the end; the forward and its scatter-back read them the same way.
pub(crate) fn gather_positions(indices: &CpuValue, d: usize, ax: usize) -> OpResult<Vec<usize>> {
    if !indices.dtype().is_int() {
        bail!("indices must be integers, got {}", indices.dtype());
    }
    let positions = shapes::gather_positions(&indices.to_i64_vec()?, d, ax).map_err(OpError)?;
    Ok(positions.into_iter().map(|j| j as usize).collect())
}

pub(crate) fn gather(x: &CpuValue, indices: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let ax = axis_index(axis, x.rank())?;
    let d = x.dims()[ax];
    let idx = gather_positions(indices, d, ax)?;
    let dims = shapes::gather_dims(x.dims(), ax, indices.dims());
    let outer: usize = x.dims()[..ax].iter().product();
    let inner: usize = x.dims()[ax + 1..].iter().product();
    let dtype = x.dtype();
    with_storage_type!(dtype, T => {
        let out: Vec<T> = x.read::<T, _>(|v| {
            let data = v.to_contiguous();
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in &idx {
                    let at = (o * d + i) * inner;
                    out.extend_from_slice(&data[at..at + inner]);
                }
            }
            Ok(out)
        })?;
        CpuValue::from_storage_vec(out, &dims, dtype)
    })
}

/// The per-axis ranges a Slice with these inputs reads from a tensor of shape `dims`.
pub(crate) fn slice_plan(
    dims: &[usize],
    starts: &CpuValue,
    ends: &CpuValue,
    axes: Option<&CpuValue>,
    steps: Option<&CpuValue>,
) -> OpResult<Vec<shapes::SliceAxis>> {
    let starts = int_values(starts, "starts")?;
    let ends = int_values(ends, "ends")?;
    let axes = axes.map(|a| int_values(a, "axes")).transpose()?;
    let steps = steps.map(|s| int_values(s, "steps")).transpose()?;
    shapes::slice_plan(dims, &starts, &ends, axes.as_deref(), steps.as_deref()).map_err(OpError)
}

pub(crate) fn slice(
    x: &CpuValue,
    starts: &CpuValue,
    ends: &CpuValue,
    axes: Option<&CpuValue>,
    steps: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    let plan = slice_plan(x.dims(), starts, ends, axes, steps)?;
    if plan.iter().all(|p| p.step == 1) {
        let mut t = x.tensor().clone();
        for (ax, p) in plan.iter().enumerate() {
            if p.len != x.dims()[ax] {
                t = t.narrow(ax, p.start as usize, p.len)?;
            }
        }
        return CpuValue::from_candle(t, x.dtype());
    }
    let dims: Vec<usize> = plan.iter().map(|p| p.len).collect();
    let dtype = x.dtype();
    with_storage_type!(dtype, T => {
        let out: Vec<T> = x.read::<T, _>(|v| {
            if dims.contains(&0) {
                return Ok(Vec::new());
            }
            let offset = v.offset + plan.iter().zip(&v.strides).map(|(p, &s)| p.start as isize * s).sum::<isize>();
            let strides = plan.iter().zip(&v.strides).map(|(p, &s)| p.step as isize * s).collect();
            let sv = Strided::new(v.data, offset, dims.clone(), strides)?;
            Ok(map1(&dims, &sv, |a| a))
        })?;
        CpuValue::from_storage_vec(out, &dims, dtype)
    })
}

pub(crate) fn squeeze(x: &CpuValue, axes: Option<&[i64]>) -> OpResult<CpuValue> {
    let remove = shapes::squeeze_axes(x.dims(), axes).map_err(OpError)?;
    let mut t = x.tensor().clone();
    for &ax in remove.iter().rev() {
        t = t.squeeze(ax)?;
    }
    CpuValue::from_candle(t, x.dtype())
}

pub(crate) fn unsqueeze(x: &CpuValue, axes: &[i64]) -> OpResult<CpuValue> {
    let pos = shapes::unsqueeze_positions(x.rank(), axes).map_err(OpError)?;
    let mut t = x.tensor().clone();
    for &p in &pos {
        t = t.unsqueeze(p)?;
    }
    CpuValue::from_candle(t, x.dtype())
}

pub(crate) fn flatten(x: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let dims = shapes::flatten_dims(x.dims(), axis).map_err(OpError)?;
    reshape_to(x, &dims)
}

pub(crate) fn shape(x: &CpuValue, start: i64, end: Option<i64>) -> OpResult<CpuValue> {
    let r = x.rank() as i64;
    let clampi = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
    let s = clampi(start);
    let e = clampi(end.unwrap_or(r));
    let dims: Vec<i64> = if s < e {
        x.dims()[s..e].iter().map(|&d| d as i64).collect()
    } else {
        Vec::new()
    };
    let n = dims.len();
    CpuValue::from_i64(dims, &[n], DType::I64)
}

fn dims_from(v: &CpuValue, what: &str) -> OpResult<Vec<usize>> {
    int_values(v, what)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| OpError(format!("{what} has a negative size {d}"))))
        .collect()
}

pub(crate) fn expand(x: &CpuValue, shape: &CpuValue) -> OpResult<CpuValue> {
    let want = dims_from(shape, "shape")?;
    let Some(dims) = broadcast_shape(x.dims(), &want) else {
        bail!("cannot expand {} to {}", sh(x.dims()), sh(&want));
    };
    checked_numel(&dims)?;
    if dims == x.dims() {
        return Ok(x.clone());
    }
    CpuValue::from_candle(x.tensor().broadcast_as(dims)?, x.dtype())
}

pub(crate) fn constant_of_shape(shape: &CpuValue, value: &Tensor) -> OpResult<CpuValue> {
    let dims = dims_from(shape, "shape")?;
    let n = checked_numel(&dims)?;
    if value.numel() != 1 {
        bail!("value must hold one element, got {}", value.numel());
    }
    match value.data() {
        TensorData::F32(v) => CpuValue::from_storage_vec(vec![v[0]; n], &dims, DType::F32),
        TensorData::F16(v) => CpuValue::from_storage_vec(vec![v[0]; n], &dims, DType::F16),
        TensorData::BF16(v) => CpuValue::from_storage_vec(vec![v[0]; n], &dims, DType::BF16),
        TensorData::I64(v) => CpuValue::from_i64(vec![v[0]; n], &dims, DType::I64),
        TensorData::I32(v) => CpuValue::from_i64(vec![v[0] as i64; n], &dims, DType::I32),
        TensorData::Bool(v) => CpuValue::from_bool(vec![u8::from(v[0]); n], &dims),
    }
}

pub(crate) fn range(start: &CpuValue, limit: &CpuValue, delta: &CpuValue) -> OpResult<CpuValue> {
    let dtype = start.dtype();
    for (v, what) in [(start, "start"), (limit, "limit"), (delta, "delta")] {
        if v.numel() != 1 {
            bail!("{what} must be a scalar, got shape {}", sh(v.dims()));
        }
        if v.dtype() != dtype {
            bail!("{what} is {} but start is {dtype}", v.dtype());
        }
    }
    if dtype.is_int() {
        let (s, l, d) = (
            start.to_i64_vec()?[0],
            limit.to_i64_vec()?[0],
            delta.to_i64_vec()?[0],
        );
        if d == 0 {
            bail!("delta cannot be 0");
        }
        let span = l as i128 - s as i128;
        let d128 = d as i128;
        // ceil(span / d) for either sign of d.
        let n = if (span > 0) == (d128 > 0) && span != 0 {
            (span + d128 - d128.signum()) / d128
        } else {
            0
        };
        let n = usize::try_from(n).map_err(|_| OpError("range is too long".into()))?;
        checked_numel(&[n])?;
        let out: Vec<i64> = (0..n)
            .map(|i| s.wrapping_add((i as i64).wrapping_mul(d)))
            .collect();
        return CpuValue::from_i64(out, &[n], dtype);
    }
    if !dtype.is_float() {
        bail!("not defined on {dtype}");
    }
    let (s, l, d) = (
        start.to_f64_vec()?[0],
        limit.to_f64_vec()?[0],
        delta.to_f64_vec()?[0],
    );
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        bail!("start {s}, limit {l} and delta {d} do not define a range");
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > MAX_CREATED_ELEMS as f64 {
        bail!("range is too long");
    }
    let n = n as usize;
    let out: Vec<f32> = (0..n).map(|i| (s + i as f64 * d) as f32).collect();
    CpuValue::from_f32(out, &[n], dtype)
}
