//! Shape and data-movement ops: Reshape, Transpose, Concat, Split, Gather, Slice,
//! Squeeze, Unsqueeze, Flatten, Shape, Expand, ConstantOfShape, Range, and the
//! `Constant` node. Squeeze/Unsqueeze axes and Split sizes moved from attributes to
//! inputs at opset 13 (Split gained `num_outputs` at 18); import reads every form and
//! export writes the one its opset defines.

use std::path::Path;

use super::{ExportCtx, ExportNode, Importer, NodeCtx, Planned};
use crate::ir::{Dim, Op, Tensor};
use crate::onnx::OnnxError;
use crate::onnx::attrs::{self, Attrs};
use crate::onnx::pb::NodeProto;
use crate::onnx::tensor::{tensor_from_proto, tensor_to_proto};

pub(super) fn importer(op_type: &str) -> Option<Importer> {
    let f: Importer = match op_type {
        "Reshape" => reshape,
        "Transpose" => transpose,
        "Concat" => concat,
        "Split" => split,
        "Gather" => |c| {
            let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(0);
            c.simple(Op::Gather { axis }, 2, 2)
        },
        "Slice" => |c| c.simple(Op::Slice, 5, 3),
        "Squeeze" => squeeze,
        "Unsqueeze" => unsqueeze,
        "Flatten" => |c| {
            let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(1);
            c.simple(Op::Flatten { axis }, 1, 1)
        },
        "Shape" => |c| {
            let start = c.attr(c.attrs.int("start"))?.unwrap_or(0);
            let end = c.attr(c.attrs.int("end"))?;
            c.simple(Op::Shape { start, end }, 1, 1)
        },
        "Expand" => |c| c.simple(Op::Expand, 2, 2),
        "ConstantOfShape" => constant_of_shape,
        "Range" => |c| c.simple(Op::Range, 3, 3),
        "Constant" => constant,
        _ => return None,
    };
    Some(f)
}

fn reshape(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let allowzero = c.attr(c.attrs.flag("allowzero"))?.unwrap_or(false);
    c.simple(Op::Reshape { allowzero }, 2, 2)
}

fn transpose(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let perm = c.attr(c.attrs.sizes("perm"))?;
    c.simple(Op::Transpose { perm }, 1, 1)
}

fn concat(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let axis = c
        .attr(c.attrs.int("axis"))?
        .ok_or_else(|| c.err("attribute 'axis' is required"))?;
    let n = c.input_count();
    c.simple(Op::Concat { axis }, n.max(1), n.max(1))
}

fn split(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(0);
    let sizes = if c.opset < 13 {
        c.check_inputs(1, 1)?;
        c.attr(c.attrs.ints("split"))?.map(<[i64]>::to_vec)
    } else {
        c.check_inputs(1, 2)?;
        c.const_ints(1, "split sizes")?
    };
    let x = c.required(0)?;
    // The number of outputs decides the pieces of an equal split: keep them all.
    let outputs = c.outputs(true);
    if outputs.is_empty() {
        return Err(c.err("has no outputs"));
    }
    if c.opset >= 18
        && let Some(n) = c.attr(c.attrs.int("num_outputs"))?
        && n != outputs.len() as i64
    {
        return Err(c.err(format!(
            "attribute 'num_outputs' is {n} but the node has {} outputs",
            outputs.len()
        )));
    }
    let sizes = match sizes {
        None => None,
        Some(s) => {
            if s.len() != outputs.len() {
                return Err(c.err(format!(
                    "has {} split sizes but {} outputs",
                    s.len(),
                    outputs.len()
                )));
            }
            let sizes = s
                .iter()
                .map(|&v| {
                    usize::try_from(v).map_err(|_| c.err(format!("split size {v} is negative")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(sizes)
        }
    };
    Ok(vec![c.plan(
        c.name.clone(),
        Op::Split { axis, sizes },
        vec![Some(x)],
        outputs,
    )])
}

/// Squeeze and Unsqueeze axes: an attribute before opset 13, a constant input after.
fn axes(c: &NodeCtx) -> Result<Option<Vec<i64>>, OnnxError> {
    if c.opset < 13 {
        c.check_inputs(1, 1)?;
        Ok(c.attr(c.attrs.ints("axes"))?.map(<[i64]>::to_vec))
    } else {
        c.check_inputs(1, 2)?;
        c.const_ints(1, "axes")
    }
}

fn squeeze(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let axes = axes(c)?.filter(|a| !a.is_empty());
    let x = c.required(0)?;
    let outputs = c.checked_outputs(1, 1)?;
    Ok(vec![c.plan(
        c.name.clone(),
        Op::Squeeze { axes },
        vec![Some(x)],
        outputs,
    )])
}

fn unsqueeze(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let axes = axes(c)?.ok_or_else(|| c.err("needs axes"))?;
    let x = c.required(0)?;
    let outputs = c.checked_outputs(1, 1)?;
    Ok(vec![c.plan(
        c.name.clone(),
        Op::Unsqueeze { axes },
        vec![Some(x)],
        outputs,
    )])
}

/// The fill value ONNX uses when ConstantOfShape has no `value`: a float 0.
fn default_fill() -> Tensor {
    Tensor::zeros(crate::ir::DType::F32, vec![1])
}

fn constant_of_shape(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let value = match c.attr(c.attrs.tensor("value"))? {
        None => default_fill(),
        Some(t) => {
            let v =
                tensor_from_proto(t, None).map_err(|e| c.err(format!("attribute 'value': {e}")))?;
            if v.numel() != 1 {
                return Err(c.err(format!(
                    "attribute 'value' must hold one element, not {}",
                    v.numel()
                )));
            }
            v
        }
    };
    c.simple(Op::ConstantOfShape { value }, 1, 1)
}

/// The value of a `Constant` node, from whichever of its value attributes is set.
/// Read before the nodes are translated, so that any node may use it as a constant
/// input.
pub(crate) fn constant_value(node: &NodeProto, base_dir: Option<&Path>) -> Result<Tensor, String> {
    let a = Attrs(&node.attribute);
    let unsupported = ["sparse_value", "value_string", "value_strings"];
    if let Some(name) = unsupported
        .iter()
        .find(|n| node.attribute.iter().any(|at| at.name == **n))
    {
        return Err(format!("attribute '{name}' is not supported"));
    }
    if let Some(t) = a.tensor("value")? {
        return tensor_from_proto(t, base_dir).map_err(|e| format!("attribute 'value': {e}"));
    }
    if let Some(v) = a.float("value_float")? {
        return Ok(Tensor::scalar_f32(v));
    }
    if let Some(v) = a.floats("value_floats")? {
        return Tensor::from_f32(vec![v.len()], v.to_vec()).map_err(|e| e.to_string());
    }
    if let Some(v) = a.int("value_int")? {
        return Ok(Tensor::scalar_i64(v));
    }
    if let Some(v) = a.ints("value_ints")? {
        return Ok(Tensor::vec_i64(v.to_vec()));
    }
    Err("has no value attribute".to_string())
}

fn constant(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    c.check_inputs(0, 0)?;
    let outputs = c.checked_outputs(1, 1)?;
    let value = c.const_value_of(&outputs[0])?;
    Ok(vec![c.plan(
        c.name.clone(),
        Op::Const(value),
        vec![],
        outputs,
    )])
}

pub(super) fn export(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    let attribute = match n.op {
        Op::Reshape { allowzero } => flag_if_set("allowzero", *allowzero),
        Op::Transpose { perm } => perm.iter().map(|p| attrs::sizes("perm", p)).collect(),
        Op::Concat { axis } => vec![attrs::int("axis", *axis)],
        Op::Gather { axis } | Op::Flatten { axis } => vec![attrs::int("axis", *axis)],
        Op::Shape { start, end } => {
            let mut v = Vec::new();
            if *start != 0 {
                v.push(attrs::int("start", *start));
            }
            if let Some(e) = end {
                v.push(attrs::int("end", *e));
            }
            v
        }
        Op::ConstantOfShape { value } => vec![attrs::tensor("value", tensor_to_proto("", value))],
        Op::Slice | Op::Expand | Op::Range => vec![],
        Op::Split { axis, sizes } => return export_split(cx, n, *axis, sizes.as_deref()),
        Op::Squeeze { axes } => return export_with_axes(cx, n, axes.as_deref()),
        Op::Unsqueeze { axes } => return export_with_axes(cx, n, Some(axes)),
        _ => return Err(n.err("is not a shape op")),
    };
    cx.emit_as_is(n, attribute);
    Ok(())
}

fn flag_if_set(name: &str, v: bool) -> Vec<crate::onnx::pb::AttributeProto> {
    if v { vec![attrs::int(name, 1)] } else { vec![] }
}

/// Squeeze and Unsqueeze: axes as a constant input (every export opset is ≥ 13).
fn export_with_axes(
    cx: &mut ExportCtx,
    n: &ExportNode,
    axes: Option<&[i64]>,
) -> Result<(), OnnxError> {
    let mut inputs = vec![n.data_input()?];
    if let Some(a) = axes {
        inputs.push(cx.ints_input(&format!("{}/axes", n.name), a));
    }
    cx.emit(n.op.name(), n.name, inputs, n.outputs.clone(), vec![]);
    Ok(())
}

fn export_split(
    cx: &mut ExportCtx,
    n: &ExportNode,
    axis: i64,
    sizes: Option<&[usize]>,
) -> Result<(), OnnxError> {
    let mut inputs = vec![n.data_input()?];
    let mut attribute = vec![attrs::int("axis", axis)];
    let pieces = n.outputs.len();
    if pieces == 0 {
        return Err(n.err("has no outputs"));
    }
    let explicit = match sizes {
        Some(s) => Some(s.to_vec()),
        // Opset 18 says how to split unevenly (the last piece smaller), as the IR does.
        None if cx.opset >= 18 => {
            attribute.push(attrs::int("num_outputs", pieces as i64));
            None
        }
        // Before 18 an equal split must divide the axis: spell out uneven ones.
        None => match split_dim(n, axis)? {
            Some(len) if len % pieces != 0 => Some(uneven_sizes(len, pieces)),
            _ => None,
        },
    };
    if let Some(s) = explicit {
        let v: Vec<i64> = s.iter().map(|&x| x as i64).collect();
        inputs.push(cx.ints_input(&format!("{}/split", n.name), &v));
    }
    cx.emit("Split", n.name, inputs, n.outputs.clone(), attribute);
    Ok(())
}

/// The size of the split axis, when the input's type knows it.
fn split_dim(n: &ExportNode, axis: i64) -> Result<Option<usize>, OnnxError> {
    let Some(ty) = n.input_types.first().copied().flatten() else {
        return Ok(None);
    };
    let rank = ty.shape.rank() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(n.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(match &ty.shape.dims()[a as usize] {
        Dim::Known(d) => Some(*d),
        Dim::Sym(_) => None,
    })
}

/// Pieces of `ceil(len / pieces)` with a smaller last one, as opset 18 defines an
/// uneven equal split.
fn uneven_sizes(len: usize, pieces: usize) -> Vec<usize> {
    let chunk = len.div_ceil(pieces);
    (0..pieces)
        .map(|i| len.saturating_sub(i * chunk).min(chunk))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uneven_split_sizes_follow_opset_18() {
        assert_eq!(uneven_sizes(7, 3), vec![3, 3, 1]);
        assert_eq!(uneven_sizes(10, 4), vec![3, 3, 3, 1]);
        assert_eq!(uneven_sizes(4, 3), vec![2, 2, 0]);
    }
}
