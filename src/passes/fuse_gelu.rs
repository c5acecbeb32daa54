//! GELU fusion. PyTorch exports exact GELU, `x · 0.5 · (1 + erf(x / √2))`, as a chain
//! of Div (or Mul by 1/√2), Erf, Add 1, and two Muls whose order varies between
//! exporters:
//!
//! ```text
//! A: Mul(Mul(x, 1 + erf), 0.5)     (torch.nn.GELU, HF activations)
//! B: Mul(x, Mul(1 + erf, 0.5))
//! C: Mul(Mul(x, 0.5), 1 + erf)
//! ```
//!
//! Each match becomes one `Op::Gelu { approximate: None }`. Constants may differ from
//! √2, 1/√2, 0.5 and 1 by up to 1e-4; every intermediate must have no other reader.

use crate::ir::{BinaryOp, GeluApprox, Graph, NodeIndex, Op, Port, UnaryOp};

use super::PassReport;
use super::pattern::{
    fused_name, is_binary, is_unary, other_operand, replace_subgraph, scalar_const, sole_consumer,
    with_scalar,
};

const TOLERANCE: f64 = 1e-4;

/// Fuses every decomposed exact GELU into one `Gelu` node.
pub fn fuse_gelu(g: &mut Graph) -> anyhow::Result<PassReport> {
    let anchors: Vec<NodeIndex> = g
        .topo_order()?
        .into_iter()
        .filter(|&id| is_unary(g, id, UnaryOp::Erf))
        .collect();
    let mut changed = 0;
    for erf in anchors {
        if !g.contains(erf) {
            continue;
        }
        if let Some((x, out, nodes)) = match_gelu(g, erf) {
            let name = fused_name(g, &g.node(erf).name, "Gelu");
            let tmp = g.fresh_name(&format!("{name}_output_0"));
            let op = Op::Gelu {
                approximate: GeluApprox::None,
            };
            let gelu = g.add_op(name, op, &[Some(x)], &[tmp.as_str()]);
            replace_subgraph(g, out, Port::new(gelu, 0), &nodes);
            changed += 1;
        }
    }
    g.validate()?;
    Ok(PassReport {
        pass: "fuse_gelu",
        changed,
    })
}

/// The input `x` of the Erf's scaling: `Div(x, √2)` or `Mul(x, 1/√2)`.
fn scaled_input(g: &Graph, scale: NodeIndex) -> Option<Port> {
    if is_binary(g, scale, BinaryOp::Div) {
        let c = scalar_const(g, g.input(scale, 1)?)?;
        return ((c - std::f64::consts::SQRT_2).abs() <= TOLERANCE).then_some(g.input(scale, 0)?);
    }
    with_scalar(
        g,
        scale,
        BinaryOp::Mul,
        std::f64::consts::FRAC_1_SQRT_2,
        TOLERANCE,
    )
}

/// For `Mul(from, 0.5)` in either order, nothing else; used to recognise the halving.
fn is_half_of(g: &Graph, id: NodeIndex, from: Port) -> bool {
    with_scalar(g, id, BinaryOp::Mul, 0.5, TOLERANCE) == Some(from)
}

/// `(x, replaced value, matched nodes)` for the GELU around `erf`.
fn match_gelu(g: &Graph, erf: NodeIndex) -> Option<(Port, Port, Vec<NodeIndex>)> {
    let scale = g.input(erf, 0)?;
    if sole_consumer(g, scale)?.0 != erf {
        return None;
    }
    let x = scaled_input(g, scale.node)?;
    let (add, _) = sole_consumer(g, Port::new(erf, 0))?;
    if with_scalar(g, add, BinaryOp::Add, 1.0, TOLERANCE)? != Port::new(erf, 0) {
        return None;
    }
    let one_plus = Port::new(add, 0);
    let (m, _) = sole_consumer(g, one_plus)?;
    if !is_binary(g, m, BinaryOp::Mul) {
        return None;
    }
    let mut nodes = vec![scale.node, erf, add, m];
    let other = other_operand(g, m, one_plus)?;
    let out = if other == x {
        // A: (x · (1 + erf)) · 0.5
        let (half, _) = sole_consumer(g, Port::new(m, 0))?;
        if !is_half_of(g, half, Port::new(m, 0)) {
            return None;
        }
        nodes.push(half);
        Port::new(half, 0)
    } else if is_half_of(g, m, one_plus) {
        // B: x · ((1 + erf) · 0.5)
        let (outer, _) = sole_consumer(g, Port::new(m, 0))?;
        if !is_binary(g, outer, BinaryOp::Mul) || other_operand(g, outer, Port::new(m, 0))? != x {
            return None;
        }
        nodes.push(outer);
        Port::new(outer, 0)
    } else {
        // C: (x · 0.5) · (1 + erf)
        let half = other.node;
        if other.slot != 0 || !is_half_of(g, half, x) || sole_consumer(g, other)?.0 != m {
            return None;
        }
        nodes.push(half);
        Port::new(m, 0)
    };
    Some((x, out, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim, Shape, Tensor, TensorType, infer::infer_types};

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    fn bin(g: &mut Graph, name: &str, op: BinaryOp, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        g.add_op(
            name,
            Op::Binary(op),
            &[p(a), p(b)],
            &[&format!("{name}_out")],
        )
    }

    #[derive(Clone, Copy)]
    enum Form {
        A,
        B,
        C,
    }

    /// Builds GELU in the given form; `div` picks Div by √2 over Mul by 1/√2.
    fn gelu_graph(form: Form, div: bool, sqrt2: f32) -> Graph {
        let mut g = Graph::new("t");
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, Shape(vec![Dim::sym("b"), Dim::Known(8)])),
        );
        let scaled = if div {
            let c = g.add_const("/act/sqrt2", Tensor::scalar_f32(sqrt2));
            bin(&mut g, "/act/Div", BinaryOp::Div, x, c)
        } else {
            let c = g.add_const("/act/inv_sqrt2", Tensor::scalar_f32(1.0 / sqrt2));
            bin(&mut g, "/act/Div", BinaryOp::Mul, c, x)
        };
        let erf = g.add_op(
            "/act/Erf",
            Op::Unary(UnaryOp::Erf),
            &[p(scaled)],
            &["/act/Erf_out"],
        );
        let one = g.add_const("/act/one", Tensor::scalar_f32(1.0));
        let add = bin(&mut g, "/act/Add", BinaryOp::Add, one, erf);
        let half = g.add_const("/act/half", Tensor::scalar_f32(0.5));
        let out = match form {
            Form::A => {
                let m = bin(&mut g, "/act/Mul", BinaryOp::Mul, x, add);
                bin(&mut g, "/act/Mul_1", BinaryOp::Mul, m, half)
            }
            Form::B => {
                let h = bin(&mut g, "/act/Mul", BinaryOp::Mul, half, add);
                bin(&mut g, "/act/Mul_1", BinaryOp::Mul, x, h)
            }
            Form::C => {
                let h = bin(&mut g, "/act/Mul", BinaryOp::Mul, x, half);
                bin(&mut g, "/act/Mul_1", BinaryOp::Mul, h, add)
            }
        };
        g.outputs.push(Port::new(out, 0));
        infer_types(&mut g).unwrap();
        g
    }

    #[test]
    fn fuses_every_export_order() {
        for form in [Form::A, Form::B, Form::C] {
            for div in [true, false] {
                let mut g = gelu_graph(form, div, std::f32::consts::SQRT_2);
                let x = g.inputs[0];
                assert_eq!(fuse_gelu(&mut g).unwrap().changed, 1);
                let h: Vec<_> = g.op_histogram().into_iter().collect();
                assert_eq!(h, vec![("Gelu".to_string(), 1)]);
                let gelu = g.outputs[0].node;
                assert_eq!(g.input(gelu, 0), Some(Port::new(x, 0)));
                assert_eq!(g.value(g.outputs[0]).name, "/act/Mul_1_out");
                assert_eq!(g.node(gelu).name, "/act/Gelu");
            }
        }
    }

    #[test]
    fn constants_must_be_close() {
        // Within 1e-4 of √2 but not equal to it in f32.
        let mut g = gelu_graph(Form::A, true, 1.41425);
        assert_eq!(fuse_gelu(&mut g).unwrap().changed, 1);
        let mut g = gelu_graph(Form::A, true, 1.5);
        assert_eq!(fuse_gelu(&mut g).unwrap().changed, 0);
        assert_eq!(g.op_histogram().get("Erf"), Some(&1));
    }

    #[test]
    fn a_shared_intermediate_blocks_fusion() {
        let mut g = gelu_graph(Form::A, true, std::f32::consts::SQRT_2);
        let erf = g.find_node("/act/Erf").unwrap();
        g.outputs.push(Port::new(erf, 0));
        assert_eq!(fuse_gelu(&mut g).unwrap().changed, 0);
    }
}
