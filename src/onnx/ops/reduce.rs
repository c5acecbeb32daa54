//! ReduceMean, ReduceSum and ReduceMax. Their `axes` moved from an attribute to a
//! second input, at opset 13 for ReduceSum and at opset 18 for the others; import
//! reads either form and export writes the one its opset defines.

use super::{ExportCtx, ExportNode, Importer, NodeCtx, Planned};
use crate::ir::{Op, ReduceOp};
use crate::onnx::OnnxError;
use crate::onnx::attrs;

pub(super) fn importer(op_type: &str) -> Option<Importer> {
    match op_type {
        "ReduceMean" | "ReduceSum" | "ReduceMax" => Some(reduce),
        _ => None,
    }
}

/// The first opset where `op` takes its axes as an input.
fn axes_input_since(op: ReduceOp) -> i64 {
    match op {
        ReduceOp::Sum => 13,
        ReduceOp::Mean | ReduceOp::Max => 18,
    }
}

fn reduce(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let op = match c.op_type() {
        "ReduceMean" => ReduceOp::Mean,
        "ReduceSum" => ReduceOp::Sum,
        _ => ReduceOp::Max,
    };
    let keepdims = c.attr(c.attrs.flag("keepdims"))?.unwrap_or(true);
    let noop_with_empty_axes = c
        .attr(c.attrs.flag("noop_with_empty_axes"))?
        .unwrap_or(false);
    let axes = if c.opset >= axes_input_since(op) {
        c.check_inputs(1, 2)?;
        c.const_ints(1, "axes")?
    } else {
        c.check_inputs(1, 1)?;
        c.attr(c.attrs.ints("axes"))?.map(<[i64]>::to_vec)
    };
    // An empty axes list and no axes at all mean the same thing in every opset.
    let axes = axes.filter(|a| !a.is_empty());
    let x = c.required(0)?;
    let outputs = c.checked_outputs(1, 1)?;
    let ir = Op::Reduce {
        op,
        axes,
        keepdims,
        noop_with_empty_axes,
    };
    Ok(vec![c.plan(c.name.clone(), ir, vec![Some(x)], outputs)])
}

pub(super) fn export(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    let Op::Reduce {
        op,
        axes,
        keepdims,
        noop_with_empty_axes,
    } = n.op
    else {
        return Err(n.err("is not a reduction"));
    };
    let as_input = cx.opset >= axes_input_since(*op);
    if axes.is_none() && *noop_with_empty_axes && !as_input {
        // Without axes this reduction is the identity, and this opset has no way to
        // say "no axes means no reduction".
        cx.emit(
            "Identity",
            n.name,
            vec![n.data_input()?],
            n.outputs.clone(),
            vec![],
        );
        return Ok(());
    }
    let mut inputs = vec![n.data_input()?];
    let mut attribute = Vec::new();
    match (axes, as_input) {
        (Some(a), true) => inputs.push(cx.ints_input(&format!("{}/axes", n.name), a)),
        (Some(a), false) => attribute.push(attrs::ints("axes", a.iter().copied())),
        (None, _) => {}
    }
    if !keepdims {
        attribute.push(attrs::int("keepdims", 0));
    }
    if *noop_with_empty_axes {
        attribute.push(attrs::int("noop_with_empty_axes", 1));
    }
    cx.emit(n.op.name(), n.name, inputs, n.outputs.clone(), attribute);
    Ok(())
}
