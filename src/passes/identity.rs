//! Identity elimination: every reader of an `Identity` output reads the Identity's
//! input instead. PyTorch exports use Identity to alias shared initializers and to
//! expose inputs as outputs; graph output names are part of the interface and stay.

use crate::ir::{Graph, NodeIndex, Op, Port};

use super::PassReport;

/// Bypasses and removes Identity nodes. An Identity that renames a graph input, or a
/// value that is already a graph output, into a graph output is kept, since removing
/// it would change an output's name.
pub fn eliminate_identity(g: &mut Graph) -> anyhow::Result<PassReport> {
    let ids: Vec<NodeIndex> = g
        .topo_order()?
        .into_iter()
        .filter(|&id| g.node(id).op == Op::Identity)
        .collect();
    let mut changed = 0;
    for id in ids {
        let Some(src) = g.input(id, 0) else { continue };
        let out = Port::new(id, 0);
        if g.node(id).outputs.len() != 1 {
            continue;
        }
        if g.outputs.contains(&out)
            && (matches!(g.node(src.node).op, Op::Input) || g.outputs.contains(&src))
        {
            continue;
        }
        // When `out` is a graph output, the source value takes over its name.
        g.replace_uses(out, src);
        g.remove_node(id);
        changed += 1;
    }
    g.validate()?;
    Ok(PassReport {
        pass: "eliminate_identity",
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, DType, Shape, Tensor, TensorType};

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    #[test]
    fn bypasses_identities_and_keeps_output_names() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[2])));
        let w = g.add_const("w0", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let alias = g.add_op("alias", Op::Identity, &[p(w)], &["blocks.1.w"]);
        let add = g.add_op(
            "add",
            Op::Binary(BinaryOp::Add),
            &[p(x), p(alias)],
            &["sum"],
        );
        let out_id = g.add_op("out_id", Op::Identity, &[p(add)], &["result"]);
        let echo = g.add_op("echo", Op::Identity, &[p(x)], &["x_out"]);
        g.outputs = vec![Port::new(out_id, 0), Port::new(echo, 0)];

        let r = eliminate_identity(&mut g).unwrap();
        assert_eq!(r.changed, 2);
        assert!(!g.contains(alias) && !g.contains(out_id));
        // An input cannot be renamed: its echo stays.
        assert!(g.contains(echo));
        assert_eq!(g.input(add, 1), Some(Port::new(w, 0)));
        assert_eq!(g.outputs[0], Port::new(add, 0));
        assert_eq!(g.value(g.outputs[0]).name, "result");
        assert_eq!(g.value(g.outputs[1]).name, "x_out");
        assert_eq!(g.op_histogram().get("Identity"), Some(&1));
    }
}
