//! Ops that move or describe data without arithmetic: Reshape, Transpose, Concat,
//! Split, Gather, Slice, Squeeze, Unsqueeze, Flatten, Shape, Expand, and the
//! creators ConstantOfShape and Range. Where candle can express the result as a view
//! (permute, narrow, broadcast, squeeze) no data is copied; the rest copy through
//! strided views and work on every dtype.

use std::collections::HashSet;

use crate::ir::{DType, Tensor, TensorData};

use super::strided::{Strided, broadcast_shapes, map1};
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
    let dims = reshape_dims(x.dims(), &spec, allowzero)?;
    reshape_to(x, &dims)
}

/// The output dims of Reshape: 0 copies the input dim (unless `allowzero`), -1 is
/// inferred from the element count.
fn reshape_dims(input: &[usize], spec: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let numel: usize = input.iter().product();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        let d = match s {
            -1 => {
                if infer.replace(i).is_some() {
                    bail!("shape {} has more than one -1", sh(spec));
                }
                1
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => d,
                None => bail!(
                    "shape {} copies dim {i} of an input of rank {}",
                    sh(spec),
                    input.len()
                ),
            },
            s if s < 0 => bail!("shape {} has a negative size", sh(spec)),
            s => s as usize,
        };
        dims.push(d);
    }
    if let Some(i) = infer {
        let known = dims
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .try_fold(1usize, |acc, (_, &d)| acc.checked_mul(d));
        let Some(known) = known.filter(|&k| k != 0 && numel.is_multiple_of(k)) else {
            bail!("cannot reshape {} to {}", sh(input), sh(spec));
        };
        dims[i] = numel / known;
    }
    if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(numel) {
        bail!(
            "cannot reshape {} ({numel} elements) to {}",
            sh(input),
            sh(spec)
        );
    }
    Ok(dims)
}

pub(crate) fn transpose(x: &CpuValue, perm: Option<&[usize]>) -> OpResult<CpuValue> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        bail!("perm {perm:?} is not a permutation of {r} axes");
    }
    permute_value(x, &perm)
}

pub(crate) fn concat(xs: &[&CpuValue], axis: i64) -> OpResult<CpuValue> {
    let Some(first) = xs.first() else {
        bail!("no inputs")
    };
    let r = first.rank();
    let ax = axis_index(axis, r)?;
    let dtype = first.dtype();
    let mut dims = first.dims().to_vec();
    dims[ax] = 0;
    for x in xs {
        if x.dtype() != dtype {
            bail!("input types differ: {dtype} and {}", x.dtype());
        }
        let same = x.rank() == r && (0..r).all(|i| i == ax || x.dims()[i] == first.dims()[i]);
        if !same {
            bail!(
                "cannot concatenate {} with {} on axis {ax}",
                sh(first.dims()),
                sh(x.dims())
            );
        }
        dims[ax] += x.dims()[ax];
    }
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
    let d = x.dims()[ax];
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.len() != outputs {
                bail!("{} split sizes for {outputs} outputs", s.len());
            }
            s.to_vec()
        }
        None => {
            if outputs == 0 {
                bail!("no outputs to split into");
            }
            let chunk = d.div_ceil(outputs);
            let mut left = d;
            (0..outputs)
                .map(|_| {
                    let n = chunk.min(left);
                    left -= n;
                    n
                })
                .collect()
        }
    };
    if sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s)) != Some(d) {
        bail!("split sizes {sizes:?} do not add up to dim {d} of axis {ax}");
    }
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
    indices
        .to_i64_vec()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if j < 0 || j >= d as i64 {
                bail!("index {i} is out of range for axis {ax} of size {d}");
            }
            Ok(j as usize)
        })
        .collect()
}

pub(crate) fn gather(x: &CpuValue, indices: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let ax = axis_index(axis, x.rank())?;
    let d = x.dims()[ax];
    let idx = gather_positions(indices, d, ax)?;
    let mut dims = x.dims()[..ax].to_vec();
    dims.extend_from_slice(indices.dims());
    dims.extend_from_slice(&x.dims()[ax + 1..]);
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

/// One axis of a Slice after clamping: first index, step and length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// ONNX Slice clamping for one axis of size `d`.
fn slice_axis(d: usize, start: i64, end: i64, step: i64) -> OpResult<SliceAxis> {
    if step == 0 {
        bail!("slice step cannot be 0");
    }
    if d == 0 {
        // Nothing to take, whatever the bounds and direction.
        return Ok(SliceAxis {
            start: 0,
            step,
            len: 0,
        });
    }
    let d = d as i128;
    let (start, end, step) = (start as i128, end as i128, step as i128);
    let start = if start < 0 { start + d } else { start };
    let end = if end < 0 { end + d } else { end };
    let (start, end) = if step > 0 {
        (start.clamp(0, d), end.clamp(0, d))
    } else {
        (start.clamp(0, (d - 1).max(0)), end.clamp(-1, d - 1))
    };
    let len = if step > 0 {
        ((end - start).max(0) + step - 1) / step
    } else {
        ((start - end).max(0) + (-step) - 1) / (-step)
    };
    Ok(SliceAxis {
        start: start as i64,
        step: step as i64,
        len: len as usize,
    })
}

/// The per-axis ranges a Slice with these inputs reads from a tensor of shape `dims`.
pub(crate) fn slice_plan(
    dims: &[usize],
    starts: &CpuValue,
    ends: &CpuValue,
    axes: Option<&CpuValue>,
    steps: Option<&CpuValue>,
) -> OpResult<Vec<SliceAxis>> {
    let r = dims.len();
    let starts = int_values(starts, "starts")?;
    let ends = int_values(ends, "ends")?;
    if starts.len() != ends.len() {
        bail!("{} starts but {} ends", starts.len(), ends.len());
    }
    let axes: Vec<usize> = match axes {
        Some(a) => int_values(a, "axes")?
            .into_iter()
            .map(|a| axis_index(a, r))
            .collect::<OpResult<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = match steps {
        Some(s) => int_values(s, "steps")?,
        None => vec![1; starts.len()],
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        bail!("starts, ends, axes and steps differ in length");
    }
    if axes.iter().collect::<HashSet<_>>().len() != axes.len() {
        bail!("axes {axes:?} repeat an axis");
    }
    let mut plan: Vec<SliceAxis> = dims
        .iter()
        .map(|&d| SliceAxis {
            start: 0,
            step: 1,
            len: d,
        })
        .collect();
    for (i, &ax) in axes.iter().enumerate() {
        if ax >= r {
            bail!("axis {ax} out of range for rank {r}");
        }
        plan[ax] = slice_axis(dims[ax], starts[i], ends[i], steps[i])?;
    }
    Ok(plan)
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
    let r = x.rank();
    let mut remove: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| axis_index(a, r))
            .collect::<OpResult<_>>()?,
        None => (0..r).filter(|&i| x.dims()[i] == 1).collect(),
    };
    remove.sort_unstable();
    remove.dedup();
    let mut t = x.tensor().clone();
    for &ax in remove.iter().rev() {
        if x.dims()[ax] != 1 {
            bail!(
                "cannot squeeze axis {ax} of size {} in {}",
                x.dims()[ax],
                sh(x.dims())
            );
        }
        t = t.squeeze(ax)?;
    }
    CpuValue::from_candle(t, x.dtype())
}

pub(crate) fn unsqueeze(x: &CpuValue, axes: &[i64]) -> OpResult<CpuValue> {
    let out_rank = x.rank() + axes.len();
    let mut pos: Vec<usize> = axes
        .iter()
        .map(|&a| axis_index(a, out_rank))
        .collect::<OpResult<_>>()?;
    pos.sort_unstable();
    if pos.windows(2).any(|w| w[0] == w[1]) {
        bail!("axes {axes:?} repeat an axis");
    }
    let mut t = x.tensor().clone();
    for &p in &pos {
        t = t.unsqueeze(p)?;
    }
    CpuValue::from_candle(t, x.dtype())
}

pub(crate) fn flatten(x: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let r = x.rank();
    let ax = if axis < 0 { axis + r as i64 } else { axis };
    if ax < 0 || ax > r as i64 {
        bail!("axis {axis} out of range for rank {r}");
    }
    let ax = ax as usize;
    let rows: usize = x.dims()[..ax].iter().product();
    let cols: usize = x.dims()[ax..].iter().product();
    reshape_to(x, &[rows, cols])
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
    let Some(dims) = broadcast_shapes(x.dims(), &want) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_dims_follow_onnx_rules() {
        assert_eq!(
            reshape_dims(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_dims(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_dims(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[0, 0, 0], false).is_err());
    }

    #[test]
    fn slice_axis_clamps_like_onnx() {
        let a = |start, len, step| SliceAxis { start, step, len };
        assert_eq!(slice_axis(10, 0, 3, 1).unwrap(), a(0, 3, 1));
        assert_eq!(slice_axis(10, -3, i64::MAX, 1).unwrap(), a(7, 3, 1));
        assert_eq!(
            slice_axis(10, i64::MAX, i64::MIN, -1).unwrap(),
            a(9, 10, -1)
        );
        assert_eq!(slice_axis(10, 8, 1, -3).unwrap(), a(8, 3, -3));
        assert_eq!(slice_axis(10, 20, 30, 1).unwrap(), a(10, 0, 1));
        assert_eq!(slice_axis(10, 1, 10, 4).unwrap(), a(1, 3, 4));
        assert!(slice_axis(10, 0, 1, 0).is_err());
        assert_eq!(slice_axis(0, -1, i64::MIN, -1).unwrap().len, 0);
    }
}
