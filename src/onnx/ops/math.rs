//! Elementwise and matrix ops: MatMul, Gemm, the binary and unary elementwise ops,
//! Clip, Where, Identity and Cast.

use super::{ExportCtx, ExportNode, Importer, NodeCtx, Planned};
use crate::ir::{BinaryOp, GemmAttrs, Op, UnaryOp};
use crate::onnx::OnnxError;
use crate::onnx::attrs;
use crate::onnx::tensor::{dtype_from_onnx, onnx_dtype};

pub(super) fn importer(op_type: &str) -> Option<Importer> {
    let f: Importer = match op_type {
        "MatMul" => |c| c.simple(Op::MatMul, 2, 2),
        "Gemm" => gemm,
        "Clip" => |c| c.simple(Op::Clip, 3, 1),
        "Where" => |c| c.simple(Op::Where, 3, 3),
        "Identity" => |c| c.simple(Op::Identity, 1, 1),
        "Cast" => cast,
        _ if binary_op(op_type).is_some() => binary,
        _ if unary_op(op_type).is_some() => unary,
        _ => return None,
    };
    Some(f)
}

fn binary_op(op_type: &str) -> Option<BinaryOp> {
    Some(match op_type {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        "Equal" => BinaryOp::Equal,
        _ => return None,
    })
}

fn unary_op(op_type: &str) -> Option<UnaryOp> {
    Some(match op_type {
        "Sqrt" => UnaryOp::Sqrt,
        "Reciprocal" => UnaryOp::Reciprocal,
        "Neg" => UnaryOp::Neg,
        "Abs" => UnaryOp::Abs,
        "Exp" => UnaryOp::Exp,
        "Log" => UnaryOp::Log,
        "Erf" => UnaryOp::Erf,
        "Tanh" => UnaryOp::Tanh,
        "Relu" => UnaryOp::Relu,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        _ => return None,
    })
}

fn binary(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let op = binary_op(c.op_type()).ok_or_else(|| c.err("is not a binary op"))?;
    c.simple(Op::Binary(op), 2, 2)
}

fn unary(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let op = unary_op(c.op_type()).ok_or_else(|| c.err("is not a unary op"))?;
    c.simple(Op::Unary(op), 1, 1)
}

fn gemm(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let a = c.attrs;
    let d = GemmAttrs::default();
    let attrs = GemmAttrs {
        alpha: c.attr(a.float("alpha"))?.unwrap_or(d.alpha),
        beta: c.attr(a.float("beta"))?.unwrap_or(d.beta),
        trans_a: c.attr(a.flag("transA"))?.unwrap_or(d.trans_a),
        trans_b: c.attr(a.flag("transB"))?.unwrap_or(d.trans_b),
    };
    c.simple(Op::Gemm(attrs), 3, 2)
}

fn cast(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let code = c
        .attr(c.attrs.int("to"))?
        .ok_or_else(|| c.err("attribute 'to' is required"))?;
    let code = i32::try_from(code)
        .map_err(|_| c.err(format!("attribute 'to' is {code}, not an element type")))?;
    let to = dtype_from_onnx(code).map_err(|m| c.err(format!("attribute 'to': {m}")))?;
    c.simple(Op::Cast { to }, 1, 1)
}

pub(super) fn export(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    let attribute = match n.op {
        Op::Gemm(g) => gemm_attrs(g),
        Op::Cast { to } => vec![attrs::int("to", onnx_dtype(*to) as i64)],
        Op::MatMul | Op::Binary(_) | Op::Unary(_) | Op::Clip | Op::Where | Op::Identity => vec![],
        _ => return Err(n.err("is not an elementwise or matrix op")),
    };
    cx.emit_as_is(n, attribute);
    Ok(())
}

/// Only attributes that differ from ONNX's defaults, so an import reads back the same.
fn gemm_attrs(g: &GemmAttrs) -> Vec<crate::onnx::pb::AttributeProto> {
    let d = GemmAttrs::default();
    let mut v = Vec::new();
    if g.alpha != d.alpha {
        v.push(attrs::float("alpha", g.alpha));
    }
    if g.beta != d.beta {
        v.push(attrs::float("beta", g.beta));
    }
    if g.trans_a {
        v.push(attrs::int("transA", 1));
    }
    if g.trans_b {
        v.push(attrs::int("transB", 1));
    }
    v
}
