//! Small graph queries shared by the rewriting passes: sole consumers, scalar
//! constants, binary ops with a constant operand, and replacing a matched
//! subgraph's output with a new node's.

use crate::ir::{BinaryOp, Graph, NodeIndex, Op, Port, UnaryOp};

/// The one node reading `port`, when there is exactly one and `port` is not a graph
/// output (a value the graph exposes cannot be fused away).
pub(crate) fn sole_consumer(g: &Graph, port: Port) -> Option<(NodeIndex, usize)> {
    if g.outputs.contains(&port) {
        return None;
    }
    match g.consumers(port).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The value of a one-element float constant at `port`.
pub(crate) fn scalar_const(g: &Graph, port: Port) -> Option<f64> {
    let t = g.const_value(port)?;
    if t.numel() != 1 || !t.dtype().is_float() {
        return None;
    }
    t.to_f64_vec().first().copied()
}

pub(crate) fn is_binary(g: &Graph, id: NodeIndex, op: BinaryOp) -> bool {
    g.node(id).op == Op::Binary(op)
}

pub(crate) fn is_unary(g: &Graph, id: NodeIndex, op: UnaryOp) -> bool {
    g.node(id).op == Op::Unary(op)
}

/// Both operands of a binary node.
pub(crate) fn operands(g: &Graph, id: NodeIndex) -> Option<(Port, Port)> {
    Some((g.input(id, 0)?, g.input(id, 1)?))
}

/// For a commutative binary node reading `from`, the other operand.
pub(crate) fn other_operand(g: &Graph, id: NodeIndex, from: Port) -> Option<Port> {
    let (a, b) = operands(g, id)?;
    if a == from {
        Some(b)
    } else if b == from {
        Some(a)
    } else {
        None
    }
}

/// For a commutative binary node `id` of kind `op` with one scalar-constant operand
/// close to `value`, the other operand.
pub(crate) fn with_scalar(
    g: &Graph,
    id: NodeIndex,
    op: BinaryOp,
    value: f64,
    tol: f64,
) -> Option<Port> {
    if !is_binary(g, id, op) {
        return None;
    }
    let (a, b) = operands(g, id)?;
    let close = |p: Port| scalar_const(g, p).is_some_and(|v| (v - value).abs() <= tol);
    if close(b) {
        Some(a)
    } else if close(a) {
        Some(b)
    } else {
        None
    }
}

/// Points every reader of `old` at `new`, deletes `matched` and gives `new` the
/// name `old` had, so that graph outputs and downstream names stay as they were.
pub(crate) fn replace_subgraph(g: &mut Graph, old: Port, new: Port, matched: &[NodeIndex]) {
    let name = g.value(old).name.clone();
    let ty = g.value(old).ty.clone();
    g.replace_uses(old, new);
    for &id in matched {
        g.remove_node(id);
    }
    let v = &mut g.node_mut(new.node).outputs[new.slot];
    v.name = name;
    if v.ty.is_none() {
        v.ty = ty;
    }
}

/// A node name for a fused op: the matched block's scope plus `op`
/// (`/enc/layer.0/norm1/ReduceMean` → `/enc/layer.0/norm1/LayerNormalization`).
pub(crate) fn fused_name(g: &Graph, anchor: &str, op: &str) -> String {
    let base = match anchor.rfind('/') {
        Some(i) => format!("{}/{op}", &anchor[..i]),
        None => format!("{anchor}_{op}"),
    };
    g.fresh_name(&base)
}
