//! Output shapes and index plans that ops work out on the host before launching:
//! Reshape (0 copies a dim, -1 is inferred), Squeeze, Unsqueeze, Flatten, Split
//! sizes, Slice plans (ONNX clamping, negative indices and steps), Gather
//! positions, Reduce axes, MatMul shapes and Conv geometry. They follow the CPU
//! backend's rules exactly; the integer inputs come from host mirrors or small
//! downloads.

use crate::ir::{AutoPad, ConvAttrs};

use super::layout::{axis_index, broadcast_shape, sh};

/// The output dims of Reshape.
pub(crate) fn reshape_dims(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let numel: usize = input.iter().product();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        let d = match s {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(format!("shape {} has more than one -1", sh(spec)));
                }
                1
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => d,
                None => {
                    return Err(format!(
                        "shape {} copies dim {i} of an input of rank {}",
                        sh(spec),
                        input.len()
                    ));
                }
            },
            s if s < 0 => return Err(format!("shape {} has a negative size", sh(spec))),
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
            return Err(format!("cannot reshape {} to {}", sh(input), sh(spec)));
        };
        dims[i] = numel / known;
    }
    if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(numel) {
        return Err(format!(
            "cannot reshape {} ({numel} elements) to {}",
            sh(input),
            sh(spec)
        ));
    }
    Ok(dims)
}

pub(crate) fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let r = dims.len();
    let remove: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| axis_index(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).filter(|&i| dims[i] == 1).collect(),
    };
    for &ax in &remove {
        if dims[ax] != 1 {
            return Err(format!(
                "cannot squeeze axis {ax} of size {} in {}",
                dims[ax],
                sh(dims)
            ));
        }
    }
    Ok((0..r)
        .filter(|i| !remove.contains(i))
        .map(|i| dims[i])
        .collect())
}

pub(crate) fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let out_rank = dims.len() + axes.len();
    let mut pos: Vec<usize> = axes
        .iter()
        .map(|&a| axis_index(a, out_rank))
        .collect::<Result<_, _>>()?;
    pos.sort_unstable();
    if pos.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    let mut out = dims.to_vec();
    for &p in &pos {
        out.insert(p, 1);
    }
    Ok(out)
}

pub(crate) fn flatten_dims(dims: &[usize], axis: i64) -> Result<Vec<usize>, String> {
    let r = dims.len();
    let ax = if axis < 0 { axis + r as i64 } else { axis };
    if ax < 0 || ax > r as i64 {
        return Err(format!("axis {axis} out of range for rank {r}"));
    }
    let ax = ax as usize;
    Ok(vec![
        dims[..ax].iter().product(),
        dims[ax..].iter().product(),
    ])
}

/// The piece sizes of Split along an axis of size `d`.
pub(crate) fn split_sizes(
    d: usize,
    sizes: Option<&[usize]>,
    outputs: usize,
) -> Result<Vec<usize>, String> {
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.len() != outputs {
                return Err(format!("{} split sizes for {outputs} outputs", s.len()));
            }
            s.to_vec()
        }
        None => {
            if outputs == 0 {
                return Err("no outputs to split into".into());
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
        return Err(format!("split sizes {sizes:?} do not add up to dim {d}"));
    }
    Ok(sizes)
}

/// Gather indices as positions along an axis of size `d` (negatives from the end).
pub(crate) fn gather_positions(indices: &[i64], d: usize, ax: usize) -> Result<Vec<i64>, String> {
    indices
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if j < 0 || j >= d as i64 {
                return Err(format!(
                    "index {i} is out of range for axis {ax} of size {d}"
                ));
            }
            Ok(j)
        })
        .collect()
}

/// One axis of a Slice after clamping: first index, step and length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// ONNX Slice clamping for one axis of size `d`.
fn slice_axis(d: usize, start: i64, end: i64, step: i64) -> Result<SliceAxis, String> {
    if step == 0 {
        return Err("slice step cannot be 0".into());
    }
    if d == 0 {
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

/// The per-axis ranges a Slice reads from a tensor of shape `dims`.
pub(crate) fn slice_plan(
    dims: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceAxis>, String> {
    let r = dims.len();
    if starts.len() != ends.len() {
        return Err(format!("{} starts but {} ends", starts.len(), ends.len()));
    }
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| axis_index(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps: Vec<i64> = match steps {
        Some(s) => s.to_vec(),
        None => vec![1; starts.len()],
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut seen = vec![false; r];
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
            return Err(format!("axis {ax} out of range for rank {r}"));
        }
        if std::mem::replace(&mut seen[ax], true) {
            return Err(format!("axes {axes:?} repeat an axis"));
        }
        plan[ax] = slice_axis(dims[ax], starts[i], ends[i], steps[i])?;
    }
    Ok(plan)
}

/// Which axes a Reduce removes; `None` when it is the identity
/// (`noop_with_empty_axes` with no axes).
pub(crate) fn reduced_axes(
    rank: usize,
    axes: Option<&[i64]>,
    noop_with_empty_axes: bool,
) -> Result<Option<Vec<bool>>, String> {
    let mut reduced = vec![false; rank];
    match axes {
        Some(a) if !a.is_empty() => {
            for &ax in a {
                let i = axis_index(ax, rank)?;
                if std::mem::replace(&mut reduced[i], true) {
                    return Err(format!("axes {a:?} repeat an axis"));
                }
            }
        }
        _ if noop_with_empty_axes => return Ok(None),
        _ => reduced.iter_mut().for_each(|f| *f = true),
    }
    Ok(Some(reduced))
}

/// Shapes of a MatMul after 1-D promotion.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MatMulShape {
    /// The broadcast batch dims.
    pub batch: Vec<usize>,
    /// Each operand's own batch dims, left-padded with 1s to `batch`'s rank.
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub out: Vec<usize>,
}

pub(crate) fn matmul_shape(a: &[usize], b: &[usize]) -> Result<MatMulShape, String> {
    let fail = || Err(format!("cannot multiply {} by {}", sh(a), sh(b)));
    if a.is_empty() || b.is_empty() {
        return fail();
    }
    let (ab, m, k) = match a.len() {
        1 => (&a[..0], 1, a[0]),
        r => (&a[..r - 2], a[r - 2], a[r - 1]),
    };
    let (bb, kb, n) = match b.len() {
        1 => (&b[..0], b[0], 1),
        r => (&b[..r - 2], b[r - 2], b[r - 1]),
    };
    if k != kb {
        return fail();
    }
    let Some(batch) = broadcast_shape(ab, bb) else {
        return fail();
    };
    let pad = |d: &[usize]| {
        let mut v = vec![1usize; batch.len() - d.len()];
        v.extend_from_slice(d);
        v
    };
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulShape {
        a_batch: pad(ab),
        b_batch: pad(bb),
        batch,
        m,
        k,
        n,
        out,
    })
}

/// The resolved geometry of a 2-D convolution.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conv2d {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pads: [usize; 2],
    pub out: [usize; 2],
}

fn per_axis(v: &[usize], default: usize, what: &str) -> Result<[usize; 2], String> {
    match v {
        [] => Ok([default; 2]),
        [a, b] if *a > 0 && *b > 0 => Ok([*a, *b]),
        _ => Err(format!("{what} {v:?} must hold 2 positive entries")),
    }
}

/// The geometry of a 2-D Conv of an input with spatial dims `input` and a kernel
/// of `kernel` taps (ONNX padding rules, auto_pad included).
pub(crate) fn conv2d_geometry(
    attrs: &ConvAttrs,
    input: [usize; 2],
    kernel: [usize; 2],
) -> Result<Conv2d, String> {
    if kernel.contains(&0) {
        return Err(format!("weight has an empty kernel {}", sh(&kernel)));
    }
    if !attrs.kernel_shape.is_empty() && attrs.kernel_shape != kernel {
        return Err(format!(
            "kernel_shape {} differs from the weight's {}",
            sh(&attrs.kernel_shape),
            sh(&kernel)
        ));
    }
    let strides = per_axis(&attrs.strides, 1, "strides")?;
    let dilations = per_axis(&attrs.dilations, 1, "dilations")?;
    let mut pads = [0usize; 2];
    let mut out = [0usize; 2];
    for i in 0..2 {
        let span = (kernel[i] - 1) * dilations[i] + 1;
        let (pb, pe) = match attrs.auto_pad {
            AutoPad::NotSet => match attrs.pads.len() {
                0 => (0, 0),
                4 => (attrs.pads[i], attrs.pads[i + 2]),
                l => {
                    return Err(format!(
                        "pads {:?} has {l} entries for 2 spatial axes",
                        attrs.pads
                    ));
                }
            },
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = input[i].div_ceil(strides[i]);
                let total = ((o.max(1) - 1) * strides[i] + span).saturating_sub(input[i]);
                let small = total / 2;
                if attrs.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = input[i] + pb + pe;
        if padded < span {
            return Err(format!(
                "kernel extent {span} on spatial axis {i} exceeds the padded input size {padded}"
            ));
        }
        pads[i] = pb;
        out[i] = (padded - span) / strides[i] + 1;
    }
    Ok(Conv2d {
        kernel,
        strides,
        dilations,
        pads,
        out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_follows_onnx_rules() {
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
    fn squeeze_unsqueeze_and_flatten_move_size_one_axes() {
        assert_eq!(squeeze_dims(&[1, 3, 1], None).unwrap(), vec![3]);
        assert_eq!(squeeze_dims(&[1, 3, 1], Some(&[-1])).unwrap(), vec![1, 3]);
        assert!(squeeze_dims(&[2, 3], Some(&[0])).is_err());
        assert_eq!(unsqueeze_dims(&[3, 4], &[0, -1]).unwrap(), vec![1, 3, 4, 1]);
        assert_eq!(unsqueeze_dims(&[3], &[1]).unwrap(), vec![3, 1]);
        assert!(unsqueeze_dims(&[3], &[0, 0]).is_err());
        assert_eq!(flatten_dims(&[2, 3, 4], 1).unwrap(), vec![2, 12]);
        assert_eq!(flatten_dims(&[2, 3, 4], 0).unwrap(), vec![1, 24]);
        assert_eq!(flatten_dims(&[2, 3, 4], -1).unwrap(), vec![6, 4]);
        assert!(flatten_dims(&[2, 3], 3).is_err());
    }

    #[test]
    fn equal_splits_leave_the_remainder_last() {
        assert_eq!(split_sizes(7, None, 3).unwrap(), vec![3, 3, 1]);
        assert_eq!(split_sizes(6, Some(&[1, 5]), 2).unwrap(), vec![1, 5]);
        assert!(split_sizes(6, Some(&[1, 4]), 2).is_err());
        assert!(split_sizes(6, Some(&[6]), 2).is_err());
    }

    #[test]
    fn gather_positions_count_negatives_from_the_end() {
        assert_eq!(gather_positions(&[0, -1, 2], 4, 0).unwrap(), vec![0, 3, 2]);
        assert!(
            gather_positions(&[4], 4, 1)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(gather_positions(&[-5], 4, 1).is_err());
    }

    #[test]
    fn slices_clamp_like_onnx() {
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
        let plan = slice_plan(&[4, 5], &[1], &[-1], Some(&[-1]), None).unwrap();
        assert_eq!(plan, vec![a(0, 4, 1), a(1, 3, 1)]);
        assert!(slice_plan(&[4, 5], &[0, 0], &[1, 1], Some(&[1, -1]), None).is_err());
        assert!(slice_plan(&[4], &[0], &[1, 2], None, None).is_err());
    }

    #[test]
    fn reduce_axes_cover_all_none_or_the_listed() {
        assert_eq!(
            reduced_axes(3, Some(&[0, -1]), false).unwrap(),
            Some(vec![true, false, true])
        );
        assert_eq!(
            reduced_axes(2, None, false).unwrap(),
            Some(vec![true, true])
        );
        assert_eq!(reduced_axes(2, Some(&[]), true).unwrap(), None);
        assert!(reduced_axes(2, Some(&[1, -1]), false).is_err());
    }

    #[test]
    fn matmul_shapes_promote_vectors_and_broadcast_batches() {
        let s = matmul_shape(&[2, 1, 3, 4], &[5, 4, 6]).unwrap();
        assert_eq!(s.batch, vec![2, 5]);
        assert_eq!(s.a_batch, vec![2, 1]);
        assert_eq!(s.b_batch, vec![1, 5]);
        assert_eq!((s.m, s.k, s.n), (3, 4, 6));
        assert_eq!(s.out, vec![2, 5, 3, 6]);
        let v = matmul_shape(&[4], &[4, 6]).unwrap();
        assert_eq!((v.m, v.out.clone()), (1, vec![6]));
        let w = matmul_shape(&[3, 4], &[4]).unwrap();
        assert_eq!((w.n, w.out.clone()), (1, vec![3]));
        assert!(matmul_shape(&[3, 4], &[5, 6]).is_err());
        assert!(matmul_shape(&[2, 3, 4], &[3, 4, 6]).is_err());
    }

    #[test]
    fn conv_geometry_pads_as_onnx_says() {
        let attrs = ConvAttrs {
            strides: vec![14, 14],
            ..ConvAttrs::default()
        };
        let g = conv2d_geometry(&attrs, [224, 224], [14, 14]).unwrap();
        assert_eq!(g.out, [16, 16]);
        assert_eq!(g.pads, [0, 0]);
        let same = ConvAttrs {
            auto_pad: AutoPad::SameUpper,
            strides: vec![2, 2],
            ..ConvAttrs::default()
        };
        // 7 inputs, stride 2: 4 outputs, total padding (4-1)·2 + 3 − 7 = 2.
        let g = conv2d_geometry(&same, [7, 7], [3, 3]).unwrap();
        assert_eq!((g.out, g.pads), ([4, 4], [1, 1]));
        let lower = ConvAttrs {
            auto_pad: AutoPad::SameLower,
            ..ConvAttrs::default()
        };
        // 4 inputs, kernel 2, stride 1: total padding 1, the odd pixel first.
        assert_eq!(
            conv2d_geometry(&lower, [4, 4], [2, 2]).unwrap().pads,
            [1, 1]
        );
        let dilated = ConvAttrs {
            pads: vec![1, 2, 1, 2],
            dilations: vec![2, 1],
            ..ConvAttrs::default()
        };
        let g = conv2d_geometry(&dilated, [5, 5], [3, 3]).unwrap();
        // Axis 0: 5 + 2 − 5 + 1 = 3; axis 1: 5 + 4 − 3 + 1 = 7.
        assert_eq!((g.out, g.pads), ([3, 7], [1, 2]));
        assert!(conv2d_geometry(&ConvAttrs::default(), [2, 2], [3, 3]).is_err());
    }
}
