//! Output shapes and index plans that both backends work out on the host before
//! computing: Reshape (0 copies a dim, -1 is inferred), Squeeze, Unsqueeze,
//! Flatten, Transpose permutations, Split sizes, Slice plans (ONNX clamping,
//! negative indices and steps), Gather positions and output shapes, Reduce plans,
//! MatMul and Gemm shapes, Conv geometry and the input checks of GLoRA layers.
//! Inputs are plain dims and integers (read from host tensors or small downloads);
//! errors are one-line messages that each backend wraps with the node at fault.

use crate::glora::{AdapterTensors, LayerConfig, LayerShape};
use crate::ir::{AutoPad, ConvAttrs, DType, GemmAttrs, GloraLinearAttrs, WeightLayout};

/// A shape or list written as `[a,b,c]`, the form error messages use.
pub(crate) fn sh<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// A possibly negative axis of a rank-`rank` tensor as an index.
pub(crate) fn axis_index(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// The numpy broadcast of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0usize; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// The dims and element type of one input, all that shape checks read of a value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand<'a> {
    pub dims: &'a [usize],
    pub dtype: DType,
}

impl<'a> Operand<'a> {
    pub(crate) fn new(dims: &'a [usize], dtype: DType) -> Operand<'a> {
        Operand { dims, dtype }
    }
}

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

/// The axes a Squeeze removes, ascending and without repeats; each must have size 1.
/// With no `axes`, every size-1 axis.
pub(crate) fn squeeze_axes(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let r = dims.len();
    let mut remove: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| axis_index(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).filter(|&i| dims[i] == 1).collect(),
    };
    remove.sort_unstable();
    remove.dedup();
    if let Some(&ax) = remove.iter().find(|&&ax| dims[ax] != 1) {
        return Err(format!(
            "cannot squeeze axis {ax} of size {} in {}",
            dims[ax],
            sh(dims)
        ));
    }
    Ok(remove)
}

pub(crate) fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let remove = squeeze_axes(dims, axes)?;
    Ok((0..dims.len())
        .filter(|i| !remove.contains(i))
        .map(|i| dims[i])
        .collect())
}

/// Where the new size-1 axes of an Unsqueeze of a rank-`rank` tensor land in the
/// output, ascending.
pub(crate) fn unsqueeze_positions(rank: usize, axes: &[i64]) -> Result<Vec<usize>, String> {
    let out_rank = rank + axes.len();
    let mut pos: Vec<usize> = axes
        .iter()
        .map(|&a| axis_index(a, out_rank))
        .collect::<Result<_, _>>()?;
    pos.sort_unstable();
    if pos.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    Ok(pos)
}

pub(crate) fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let mut out = dims.to_vec();
    for p in unsqueeze_positions(dims.len(), axes)? {
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

/// The permutation a Transpose applies to `rank` axes (reversal when `perm` is absent).
pub(crate) fn transpose_perm(rank: usize, perm: Option<&[usize]>) -> Result<Vec<usize>, String> {
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    Ok(perm)
}

/// The concat axis and output dims of a Concat of `parts` (which must share their
/// type and every dim but the axis).
pub(crate) fn concat_dims(parts: &[Operand], axis: i64) -> Result<(usize, Vec<usize>), String> {
    let Some(first) = parts.first() else {
        return Err("no inputs".into());
    };
    let r = first.dims.len();
    let ax = axis_index(axis, r)?;
    let mut dims = first.dims.to_vec();
    dims[ax] = 0;
    for x in parts {
        if x.dtype != first.dtype {
            return Err(format!(
                "input types differ: {} and {}",
                first.dtype, x.dtype
            ));
        }
        let same = x.dims.len() == r && (0..r).all(|i| i == ax || x.dims[i] == first.dims[i]);
        if !same {
            return Err(format!(
                "cannot concatenate {} with {} on axis {ax}",
                sh(first.dims),
                sh(x.dims)
            ));
        }
        dims[ax] += x.dims[ax];
    }
    Ok((ax, dims))
}

/// The piece sizes of Split along axis `ax` of size `d`.
pub(crate) fn split_sizes(
    d: usize,
    ax: usize,
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
        return Err(format!(
            "split sizes {sizes:?} do not add up to dim {d} of axis {ax}"
        ));
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

/// The output dims of a Gather along axis `ax`: the indices' dims replace that axis.
pub(crate) fn gather_dims(x: &[usize], ax: usize, indices: &[usize]) -> Vec<usize> {
    let mut dims = x[..ax].to_vec();
    dims.extend_from_slice(indices);
    dims.extend_from_slice(&x[ax + 1..]);
    dims
}

/// Checks that the `dy` fed to a Gather's backward has the forward output's shape.
pub(crate) fn check_gather_dy(
    x: &[usize],
    ax: usize,
    indices: &[usize],
    dy: &[usize],
) -> Result<(), String> {
    let want = gather_dims(x, ax, indices);
    if dy != want {
        return Err(format!(
            "dy of shape {} does not match the Gather output {} (x {}, indices {})",
            sh(dy),
            sh(&want),
            sh(x),
            sh(indices)
        ));
    }
    Ok(())
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

/// How a Reduce walks its input: the kept axes moved in front of the reduced ones
/// (`perm`), so that each of `rows` outputs reduces `row_len` contiguous elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReducePlan {
    pub perm: Vec<usize>,
    pub rows: usize,
    pub row_len: usize,
    pub out_dims: Vec<usize>,
}

/// The plan of a Reduce over `dims`; `None` when it is the identity.
pub(crate) fn reduce_plan(
    dims: &[usize],
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Option<ReducePlan>, String> {
    let r = dims.len();
    let Some(reduced) = reduced_axes(r, axes, noop_with_empty_axes)? else {
        return Ok(None);
    };
    let kept: Vec<usize> = (0..r).filter(|&i| !reduced[i]).collect();
    let gone: Vec<usize> = (0..r).filter(|&i| reduced[i]).collect();
    let out_dims: Vec<usize> = (0..r)
        .filter_map(|i| match (reduced[i], keepdims) {
            (false, _) => Some(dims[i]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(Some(ReducePlan {
        rows: kept.iter().map(|&i| dims[i]).product(),
        row_len: gone.iter().map(|&i| dims[i]).product(),
        perm: kept.into_iter().chain(gone).collect(),
        out_dims,
    }))
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

/// `(m, k, n)` of a Gemm of `a` by `b` (each optionally transposed), after checking
/// that both are matrices and that `c`, when given, broadcasts to `[m, n]`.
pub(crate) fn gemm_shape(
    attrs: &GemmAttrs,
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
) -> Result<(usize, usize, usize), String> {
    if a.len() != 2 || b.len() != 2 {
        return Err(format!("A and B must be 2-D, got {} and {}", sh(a), sh(b)));
    }
    let (m, k) = if attrs.trans_a {
        (a[1], a[0])
    } else {
        (a[0], a[1])
    };
    let (kb, n) = if attrs.trans_b {
        (b[1], b[0])
    } else {
        (b[0], b[1])
    };
    if k != kb {
        return Err(format!(
            "cannot multiply {}{} by {}{}",
            sh(a),
            if attrs.trans_a { "ᵀ" } else { "" },
            sh(b),
            if attrs.trans_b { "ᵀ" } else { "" }
        ));
    }
    let dims = [m, n];
    if let Some(c) = c
        && broadcast_shape(c, &dims).as_deref() != Some(&dims[..])
    {
        return Err(format!(
            "C of shape {} does not broadcast to [{m},{n}]",
            sh(c)
        ));
    }
    Ok((m, k, n))
}

/// A per-spatial-axis Conv attribute for `n` axes: `default` when absent; entries
/// must be positive except in `output_padding`.
pub(crate) fn conv_axis_values(
    v: &[usize],
    n: usize,
    default: usize,
    what: &str,
) -> Result<Vec<usize>, String> {
    if v.is_empty() {
        return Ok(vec![default; n]);
    }
    if v.len() != n {
        return Err(format!(
            "{what} {v:?} has {} entries for {n} spatial axes",
            v.len()
        ));
    }
    if what != "output_padding" && v.contains(&0) {
        return Err(format!("{what} {v:?} must be positive"));
    }
    Ok(v.to_vec())
}

/// Checks the weight's spatial taps `kernel` against the Conv attributes.
pub(crate) fn check_conv_kernel(attrs: &ConvAttrs, kernel: &[usize]) -> Result<(), String> {
    if kernel.contains(&0) {
        return Err(format!("weight has an empty kernel {}", sh(kernel)));
    }
    if !attrs.kernel_shape.is_empty() && attrs.kernel_shape != kernel {
        return Err(format!(
            "kernel_shape {} differs from the weight's {}",
            sh(&attrs.kernel_shape),
            sh(kernel)
        ));
    }
    Ok(())
}

/// The resolved geometry of a Conv over any number of spatial axes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConvGeometry {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Padding before each spatial axis.
    pub pads: Vec<usize>,
    pub out: Vec<usize>,
}

/// The geometry of a Conv of an input with spatial dims `input` and a kernel of
/// `kernel` taps (ONNX padding rules, auto_pad included).
pub(crate) fn conv_geometry(
    attrs: &ConvAttrs,
    input: &[usize],
    kernel: &[usize],
) -> Result<ConvGeometry, String> {
    let n = input.len();
    check_conv_kernel(attrs, kernel)?;
    let strides = conv_axis_values(&attrs.strides, n, 1, "strides")?;
    let dilations = conv_axis_values(&attrs.dilations, n, 1, "dilations")?;
    let mut pads = vec![0usize; n];
    let mut out = vec![0usize; n];
    for i in 0..n {
        let span = (kernel[i] - 1) * dilations[i] + 1;
        let (pb, pe) = match attrs.auto_pad {
            AutoPad::NotSet => {
                if attrs.pads.is_empty() {
                    (0, 0)
                } else if attrs.pads.len() == 2 * n {
                    (attrs.pads[i], attrs.pads[i + n])
                } else {
                    return Err(format!(
                        "pads {:?} has {} entries for {n} spatial axes",
                        attrs.pads,
                        attrs.pads.len()
                    ));
                }
            }
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
    Ok(ConvGeometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads,
        out,
    })
}

/// The geometry of a 2-D convolution as fixed arrays.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conv2d {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pads: [usize; 2],
    pub out: [usize; 2],
}

/// [`conv_geometry`] for two spatial axes.
pub(crate) fn conv2d_geometry(
    attrs: &ConvAttrs,
    input: [usize; 2],
    kernel: [usize; 2],
) -> Result<Conv2d, String> {
    let g = conv_geometry(attrs, &input, &kernel)?;
    let pair = |v: &[usize]| [v[0], v[1]];
    Ok(Conv2d {
        kernel,
        strides: pair(&g.strides),
        dilations: pair(&g.dilations),
        pads: pair(&g.pads),
        out: pair(&g.out),
    })
}

/// Names of the eight adapter inputs of a GLoRA layer, in slot order.
pub(crate) const GLORA_ADAPTER_NAMES: [&str; 8] = ["Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"];

/// The stored shapes of a GLoRA layer's eight adapter tensors.
pub(crate) fn glora_adapter_shapes(a: &GloraLinearAttrs) -> [Vec<usize>; 8] {
    let layer = LayerShape {
        d_in: a.d_in,
        d_out: a.d_out,
        has_bias: a.has_bias,
    };
    AdapterTensors::expected_shapes(layer, a.rank)
}

/// The eleven inputs of a GLoRA layer as dims and types, by role.
pub(crate) struct GloraOperands<'a> {
    pub x: Operand<'a>,
    pub w0: Operand<'a>,
    pub b0: Option<Operand<'a>>,
    /// Ad, Au, Bd, Bu, Cd, Cu, D, E.
    pub adapters: [Operand<'a>; 8],
}

impl<'a> GloraOperands<'a> {
    /// The operands of a backend's input values, read through `of`.
    pub(crate) fn of_values<V>(
        x: &'a V,
        w0: &'a V,
        b0: Option<&'a V>,
        adapters: [&'a V; 8],
        of: impl Fn(&'a V) -> Operand<'a>,
    ) -> GloraOperands<'a> {
        GloraOperands {
            x: of(x),
            w0: of(w0),
            b0: b0.map(&of),
            adapters: adapters.map(&of),
        }
    }
}

fn check_f32(what: &str, v: Operand) -> Result<(), String> {
    if v.dtype != DType::F32 {
        return Err(format!(
            "{what} is {}; GLoRA layers run in f32 only",
            v.dtype
        ));
    }
    Ok(())
}

/// Checks a GLoRA layer's inputs against its attributes and the config about to
/// run: types, shapes, bias presence and the ranks the options read.
pub(crate) fn check_glora_operands(
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraOperands,
) -> Result<(), String> {
    if a.d_in == 0 || a.d_out == 0 || a.rank == 0 {
        return Err(format!(
            "layer '{}' has d_in = {}, d_out = {}, rank = {}; all must be at least 1",
            a.layer, a.d_in, a.d_out, a.rank
        ));
    }
    check_f32("x", ins.x)?;
    check_f32("W0", ins.w0)?;
    if ins.x.dims.last() != Some(&a.d_in) {
        return Err(format!(
            "layer '{}': x {} does not end in d_in = {}",
            a.layer,
            sh(ins.x.dims),
            a.d_in
        ));
    }
    let w0_shape = match a.layout {
        WeightLayout::InOut => [a.d_in, a.d_out],
        WeightLayout::OutIn => [a.d_out, a.d_in],
    };
    if ins.w0.dims != w0_shape {
        return Err(format!(
            "layer '{}': W0 is {}, expected {}",
            a.layer,
            sh(ins.w0.dims),
            sh(&w0_shape)
        ));
    }
    match ins.b0 {
        Some(_) if !a.has_bias => {
            return Err(format!("layer '{}' has no bias but b0 is given", a.layer));
        }
        None if a.has_bias => {
            return Err(format!("layer '{}' has a bias but b0 is missing", a.layer));
        }
        Some(b) if b.dims != [a.d_out] => {
            return Err(format!(
                "layer '{}': b0 is {}, expected [{}]",
                a.layer,
                sh(b.dims),
                a.d_out
            ));
        }
        Some(b) => check_f32("b0", b)?,
        None => {}
    }
    for ((&v, expected), name) in ins
        .adapters
        .iter()
        .zip(glora_adapter_shapes(a))
        .zip(GLORA_ADAPTER_NAMES)
    {
        check_f32(name, v)?;
        if v.dims != expected.as_slice() {
            return Err(format!(
                "layer '{}': {name} is {}, expected {}",
                a.layer,
                sh(v.dims),
                sh(&expected)
            ));
        }
    }
    if let Some((slot, r)) = config.lora_ranks().find(|&(_, r)| r > a.rank) {
        return Err(format!(
            "layer '{}': option {slot} reads rank {r}, but the adapter is stored at rank {}",
            a.layer, a.rank
        ));
    }
    Ok(())
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
        assert_eq!(
            squeeze_axes(&[1, 3, 1], Some(&[2, 0, -1])).unwrap(),
            vec![0, 2]
        );
        assert_eq!(unsqueeze_positions(2, &[-1, 0]).unwrap(), vec![0, 3]);
        assert_eq!(unsqueeze_dims(&[3, 4], &[0, -1]).unwrap(), vec![1, 3, 4, 1]);
        assert_eq!(unsqueeze_dims(&[3], &[1]).unwrap(), vec![3, 1]);
        assert!(unsqueeze_dims(&[3], &[0, 0]).is_err());
        assert_eq!(flatten_dims(&[2, 3, 4], 1).unwrap(), vec![2, 12]);
        assert_eq!(flatten_dims(&[2, 3, 4], 0).unwrap(), vec![1, 24]);
        assert_eq!(flatten_dims(&[2, 3, 4], -1).unwrap(), vec![6, 4]);
        assert!(flatten_dims(&[2, 3], 3).is_err());
    }

    #[test]
    fn concat_adds_up_the_axis_and_checks_the_rest() {
        let f = |dims| Operand {
            dims,
            dtype: DType::F32,
        };
        let (ax, dims) = concat_dims(&[f(&[2, 3]), f(&[2, 5])], -1).unwrap();
        assert_eq!((ax, dims), (1, vec![2, 8]));
        assert_eq!(
            concat_dims(&[f(&[2, 3]), f(&[3, 3])], 1).unwrap_err(),
            "cannot concatenate [2,3] with [3,3] on axis 1"
        );
        let i = Operand {
            dims: &[2, 3],
            dtype: DType::I64,
        };
        assert!(concat_dims(&[f(&[2, 3]), i], 0).is_err());
        assert!(concat_dims(&[], 0).is_err());
    }

    #[test]
    fn equal_splits_leave_the_remainder_last() {
        assert_eq!(split_sizes(7, 0, None, 3).unwrap(), vec![3, 3, 1]);
        assert_eq!(split_sizes(6, 0, Some(&[1, 5]), 2).unwrap(), vec![1, 5]);
        assert_eq!(
            split_sizes(6, 1, Some(&[1, 4]), 2).unwrap_err(),
            "split sizes [1, 4] do not add up to dim 6 of axis 1"
        );
        assert!(split_sizes(6, 0, Some(&[6]), 2).is_err());
    }

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shape(&[0, 3], &[1, 3]), Some(vec![0, 3]));
        assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn negative_axes_count_from_the_end() {
        assert_eq!(axis_index(-1, 3).unwrap(), 2);
        assert_eq!(axis_index(0, 3).unwrap(), 0);
        assert!(axis_index(3, 3).is_err());
        assert!(axis_index(-4, 3).is_err());
        assert_eq!(sh(&[2, 3]), "[2,3]");
    }

    #[test]
    fn transpose_perms_default_to_reversal_and_must_be_permutations() {
        assert_eq!(transpose_perm(3, None).unwrap(), vec![2, 1, 0]);
        assert_eq!(transpose_perm(2, Some(&[0, 1])).unwrap(), vec![0, 1]);
        assert!(transpose_perm(2, Some(&[1, 1])).is_err());
        assert!(transpose_perm(2, Some(&[0, 2])).is_err());
        assert!(transpose_perm(3, Some(&[0, 1])).is_err());
    }

    #[test]
    fn gather_output_replaces_the_axis_by_the_indices() {
        assert_eq!(gather_dims(&[2, 5, 3], 1, &[4, 1]), vec![2, 4, 1, 3]);
        assert_eq!(gather_dims(&[5], 0, &[]), Vec::<usize>::new());
        assert!(check_gather_dy(&[2, 5], 1, &[3], &[2, 3]).is_ok());
        assert!(
            check_gather_dy(&[2, 5], 1, &[3], &[2, 5])
                .unwrap_err()
                .contains("does not match the Gather output [2,3]")
        );
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
    fn reduce_plans_move_the_reduced_axes_last() {
        let p = reduce_plan(&[2, 3, 4], Some(&[1]), false, false)
            .unwrap()
            .unwrap();
        assert_eq!(p.perm, vec![0, 2, 1]);
        assert_eq!((p.rows, p.row_len), (8, 3));
        assert_eq!(p.out_dims, vec![2, 4]);
        let kept = reduce_plan(&[2, 3], None, true, false).unwrap().unwrap();
        assert_eq!((kept.rows, kept.row_len, kept.out_dims), (1, 6, vec![1, 1]));
        assert_eq!(reduce_plan(&[2, 3], None, true, true).unwrap(), None);
    }

    #[test]
    fn gemm_shapes_follow_the_transposes() {
        let t = GemmAttrs {
            trans_a: true,
            ..GemmAttrs::default()
        };
        assert_eq!(
            gemm_shape(&t, &[4, 3], &[4, 5], Some(&[5])).unwrap(),
            (3, 4, 5)
        );
        assert_eq!(
            gemm_shape(&t, &[3, 4], &[4, 5], None).unwrap_err(),
            "cannot multiply [3,4]ᵀ by [4,5]"
        );
        assert!(gemm_shape(&t, &[4, 3], &[4, 5], Some(&[2, 5])).is_err());
        assert!(gemm_shape(&t, &[4], &[4, 5], None).is_err());
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
        let one_axis = ConvAttrs {
            strides: vec![2],
            ..ConvAttrs::default()
        };
        assert_eq!(
            conv2d_geometry(&one_axis, [4, 4], [1, 1]).unwrap_err(),
            "strides [2] has 1 entries for 2 spatial axes"
        );
        // in 9, k 3, s 2, pads 1/1 over one spatial axis: (9 + 2 − 3) / 2 + 1 = 5.
        let g = conv_geometry(
            &ConvAttrs {
                strides: vec![2],
                pads: vec![1, 1],
                ..ConvAttrs::default()
            },
            &[9],
            &[3],
        )
        .unwrap();
        assert_eq!((g.out, g.pads), (vec![5], vec![1]));
    }

    fn glora_attrs() -> GloraLinearAttrs {
        GloraLinearAttrs {
            layer: "blk.0".into(),
            d_in: 3,
            d_out: 2,
            rank: 4,
            has_bias: false,
            layout: WeightLayout::OutIn,
        }
    }

    #[test]
    fn glora_adapter_shapes_follow_the_stored_rank() {
        let s = glora_adapter_shapes(&glora_attrs());
        assert_eq!(s[0], vec![2, 4]);
        assert_eq!(s[1], vec![4, 3]);
        assert_eq!(s[4], vec![3, 4]);
        assert_eq!(s[5], vec![4, 1]);
        assert_eq!(s[7], vec![2]);
    }

    #[test]
    fn glora_operand_checks_name_the_bad_input() {
        let a = glora_attrs();
        let shapes = glora_adapter_shapes(&a);
        let f32_of = |dims: &'static [usize]| Operand {
            dims,
            dtype: DType::F32,
        };
        let adapters: [Operand; 8] = std::array::from_fn(|i| Operand {
            dims: &shapes[i],
            dtype: DType::F32,
        });
        let good = GloraOperands {
            x: f32_of(&[5, 3]),
            w0: f32_of(&[2, 3]),
            b0: None,
            adapters,
        };
        let config = LayerConfig::NONE;
        assert!(check_glora_operands(&a, &config, &good).is_ok());
        let too_deep = LayerConfig {
            b: crate::glora::AbOption::Lora(5),
            ..LayerConfig::NONE
        };
        assert!(
            check_glora_operands(&a, &too_deep, &good)
                .unwrap_err()
                .contains("option B reads rank 5")
        );
        let wrong_w0 = GloraOperands {
            w0: f32_of(&[3, 2]),
            ..good
        };
        assert_eq!(
            check_glora_operands(&a, &config, &wrong_w0).unwrap_err(),
            "layer 'blk.0': W0 is [3,2], expected [2,3]"
        );
        let mut adapters = adapters;
        adapters[6] = f32_of(&[3]);
        let wrong_d = GloraOperands {
            x: f32_of(&[5, 3]),
            w0: f32_of(&[2, 3]),
            b0: None,
            adapters,
        };
        assert_eq!(
            check_glora_operands(&a, &config, &wrong_d).unwrap_err(),
            "layer 'blk.0': D is [3], expected [2]"
        );
    }
}
