//! Dead-code elimination: removes every node whose values reach no graph output.
//! Graph inputs stay, used or not, because they are the graph's interface.

use std::collections::HashSet;

use crate::ir::{Graph, NodeIndex, Op};

use super::PassReport;

/// Removes the nodes that no graph output depends on (keeping `Input` nodes).
pub fn eliminate_dead_code(g: &mut Graph) -> anyhow::Result<PassReport> {
    let live = live_nodes(g);
    let dead: Vec<NodeIndex> = g
        .node_ids()
        .into_iter()
        .filter(|id| !live.contains(id) && !matches!(g.node(*id).op, Op::Input))
        .collect();
    for &id in &dead {
        g.remove_node(id);
    }
    g.validate()?;
    Ok(PassReport {
        pass: "eliminate_dead_code",
        changed: dead.len(),
    })
}

/// Nodes from which some graph output can be reached.
fn live_nodes(g: &Graph) -> HashSet<NodeIndex> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeIndex> = g.outputs.iter().map(|p| p.node).collect();
    while let Some(id) = stack.pop() {
        if !g.contains(id) || !live.insert(id) {
            continue;
        }
        stack.extend(g.inputs_of(id).into_iter().flatten().map(|p| p.node));
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, DType, Port, Shape, Tensor, TensorType, UnaryOp};

    #[test]
    fn removes_unreachable_nodes_but_keeps_inputs() {
        let mut g = Graph::new("t");
        let ty = TensorType::new(DType::F32, Shape::known(&[2]));
        let x = g.add_input("x", ty.clone());
        let unused = g.add_input("unused", ty);
        let c = g.add_const("c", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let dead_c = g.add_const("dead_c", Tensor::scalar_f32(3.0));
        let add = g.add_op(
            "add",
            Op::Binary(BinaryOp::Add),
            &[Some(Port::new(x, 0)), Some(Port::new(c, 0))],
            &["y"],
        );
        let dead = g.add_op(
            "dead",
            Op::Binary(BinaryOp::Mul),
            &[Some(Port::new(add, 0)), Some(Port::new(dead_c, 0))],
            &["z"],
        );
        let dead2 = g.add_op(
            "dead2",
            Op::Unary(UnaryOp::Neg),
            &[Some(Port::new(dead, 0))],
            &["w"],
        );
        g.outputs.push(Port::new(add, 0));
        let r = eliminate_dead_code(&mut g).unwrap();
        assert_eq!(r.changed, 3);
        for id in [dead, dead2, dead_c] {
            assert!(!g.contains(id));
        }
        for id in [x, unused, c, add] {
            assert!(g.contains(id));
        }
        assert_eq!(g.inputs, vec![x, unused]);
        assert_eq!(eliminate_dead_code(&mut g).unwrap().changed, 0);
    }
}
