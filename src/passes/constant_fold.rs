//! Constant folding: a compute node whose inputs are all `Const` is evaluated once,
//! through the [`NodeEval`] seam, and replaced by `Const` nodes holding its results.
//! Integer values that shape inference proves constant (a `Shape` of a value whose
//! dims are known, and the Gather/Concat/… arithmetic on it) are replaced too, so
//! that PyTorch's shape plumbing collapses when input shapes are concrete.
//! `Param` nodes are trainable and never count as constant.

use anyhow::{Context, bail};

use crate::ir::eval::NodeEval;
use crate::ir::infer::{infer_types, known_int_values};
use crate::ir::{Graph, NodeIndex, Op, Port, Tensor, TensorType};

use super::PassReport;

/// Results larger than this (in elements) are left to be computed at run time: a
/// folded Expand or ConstantOfShape could otherwise bloat the model.
pub const MAX_FOLDED_ELEMENTS: usize = 16 * 1024 * 1024;

/// Folds every foldable node, in topological order so that chains collapse in one
/// run. Value names are kept; a folded graph output stays an output.
pub fn fold_constants(g: &mut Graph, eval: &dyn NodeEval) -> anyhow::Result<PassReport> {
    infer_types(g).context("type inference before constant folding")?;
    let known = known_int_values(g)?;
    let mut changed = 0;
    for id in g.topo_order()? {
        let node = g.node(id);
        if matches!(node.op, Op::Input | Op::Const(_) | Op::Param(_)) {
            continue;
        }
        let results = if let Some(inputs) = constant_inputs(g, id) {
            if exceeds_limit(g, id) {
                continue;
            }
            let out = eval
                .eval(node, &inputs)
                .with_context(|| format!("folding node '{}' ({})", node.name, node.op.name()))?;
            check_results(g, id, &out)?;
            out
        } else if let Some(out) = (0..node.outputs.len())
            .map(|s| known.get(&Port::new(id, s)).cloned())
            .collect::<Option<Vec<Tensor>>>()
        {
            out
        } else {
            continue;
        };
        replace_with_constants(g, id, results);
        changed += 1;
    }
    g.validate()?;
    Ok(PassReport {
        pass: "fold_constants",
        changed,
    })
}

/// The input tensors of `id` when every connected input is a `Const` (and at least
/// one is connected).
fn constant_inputs(g: &Graph, id: NodeIndex) -> Option<Vec<Option<Tensor>>> {
    let producers = g.inputs_of(id);
    if producers.iter().all(Option::is_none) {
        return None;
    }
    producers
        .into_iter()
        .map(|p| match p {
            Some(p) => g.const_value(p).cloned().map(Some),
            None => Some(None),
        })
        .collect()
}

fn exceeds_limit(g: &Graph, id: NodeIndex) -> bool {
    g.node(id).outputs.iter().any(|v| {
        v.ty.as_ref()
            .and_then(|t| t.shape.numel())
            .is_some_and(|n| n > MAX_FOLDED_ELEMENTS)
    })
}

/// The evaluator's results must agree with the inferred types.
fn check_results(g: &Graph, id: NodeIndex, out: &[Tensor]) -> anyhow::Result<()> {
    let node = g.node(id);
    if out.len() != node.outputs.len() {
        bail!(
            "folding node '{}' ({}): {} results for {} outputs",
            node.name,
            node.op.name(),
            out.len(),
            node.outputs.len()
        );
    }
    for (t, v) in out.iter().zip(&node.outputs) {
        let Some(ty) = &v.ty else { continue };
        let fits = ty.dtype == t.dtype()
            && ty.shape.rank() == t.rank()
            && ty
                .shape
                .0
                .iter()
                .zip(t.shape())
                .all(|(d, &n)| d.known().is_none_or(|k| k == n));
        if !fits {
            bail!(
                "folding node '{}' ({}): value '{}' came out as {} where {} was inferred",
                node.name,
                node.op.name(),
                v.name,
                TensorType::new(t.dtype(), t.ir_shape()),
                ty
            );
        }
    }
    Ok(())
}

/// Replaces node `id` by one `Const` per output, each keeping the output's name.
fn replace_with_constants(g: &mut Graph, id: NodeIndex, results: Vec<Tensor>) {
    let names: Vec<String> = g.node(id).outputs.iter().map(|v| v.name.clone()).collect();
    let mut consts = Vec::with_capacity(results.len());
    for (slot, t) in results.into_iter().enumerate() {
        let tmp = g.fresh_name(&format!("{}_folded", names[slot]));
        let c = g.add_const(tmp, t);
        g.replace_uses(Port::new(id, slot), Port::new(c, 0));
        consts.push(c);
    }
    g.remove_node(id);
    for (c, name) in consts.into_iter().zip(names) {
        let n = g.node_mut(c);
        n.name = name.clone();
        n.outputs[0].name = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, DType, Dim, Node, Shape, TensorData};

    /// An evaluator for Add and Mul on f32 tensors of equal shape, written out
    /// independently of any backend.
    struct TinyEval;

    impl NodeEval for TinyEval {
        fn eval(&self, node: &Node, inputs: &[Option<Tensor>]) -> anyhow::Result<Vec<Tensor>> {
            let a = inputs[0]
                .as_ref()
                .and_then(|t| t.as_f32())
                .unwrap_or_default();
            let b = inputs[1]
                .as_ref()
                .and_then(|t| t.as_f32())
                .unwrap_or_default();
            let shape = inputs[0]
                .as_ref()
                .map(|t| t.shape().to_vec())
                .unwrap_or_default();
            let v: Vec<f32> = match node.op {
                Op::Binary(BinaryOp::Add) => a.iter().zip(b).map(|(x, y)| x + y).collect(),
                Op::Binary(BinaryOp::Mul) => a.iter().zip(b).map(|(x, y)| x * y).collect(),
                _ => bail!("TinyEval cannot run {}", node.op.name()),
            };
            Ok(vec![Tensor::from_f32(shape, v)?])
        }
    }

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    #[test]
    fn folds_constant_chains_and_keeps_output_names() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[2])));
        let a = g.add_const("a", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let b = g.add_const("b", Tensor::from_f32(vec![2], vec![3.0, 5.0]).unwrap());
        let ab = g.add_op("ab", Op::Binary(BinaryOp::Add), &[p(a), p(b)], &["ab_out"]);
        let abb = g.add_op(
            "abb",
            Op::Binary(BinaryOp::Mul),
            &[p(ab), p(b)],
            &["abb_out"],
        );
        let y = g.add_op("y", Op::Binary(BinaryOp::Add), &[p(x), p(abb)], &["y_out"]);
        g.outputs = vec![Port::new(y, 0), Port::new(abb, 0)];

        let r = fold_constants(&mut g, &TinyEval).unwrap();
        assert_eq!(r.changed, 2);
        assert_eq!(
            g.op_histogram().into_iter().collect::<Vec<_>>(),
            vec![("Add".to_string(), 1)]
        );
        let folded = g.input(y, 1).unwrap();
        // (1+3)·3 = 12, (2+5)·5 = 35
        assert_eq!(
            g.const_value(folded).and_then(|t| t.as_f32()),
            Some(&[12.0, 35.0][..])
        );
        assert_eq!(g.value(folded).name, "abb_out");
        assert_eq!(g.outputs[1], folded);
        assert_eq!(g.value(g.outputs[1]).name, "abb_out");
    }

    #[test]
    fn params_are_not_folded() {
        let mut g = Graph::new("t");
        let a = g.add_node(Node::new(
            "a",
            Op::Param(Tensor::scalar_f32(1.0)),
            0,
            vec![crate::ir::Value::new("a")],
        ));
        let b = g.add_const("b", Tensor::scalar_f32(2.0));
        let s = g.add_op("s", Op::Binary(BinaryOp::Add), &[p(a), p(b)], &["s_out"]);
        g.outputs.push(Port::new(s, 0));
        assert_eq!(fold_constants(&mut g, &TinyEval).unwrap().changed, 0);
        assert!(g.contains(s));
    }

    #[test]
    fn shape_of_known_dims_folds_even_with_a_symbolic_batch() {
        let mut g = Graph::new("t");
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, Shape(vec![Dim::sym("batch"), Dim::Known(197)])),
        );
        let full = g.add_op(
            "full",
            Op::Shape {
                start: 0,
                end: None,
            },
            &[p(x)],
            &["full_out"],
        );
        let tail = g.add_op(
            "tail",
            Op::Shape {
                start: 1,
                end: None,
            },
            &[p(x)],
            &["tail_out"],
        );
        let one = g.add_const("one", Tensor::scalar_i64(1));
        let ga = g.add_op(
            "ga",
            Op::Gather { axis: 0 },
            &[p(full), p(one)],
            &["ga_out"],
        );
        g.outputs = vec![Port::new(full, 0), Port::new(tail, 0), Port::new(ga, 0)];
        let r = fold_constants(&mut g, &TinyEval).unwrap();
        // tail and the Gather fold; the full shape holds the batch size and stays.
        assert_eq!(r.changed, 2);
        assert!(g.contains(full));
        assert_eq!(
            g.const_value(g.outputs[1]).map(|t| t.data().clone()),
            Some(TensorData::I64(vec![197]))
        );
        assert_eq!(
            g.const_value(g.outputs[2]).and_then(|t| t.as_i64()),
            Some(&[197][..])
        );
        assert_eq!(g.const_value(g.outputs[2]).map(|t| t.rank()), Some(0));
        assert_eq!(g.value(g.outputs[2]).name, "ga_out");
    }

    #[test]
    fn evaluator_failures_name_the_node() {
        let mut g = Graph::new("t");
        let a = g.add_const("a", Tensor::scalar_f32(1.0));
        let s = g.add_op("the_sub", Op::Binary(BinaryOp::Sub), &[p(a), p(a)], &["o"]);
        g.outputs.push(Port::new(s, 0));
        let e = format!("{:#}", fold_constants(&mut g, &TinyEval).unwrap_err());
        assert!(e.contains("the_sub") && e.contains("Sub"), "{e}");
    }
}
