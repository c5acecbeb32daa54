//! Plans, sessions and the errors they report: execution order, buffer lifetimes,
//! input checking, dead code, and the one-line messages naming node and op.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::exec::{Backend, CpuValue, ExecError, Plan, Session, run_cpu};
use crate::ir::{BinaryOp, Dim, Graph, NodeIndex, Port, Shape, TensorType, UnaryOp};

fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
    TensorType::new(dtype, Shape(dims.to_vec()))
}

fn p(n: NodeIndex) -> Option<Port> {
    Some(Port::new(n, 0))
}

/// y = relu(x·W + b) with W [3,2] and b [2].
fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.add_input("x", ty(DType::F32, &[Dim::sym("batch"), Dim::Known(3)]));
    let w = g.add_const("w", f32t(&[3, 2], &[1., -1., 2., 0., 0., 1.]));
    let b = g.add_const("b", f32t(&[2], &[0.5, -4.]));
    let mm = g.add_op("mm", Op::MatMul, &[p(x), p(w)], &["h"]);
    let add = g.add_op("add", Op::Binary(BinaryOp::Add), &[p(mm), p(b)], &["z"]);
    let relu = g.add_op("relu", Op::Unary(UnaryOp::Relu), &[p(add)], &["y"]);
    g.outputs.push(Port::new(relu, 0));
    g
}

#[test]
fn runs_a_small_network() {
    let s = Session::new(&mlp(), crate::exec::CpuBackend).unwrap();
    assert_eq!(s.input_names(), vec!["x"]);
    assert_eq!(s.output_names(), vec!["y"]);
    // Row [1,2,3]: x·W = [1+4, -1+3] = [5, 2]; + b = [5.5, -2] → relu [5.5, 0].
    // Row [0,1,0]: [2, 0] + b = [2.5, -4] → [2.5, 0].
    let out = s
        .run(&[("x".into(), f32t(&[2, 3], &[1., 2., 3., 0., 1., 0.]))])
        .unwrap();
    assert_f32(&out[0], &[2, 2], &[5.5, 0., 2.5, 0.], 0.0);
    // The same session runs again with another batch size.
    let out = s
        .run(&[("x".into(), f32t(&[1, 3], &[0., 0., 1.]))])
        .unwrap();
    assert_f32(&out[0], &[1, 2], &[0.5, 0.], 0.0);
}

#[test]
fn inputs_are_checked_by_name_type_and_shape() {
    let mut g = Graph::new("img");
    let img = g.add_input(
        "image",
        ty(
            DType::F32,
            &[
                Dim::sym("batch"),
                Dim::Known(3),
                Dim::Known(224),
                Dim::Known(224),
            ],
        ),
    );
    let mask = g.add_input("mask", ty(DType::I64, &[Dim::sym("batch")]));
    let id = g.add_op("id", Op::Identity, &[p(img)], &["out"]);
    let id2 = g.add_op("id2", Op::Identity, &[p(mask)], &["out2"]);
    g.outputs.extend([Port::new(id, 0), Port::new(id2, 0)]);
    let s = Session::new(&g, crate::exec::CpuBackend).unwrap();
    let good_mask = ("mask".to_string(), i64t(&[8], &[0; 8]));
    let bad_img = (
        "image".to_string(),
        Tensor::zeros(DType::F32, vec![8, 3, 200, 224]),
    );
    let err = s
        .run(&[bad_img, good_mask.clone()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "input 'image': expected f32[batch,3,224,224], got f32[8,3,200,224]"
    );
    let img_ok = (
        "image".to_string(),
        Tensor::zeros(DType::F32, vec![8, 3, 224, 224]),
    );
    let err = s
        .run(std::slice::from_ref(&img_ok))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "input 'mask': missing");
    let err = s
        .run(&[
            img_ok.clone(),
            good_mask.clone(),
            ("other".into(), Tensor::scalar_f32(0.)),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("input 'other': not an input of the graph"),
        "{err}"
    );
    let err = s
        .run(&[img_ok.clone(), ("mask".into(), f32t(&[8], &[0.; 8]))])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "input 'mask': expected i64[batch], got f32[8]");
    let err = s
        .run(&[
            ("image".into(), Tensor::zeros(DType::F32, vec![3, 224, 224])),
            good_mask.clone(),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected f32[batch,3,224,224], got f32[3,224,224]"),
        "{err}"
    );
    let err = s
        .run(&[img_ok.clone(), ("mask".into(), i64t(&[4], &[0; 4]))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dimension 'batch' is 4 here but 8 in input 'image'"),
        "{err}"
    );
    let out = s.run(&[img_ok, good_mask]).unwrap();
    assert_eq!(out[0].shape(), &[8, 3, 224, 224]);
}

#[test]
fn node_failures_name_the_node_and_op() {
    let mut g = Graph::new("bad");
    let x = g.add_input(
        "x",
        ty(
            DType::F32,
            &[Dim::Known(8), Dim::Known(197), Dim::Known(384)],
        ),
    );
    let w = g.add_const("w", Tensor::zeros(DType::F32, vec![385, 1152]));
    let mm = g.add_op("/blocks.0/MatMul", Op::MatMul, &[p(x), p(w)], &["y"]);
    g.outputs.push(Port::new(mm, 0));
    let err = run_cpu(
        &g,
        &[("x".into(), Tensor::zeros(DType::F32, vec![8, 197, 384]))],
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Node { .. }));
    assert_eq!(
        err.to_string(),
        "node '/blocks.0/MatMul' (MatMul): cannot multiply [8,197,384] by [385,1152]"
    );
}

#[test]
fn nodes_no_output_needs_are_not_run() {
    let mut g = mlp();
    let x = g.inputs[0];
    let w = g.add_const("bad_w", f32t(&[5, 5], &[0.; 25]));
    g.add_op("dead", Op::MatMul, &[p(x), p(w)], &["dead_out"]);
    let out = run_cpu(&g, &[("x".into(), f32t(&[1, 3], &[0., 0., 1.]))]).unwrap();
    assert_f32(&out[0], &[1, 2], &[0.5, 0.], 0.0);
    let plan = Plan::new(&g).unwrap();
    let names: Vec<&str> = plan
        .order()
        .iter()
        .map(|&n| g.node(n).name.as_str())
        .collect();
    assert_eq!(names, vec!["mm", "add", "relu"]);
}

#[test]
fn outputs_may_be_inputs_or_weights() {
    let mut g = Graph::new("pass");
    let x = g.add_input("x", ty(DType::I64, &[Dim::Known(2)]));
    let c = g.add_const("c", f32t(&[1], &[7.]));
    g.outputs
        .extend([Port::new(x, 0), Port::new(c, 0), Port::new(x, 0)]);
    let out = run_cpu(&g, &[("x".into(), i64t(&[2], &[1, 2]))]).unwrap();
    assert_i64(&out[0], &[2], &[1, 2]);
    assert_f32(&out[1], &[1], &[7.], 0.0);
    assert_i64(&out[2], &[2], &[1, 2]);
}

/// x → a = −x → (b = exp a, c = |a|) → d = b + c.
fn diamond() -> (Graph, [NodeIndex; 5]) {
    let mut g = Graph::new("diamond");
    let x = g.add_input("x", ty(DType::F32, &[Dim::Known(2)]));
    let a = g.add_op("a", Op::Unary(UnaryOp::Neg), &[p(x)], &["a"]);
    let b = g.add_op("b", Op::Unary(UnaryOp::Exp), &[p(a)], &["b"]);
    let c = g.add_op("c", Op::Unary(UnaryOp::Abs), &[p(a)], &["c"]);
    let d = g.add_op("d", Op::Binary(BinaryOp::Add), &[p(b), p(c)], &["d"]);
    g.outputs.push(Port::new(d, 0));
    (g, [x, a, b, c, d])
}

#[test]
fn plan_frees_each_value_after_its_last_reader() {
    let (g, [x, a, b, c, d]) = diamond();
    let plan = Plan::new(&g).unwrap();
    let order = plan.order();
    assert_eq!(order.len(), 4);
    assert_eq!((order[0], order[3]), (a, d));
    let freed = |i: usize| -> HashSet<NodeIndex> {
        plan.steps()[i]
            .frees
            .iter()
            .map(|&v| plan.port(v).node)
            .collect()
    };
    assert_eq!(freed(0), HashSet::from([x]));
    // a is read by both b and c: it goes after whichever runs second.
    assert_eq!(freed(1), HashSet::new());
    assert_eq!(freed(2), HashSet::from([a]));
    assert_eq!(freed(3), HashSet::from([b, c]));
    let out = run_cpu(&g, &[("x".into(), f32t(&[2], &[0., 1.]))]).unwrap();
    assert_f32(&out[0], &[2], &[1.0, (-1f32).exp() + 1.0], 1e-6);
}

/// A backend that counts how many of its values are alive.
#[derive(Clone)]
struct Counting {
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Counted {
    v: CpuValue,
    live: Arc<AtomicUsize>,
}

impl Counted {
    fn new(v: CpuValue, live: &Arc<AtomicUsize>) -> Counted {
        live.fetch_add(1, Ordering::SeqCst);
        Counted {
            v,
            live: live.clone(),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        Counted::new(self.v.clone(), &self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend for Counting {
    type Value = Counted;

    fn name(&self) -> &'static str {
        "counting"
    }

    fn upload(&self, t: &Tensor) -> Result<Counted, ExecError> {
        Ok(Counted::new(crate::exec::CpuBackend.upload(t)?, &self.live))
    }

    fn download(&self, v: &Counted) -> Result<Tensor, ExecError> {
        crate::exec::CpuBackend.download(&v.v)
    }

    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&Counted>],
    ) -> Result<Vec<Counted>, ExecError> {
        self.peak
            .fetch_max(self.live.load(Ordering::SeqCst), Ordering::SeqCst);
        let ins: Vec<Option<&CpuValue>> = inputs.iter().map(|i| i.map(|c| &c.v)).collect();
        let outs = crate::exec::CpuBackend.run_node(node, &ins)?;
        Ok(outs
            .into_iter()
            .map(|v| Counted::new(v, &self.live))
            .collect())
    }
}

#[test]
fn a_long_chain_keeps_only_a_few_buffers_alive() {
    let mut g = Graph::new("chain");
    let x = g.add_input("x", ty(DType::F32, &[Dim::Known(4)]));
    let mut prev = x;
    for i in 0..50 {
        prev = g.add_op(
            format!("n{i}"),
            Op::Unary(UnaryOp::Neg),
            &[p(prev)],
            &[&format!("v{i}")],
        );
    }
    g.outputs.push(Port::new(prev, 0));
    let backend = Counting {
        live: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    let s = Session::new(&g, backend.clone()).unwrap();
    let out = s
        .run(&[("x".into(), f32t(&[4], &[1., 2., 3., 4.]))])
        .unwrap();
    assert_f32(&out[0], &[4], &[1., 2., 3., 4.], 0.0);
    // While a node runs, only its input is alive (its output does not exist yet).
    assert_eq!(backend.peak.load(Ordering::SeqCst), 1);
    assert_eq!(backend.live.load(Ordering::SeqCst), 0);
}

#[test]
fn constant_folding_reaches_multi_output_ops() {
    let outs = eval_opt(
        Op::Split {
            axis: 0,
            sizes: None,
        },
        &[Some(i64t(&[4], &[1, 2, 3, 4]))],
        2,
    )
    .unwrap();
    assert_i64(&outs[0], &[2], &[1, 2]);
    assert_i64(&outs[1], &[2], &[3, 4]);
    let err = eval_opt(Op::Input, &[], 1).unwrap_err().to_string();
    assert!(err.contains("fed by the session"), "{err}");
}

#[test]
fn missing_required_slots_are_errors_not_panics() {
    let err = eval_opt(Op::MatMul, &[Some(f32t(&[1], &[1.])), None], 1)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "node 'n' (MatMul): missing input 1 (B)");
}

#[test]
fn i32_and_bool_values_round_trip_through_a_session() {
    let mut g = Graph::new("types");
    let x = g.add_input("x", ty(DType::I32, &[Dim::Known(3)]));
    let m = g.add_input("m", ty(DType::Bool, &[Dim::Known(3)]));
    let neg = g.add_op("neg", Op::Unary(UnaryOp::Neg), &[p(x)], &["nx"]);
    let zero = g.add_const("zero", i32t(&[], &[0]));
    let sel = g.add_op("sel", Op::Where, &[p(m), p(neg), p(zero)], &["y"]);
    g.outputs.extend([Port::new(sel, 0), Port::new(m, 0)]);
    let out = run_cpu(
        &g,
        &[
            ("x".into(), i32t(&[3], &[1, -2, i32::MIN])),
            ("m".into(), boolt(&[3], &[true, false, true])),
        ],
    )
    .unwrap();
    // −i32::MIN wraps to itself in i32.
    assert_eq!(out[0].data(), &TensorData::I32(vec![-1, 0, i32::MIN]));
    assert_bool(&out[1], &[3], &[true, false, true]);
}

#[test]
fn run_values_keeps_the_outputs_on_the_backend() {
    let s = Session::new(&mlp(), crate::exec::CpuBackend).unwrap();
    let x = ("x".to_string(), f32t(&[1, 3], &[1., 2., 3.]));
    let values = s.run_values(std::slice::from_ref(&x)).unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].dims(), &[1, 2]);
    // The same row as in `runs_a_small_network`: relu([5.5, -2]).
    let y = s.backend().download(&values[0]).unwrap();
    assert_f32(&y, &[1, 2], &[5.5, 0.], 0.0);
    assert_eq!(s.run(&[x]).unwrap()[0], y);
}

#[test]
fn param_mut_replaces_the_weight_the_next_run_reads() {
    let mut s = Session::new(&mlp(), crate::exec::CpuBackend).unwrap();
    assert!(s.param_mut("no such weight").is_none());
    assert!(s.param_mut("h").is_none(), "an op output is not a weight");
    let b = s.param_mut("b").expect("the bias is a weight");
    assert_eq!(b.dims(), &[2]);
    *b = crate::exec::CpuBackend
        .upload(&f32t(&[2], &[10., 4.]))
        .unwrap();
    // Row [1,2,3]: x·W = [5, 2]; + [10, 4] = [15, 6].
    let out = s
        .run(&[("x".into(), f32t(&[1, 3], &[1., 2., 3.]))])
        .unwrap();
    assert_f32(&out[0], &[1, 2], &[15., 6.], 0.0);
}
