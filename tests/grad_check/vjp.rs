//! One test per vector-Jacobian rule of the autodiff pass: a small graph around the op
//! with random `Param` inputs, the loss `Σ_i Σ yᵢ⊙Rᵢ` over its outputs (Rᵢ fixed random
//! tensors), gradients from the backward graph run on the CPU backend, compared with
//! central finite differences of the same loss evaluated in f64 by the independent
//! interpreter in `reference64.rs`.

use std::collections::HashMap;

use glora::exec::{CpuBackend, Session};
use glora::glora::{AbOption, COption, DeOption, LayerConfig, ModelConfig};
use glora::ir::infer::infer_types;
use glora::ir::{
    BinaryOp, ConvAttrs, DType, GLORA_LINEAR_INPUTS, GeluApprox, GemmAttrs, GloraLinearAttrs,
    GradOp, Graph, Node, NodeIndex, Op, Port, ReduceOp, Tensor, TensorType, UnaryOp, Value,
    WeightLayout,
};
use glora::passes::autodiff;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::reference64::{Array64, eval64};

/// A forward graph under construction with its random source.
struct Case {
    g: Graph,
    rng: StdRng,
    configs: ModelConfig,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("case"),
            rng: StdRng::seed_from_u64(seed),
            configs: ModelConfig::new(),
        }
    }

    fn random(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        Tensor::from_f32(shape.to_vec(), v).expect("shape matches")
    }

    /// A trainable input with entries uniform in `[lo, hi)`.
    fn param_in(&mut self, name: &str, shape: &[usize], lo: f32, hi: f32) -> Port {
        let t = self.random(shape, lo, hi);
        Port::new(self.g.add_param(name, t), 0)
    }

    fn param(&mut self, name: &str, shape: &[usize]) -> Port {
        self.param_in(name, shape, -1.0, 1.0)
    }

    /// A value away from zero: magnitudes in `[0.5, 1.5)`, random signs.
    fn param_nonzero(&mut self, name: &str, shape: &[usize]) -> Port {
        let t = self.random(shape, 0.5, 1.5);
        let signs: Vec<f32> = t
            .to_f32_vec()
            .into_iter()
            .map(|v| if self.rng.random_bool(0.5) { v } else { -v })
            .collect();
        let t = Tensor::from_f32(shape.to_vec(), signs).expect("shape matches");
        Port::new(self.g.add_param(name, t), 0)
    }

    fn konst(&mut self, name: &str, t: Tensor) -> Port {
        Port::new(self.g.add_const(name, t), 0)
    }

    fn ints(&mut self, name: &str, v: &[i64]) -> Port {
        self.konst(name, Tensor::vec_i64(v.to_vec()))
    }

    fn op_n(&mut self, name: &str, op: Op, inputs: &[Option<Port>], outputs: usize) -> NodeIndex {
        let outs: Vec<String> = (0..outputs).map(|i| format!("{name}.out{i}")).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.g.add_op(name, op, inputs, &refs)
    }

    fn op(&mut self, name: &str, op: Op, inputs: &[Port]) -> Port {
        let ins: Vec<Option<Port>> = inputs.iter().copied().map(Some).collect();
        Port::new(self.op_n(name, op, &ins, 1), 0)
    }

    /// Checks the gradient of every `Param` of the graph for the loss over `outputs`.
    fn check(mut self, outputs: &[Port]) {
        self.g.outputs = outputs.to_vec();
        infer_types(&mut self.g).expect("forward types");
        let mut loss: Option<Port> = None;
        for (i, &o) in outputs.iter().enumerate() {
            let shape = self
                .g
                .value_type(o)
                .and_then(|t| t.shape.to_known())
                .expect("known shape");
            let r = self.random(&shape, -1.0, 1.0);
            let r = self.konst(&format!("loss.r{i}"), r);
            let m = self.op(&format!("loss.mul{i}"), Op::Binary(BinaryOp::Mul), &[o, r]);
            let s = self.op(
                &format!("loss.sum{i}"),
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: None,
                    keepdims: false,
                    noop_with_empty_axes: false,
                },
                &[m],
            );
            loss = Some(match loss {
                None => s,
                Some(l) => self.op(&format!("loss.add{i}"), Op::Binary(BinaryOp::Add), &[l, s]),
            });
        }
        let loss = loss.expect("at least one output");
        self.g.outputs = vec![loss];
        infer_types(&mut self.g).expect("loss types");
        let forward = self.g.clone();
        let mut train = self.g.clone();
        let grads = autodiff(&mut train, loss).expect("autodiff");
        train.outputs = grads.iter().map(|p| p.grad).collect();
        let mut session = Session::new(&train, CpuBackend).expect("session");
        session.set_glora_configs(&self.configs).expect("configs");
        let analytic = session.run(&[]).expect("backward run");
        assert!(!grads.is_empty(), "the case has no parameters");
        for (pg, an) in grads.iter().zip(&analytic) {
            let base = forward
                .node(pg.param)
                .op
                .weight()
                .expect("a Param holds a tensor")
                .clone();
            let an = an.to_f32_vec();
            let fd = finite_differences(&forward, &self.configs, &pg.name, &base, &mut self.rng);
            let scale = fd.iter().map(|(_, v)| v.abs()).fold(1e-2, f64::max);
            for &(i, want) in &fd {
                let got = an[i] as f64;
                assert!(
                    (got - want).abs() <= 2e-3 * scale,
                    "d loss / d {}[{i}]: backward graph {got}, finite differences {want} (scale {scale})",
                    pg.name
                );
            }
        }
    }
}

/// Central differences of the f64 loss for up to 48 entries of parameter `name`.
fn finite_differences(
    forward: &Graph,
    configs: &ModelConfig,
    name: &str,
    base: &Tensor,
    rng: &mut StdRng,
) -> Vec<(usize, f64)> {
    let base = Array64::from_tensor(base);
    let n = base.data.len();
    let picks: Vec<usize> = if n <= 48 {
        (0..n).collect()
    } else {
        (0..48).map(|_| rng.random_range(0..n)).collect()
    };
    let loss_at = |arr: &Array64| -> f64 {
        let mut inputs = HashMap::new();
        inputs.insert(name.to_string(), arr.clone());
        let out = eval64(forward, &inputs, configs).expect("f64 reference");
        out[0].data[0]
    };
    picks
        .into_iter()
        .map(|i| {
            let h = 1e-4 * base.data[i].abs().max(1.0);
            let mut plus = base.clone();
            plus.data[i] += h;
            let mut minus = base.clone();
            minus.data[i] -= h;
            (i, (loss_at(&plus) - loss_at(&minus)) / (2.0 * h))
        })
        .collect()
}

fn binary_case(op: BinaryOp, sa: &[usize], sb: &[usize], seed: u64) {
    let mut c = Case::new(seed);
    let (a, b) = match op {
        BinaryOp::Pow => (
            c.param_in("a", sa, 0.5, 1.5),
            c.param_in("b", sb, -1.5, 1.5),
        ),
        BinaryOp::Div => (c.param("a", sa), c.param_nonzero("b", sb)),
        _ => (c.param("a", sa), c.param("b", sb)),
    };
    let y = c.op("y", Op::Binary(op), &[a, b]);
    c.check(&[y]);
}

#[test]
fn add_sub_mul_div_pow_with_broadcasting() {
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 3, 4], &[4]),
        (&[1, 3, 1], &[2, 1, 4]),
        (&[2, 3], &[]),
    ];
    for (k, op) in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
    ]
    .into_iter()
    .enumerate()
    {
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            binary_case(op, sa, sb, (10 * k + j) as u64);
            binary_case(op, sb, sa, (10 * k + j + 100) as u64);
        }
    }
}

#[test]
fn elementwise_functions() {
    let ops = [
        (Op::Unary(UnaryOp::Sqrt), true),
        (Op::Unary(UnaryOp::Reciprocal), false),
        (Op::Unary(UnaryOp::Neg), false),
        (Op::Unary(UnaryOp::Abs), false),
        (Op::Unary(UnaryOp::Exp), false),
        (Op::Unary(UnaryOp::Log), true),
        (Op::Unary(UnaryOp::Erf), false),
        (Op::Unary(UnaryOp::Tanh), false),
        (Op::Unary(UnaryOp::Relu), false),
        (Op::Unary(UnaryOp::Sigmoid), false),
        (Op::Unary(UnaryOp::Sin), false),
        (Op::Unary(UnaryOp::Cos), false),
        (
            Op::Gelu {
                approximate: GeluApprox::None,
            },
            false,
        ),
        (
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            false,
        ),
    ];
    for (k, (op, positive)) in ops.into_iter().enumerate() {
        let mut c = Case::new(200 + k as u64);
        let x = if positive {
            c.param_in("x", &[3, 5], 0.5, 2.0)
        } else {
            c.param_nonzero("x", &[3, 5])
        };
        let y = c.op("y", op, &[x]);
        c.check(&[y]);
    }
}

#[test]
fn softmax_on_last_and_inner_axes() {
    for (k, axis) in [-1i64, 1, 0].into_iter().enumerate() {
        let mut c = Case::new(300 + k as u64);
        let x = c.param_in("x", &[2, 3, 4], -2.0, 2.0);
        let y = c.op("y", Op::Softmax { axis }, &[x]);
        c.check(&[y]);
    }
}

#[test]
fn layer_norm_with_and_without_bias() {
    for (k, (axis, bias)) in [(-1i64, true), (1, true), (-1, false)]
        .into_iter()
        .enumerate()
    {
        let mut c = Case::new(400 + k as u64);
        let x = c.param_in("x", &[2, 3, 4], -2.0, 2.0);
        let norm_shape: Vec<usize> = if axis == 1 { vec![3, 4] } else { vec![4] };
        let scale = c.param_in("scale", &norm_shape, 0.5, 1.5);
        let mut ins = vec![Some(x), Some(scale)];
        if bias {
            ins.push(Some(c.param("bias", &norm_shape)));
        }
        let n = c.op_n(
            "ln",
            Op::LayerNorm {
                axis,
                epsilon: 1e-5,
            },
            &ins,
            1,
        );
        c.check(&[Port::new(n, 0)]);
    }
}

#[test]
fn reductions() {
    let cases = [
        (ReduceOp::Sum, Some(vec![1i64]), false),
        (ReduceOp::Sum, Some(vec![0, 2]), true),
        (ReduceOp::Mean, Some(vec![-1]), false),
        (ReduceOp::Mean, None, true),
        (ReduceOp::Sum, None, false),
    ];
    for (k, (op, axes, keepdims)) in cases.into_iter().enumerate() {
        let mut c = Case::new(500 + k as u64);
        let x = c.param("x", &[2, 3, 4]);
        let y = c.op(
            "y",
            Op::Reduce {
                op,
                axes,
                keepdims,
                noop_with_empty_axes: false,
            },
            &[x],
        );
        c.check(&[y]);
    }
}

#[test]
fn reshape_flatten_squeeze_unsqueeze() {
    let mut c = Case::new(600);
    let x = c.param("x", &[2, 3, 4]);
    let s = c.ints("s", &[4, -1]);
    let y = c.op("y", Op::Reshape { allowzero: false }, &[x, s]);
    c.check(&[y]);

    let mut c = Case::new(601);
    let x = c.param("x", &[2, 3, 4]);
    let y = c.op("y", Op::Flatten { axis: 2 }, &[x]);
    c.check(&[y]);

    let mut c = Case::new(602);
    let x = c.param("x", &[2, 1, 4]);
    let y = c.op(
        "y",
        Op::Squeeze {
            axes: Some(vec![1]),
        },
        &[x],
    );
    let z = c.op("z", Op::Unsqueeze { axes: vec![0, 3] }, &[y]);
    c.check(&[z]);
}

#[test]
fn transpose() {
    for (k, perm) in [Some(vec![2, 0, 1]), None, Some(vec![0, 2, 1])]
        .into_iter()
        .enumerate()
    {
        let mut c = Case::new(700 + k as u64);
        let x = c.param("x", &[2, 3, 4]);
        let y = c.op("y", Op::Transpose { perm }, &[x]);
        c.check(&[y]);
    }
}

#[test]
fn concat_and_split() {
    let mut c = Case::new(800);
    let a = c.param("a", &[2, 3, 4]);
    let b = c.param("b", &[2, 1, 4]);
    let k = c.konst(
        "k",
        Tensor::from_f32(vec![2, 2, 4], vec![0.5; 16]).expect("shape"),
    );
    let y = c.op("y", Op::Concat { axis: -2 }, &[a, k, b]);
    c.check(&[y]);

    let mut c = Case::new(801);
    let x = c.param("x", &[2, 6, 3]);
    let s = c.op_n(
        "split",
        Op::Split {
            axis: 1,
            sizes: Some(vec![1, 3, 2]),
        },
        &[Some(x)],
        3,
    );
    // The middle piece is not used: its gradient is zeros.
    c.check(&[Port::new(s, 0), Port::new(s, 2)]);
}

#[test]
fn gather_with_repeated_and_negative_indices() {
    let mut c = Case::new(900);
    let x = c.param("x", &[3, 4, 2]);
    let idx = c.konst(
        "idx",
        Tensor::from_i64(vec![2, 2], vec![0, -1, 0, 2]).expect("shape"),
    );
    let y = c.op("y", Op::Gather { axis: 1 }, &[x, idx]);
    c.check(&[y]);

    // The class-token pick of a ViT: a scalar index on axis 1.
    let mut c = Case::new(901);
    let x = c.param("x", &[2, 5, 3]);
    let idx = c.konst("idx", Tensor::scalar_i64(0));
    let y = c.op("y", Op::Gather { axis: 1 }, &[x, idx]);
    c.check(&[y]);
}

#[test]
fn slice_with_steps_and_clamping() {
    let mut c = Case::new(1000);
    let x = c.param("x", &[4, 6]);
    let starts = c.ints("starts", &[-1, 1]);
    let ends = c.ints("ends", &[-100, 100]);
    let axes = c.ints("axes", &[0, 1]);
    let steps = c.ints("steps", &[-2, 2]);
    let y = c.op("y", Op::Slice, &[x, starts, ends, axes, steps]);
    c.check(&[y]);

    let mut c = Case::new(1001);
    let x = c.param("x", &[3, 5]);
    let starts = c.ints("starts", &[1]);
    let ends = c.ints("ends", &[4]);
    let y = c.op("y", Op::Slice, &[x, starts, ends]);
    c.check(&[y]);
}

#[test]
fn expand_and_where() {
    let mut c = Case::new(1100);
    let x = c.param("x", &[3, 1]);
    let s = c.ints("s", &[2, 3, 4]);
    let y = c.op("y", Op::Expand, &[x, s]);
    c.check(&[y]);

    let mut c = Case::new(1101);
    let cond = c.konst(
        "cond",
        Tensor::new(
            vec![2, 3],
            glora::ir::TensorData::Bool(vec![true, false, true, false, false, true]),
        )
        .expect("shape"),
    );
    let a = c.param("a", &[2, 3]);
    let b = c.param("b", &[3]);
    let y = c.op("y", Op::Where, &[cond, a, b]);
    c.check(&[y]);
}

#[test]
fn matmul_weight_batched_and_broadcast() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[3, 4, 2]),
    ];
    for (k, (sa, sb)) in cases.into_iter().enumerate() {
        let mut c = Case::new(1200 + k as u64);
        let a = c.param("a", sa);
        let b = c.param("b", sb);
        let y = c.op("y", Op::MatMul, &[a, b]);
        c.check(&[y]);
    }
}

#[test]
fn gemm_every_transpose() {
    for (k, (trans_a, trans_b)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let mut c = Case::new(1300 + k as u64);
        let sa: &[usize] = if trans_a { &[4, 3] } else { &[3, 4] };
        let sb: &[usize] = if trans_b { &[5, 4] } else { &[4, 5] };
        let a = c.param("a", sa);
        let b = c.param("b", sb);
        let bias = c.param("c", &[5]);
        let y = c.op(
            "y",
            Op::Gemm(GemmAttrs {
                alpha: 1.5,
                beta: 0.5,
                trans_a,
                trans_b,
            }),
            &[a, b, bias],
        );
        c.check(&[y]);
    }
}

#[test]
fn conv_input_weight_and_bias() {
    let cases = [
        (
            vec![1, 1],
            vec![0, 0, 0, 0],
            vec![1, 1],
            1usize,
            2usize,
            4usize,
        ),
        (vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], 1, 2, 4),
        (vec![1, 2], vec![1, 0, 2, 1], vec![2, 1], 2, 4, 4),
        (vec![2, 2], vec![0, 0, 0, 0], vec![1, 1], 1, 3, 2),
    ];
    for (k, (strides, pads, dilations, group, c_in, m)) in cases.into_iter().enumerate() {
        let mut c = Case::new(1400 + k as u64);
        let x = c.param("x", &[2, c_in, 6, 5]);
        let w = c.param("w", &[m, c_in / group, 3, 2]);
        let b = c.param("b", &[m]);
        let attrs = ConvAttrs {
            kernel_shape: vec![3, 2],
            strides,
            dilations,
            pads,
            group,
            ..ConvAttrs::default()
        };
        let y = c.op("y", Op::Conv(attrs), &[x, w, b]);
        c.check(&[y]);
    }
}

#[test]
fn softmax_cross_entropy() {
    for (k, smoothing) in [0.0f32, 0.1].into_iter().enumerate() {
        let mut c = Case::new(1500 + k as u64);
        let logits = c.param_in("logits", &[4, 5], -3.0, 3.0);
        let labels = c.konst(
            "labels",
            Tensor::from_i64(vec![4], vec![0, 4, 2, 2]).expect("shape"),
        );
        let y = c.op(
            "loss",
            Op::Grad(GradOp::SoftmaxCrossEntropy {
                label_smoothing: smoothing,
            }),
            &[logits, labels],
        );
        c.check(&[y]);
    }
}

/// A GLoRA layer with random adapters (none zero, so no gradient vanishes by
/// initialisation) between a trainable input transform and the loss.
fn glora_case(config: LayerConfig, layout: WeightLayout, bias: bool, seed: u64) {
    let (d_in, d_out, rank) = (5, 4, 3);
    let mut c = Case::new(seed);
    let x0 = c.param("x0", &[2, 3, d_in]);
    // A trainable op before the layer, so that dx is needed and checked through it.
    let x = c.op("x", Op::Unary(UnaryOp::Tanh), &[x0]);
    let w_shape = match layout {
        WeightLayout::InOut => vec![d_in, d_out],
        WeightLayout::OutIn => vec![d_out, d_in],
    };
    let w0 = c.random(&w_shape, -1.0, 1.0);
    let w0 = c.konst("w0", w0);
    let b0 = if bias {
        let t = c.random(&[d_out], -1.0, 1.0);
        Some(c.konst("b0", t))
    } else {
        None
    };
    let shapes: [(&str, Vec<usize>); 8] = [
        ("Ad", vec![d_out, rank]),
        ("Au", vec![rank, d_in]),
        ("Bd", vec![d_out, rank]),
        ("Bu", vec![rank, d_in]),
        ("Cd", vec![d_in, rank]),
        ("Cu", vec![rank, 1]),
        ("D", vec![d_out]),
        ("E", vec![d_out]),
    ];
    let mut ins = vec![Some(x), Some(w0), b0];
    for (name, shape) in &shapes {
        ins.push(Some(c.param(&format!("layer.{name}"), shape)));
    }
    assert_eq!(ins.len(), GLORA_LINEAR_INPUTS);
    let attrs = GloraLinearAttrs {
        layer: "layer".into(),
        d_in,
        d_out,
        rank,
        layout,
        has_bias: bias,
    };
    let n = c.op_n("layer", Op::GloraLinear(attrs), &ins, 1);
    c.configs.insert("layer", config);
    c.check(&[Port::new(n, 0)]);
}

#[test]
fn glora_linear_every_option_of_every_term() {
    let base = LayerConfig {
        a: AbOption::Lora(2),
        b: AbOption::Lora(3),
        c: COption::Lora(2),
        d: DeOption::Vector,
        e: DeOption::Constant,
    };
    let mut configs = vec![base];
    for a in [
        AbOption::Lora(1),
        AbOption::Lora(3),
        AbOption::Vector,
        AbOption::Constant,
        AbOption::None,
    ] {
        configs.push(LayerConfig { a, ..base });
    }
    for b in [
        AbOption::Lora(1),
        AbOption::Vector,
        AbOption::Constant,
        AbOption::None,
    ] {
        configs.push(LayerConfig { b, ..base });
    }
    for c in [COption::Lora(3), COption::Vector, COption::None] {
        configs.push(LayerConfig { c, ..base });
    }
    for d in [DeOption::Constant, DeOption::None] {
        configs.push(LayerConfig { d, ..base });
    }
    for e in [DeOption::Vector, DeOption::None] {
        configs.push(LayerConfig { e, ..base });
    }
    configs.push(LayerConfig::NONE);
    let mut seed = 1600;
    for config in configs {
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for bias in [true, false] {
                glora_case(config, layout, bias, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn unsupported_ops_are_named() {
    let mut c = Case::new(1700);
    let x = c.param("x", &[2, 3]);
    let y = c.op(
        "max",
        Op::Reduce {
            op: ReduceOp::Max,
            axes: None,
            keepdims: false,
            noop_with_empty_axes: false,
        },
        &[x],
    );
    c.g.outputs = vec![y];
    infer_types(&mut c.g).expect("types");
    let err = autodiff(&mut c.g, y).expect_err("ReduceMax has no rule");
    let msg = format!("{err:#}");
    assert!(msg.contains("'max'") && msg.contains("ReduceMax"), "{msg}");
}

#[test]
fn shapes_must_be_known() {
    let mut g = Graph::new("sym");
    let x = g.add_input(
        "x",
        TensorType::new(
            DType::F32,
            glora::ir::Shape(vec![glora::ir::Dim::sym("batch"), glora::ir::Dim::Known(3)]),
        ),
    );
    let t = Tensor::from_f32(vec![3], vec![1.0; 3]).expect("shape");
    let w = g.add_node(Node::new(
        "w",
        Op::Param(t.clone()),
        0,
        vec![Value::typed("w", TensorType::new(DType::F32, t.ir_shape()))],
    ));
    let m = g.add_op(
        "m",
        Op::Binary(BinaryOp::Mul),
        &[Some(Port::new(x, 0)), Some(Port::new(w, 0))],
        &["m"],
    );
    let s = g.add_op(
        "s",
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: None,
            keepdims: false,
            noop_with_empty_axes: false,
        },
        &[Some(Port::new(m, 0))],
        &["s"],
    );
    g.outputs = vec![Port::new(s, 0)];
    let err = autodiff(&mut g, Port::new(s, 0)).expect_err("symbolic batch");
    assert!(format!("{err:#}").contains("batch size"), "{err:#}");
}

/// A tiny decoder built by the LLaMA-family front end, its token inputs fixed (one
/// row right-padded) and every weight trainable: the gradients through RMSNorm,
/// rotary embeddings, grouped-query attention under the causal (and sliding-window)
/// mask, SwiGLU and the tied or separate head, against f64 central differences.
///
/// Not left padding: a query that may see no key at all (a leading pad token) gets
/// uniform weights because `score + f32::MIN` rounds to `f32::MIN` for every key, a
/// constant that finite differences see as flat while softmax's rule does not.
/// Training never asks for that gradient: the loss ignores padded positions, and no
/// real token attends to one, so nothing flows back into such a row.
fn decoder_case(config: &str, seed: u64) {
    let json: serde_json::Value = serde_json::from_str(config).expect("config");
    let model_type = json["model_type"].as_str().expect("model_type").to_string();
    let cfg = glora::models::HfConfig {
        path: "config.json".into(),
        json,
        model_type,
    };
    let mut g = glora::models::build_random(&cfg, seed)
        .expect("decoder builds")
        .graph;
    let ids = Tensor::from_i64(vec![2, 4], vec![3, 7, 1, 9, 0, 5, 10, 2]).expect("ids");
    let mask = Tensor::from_i64(vec![2, 4], vec![1, 1, 1, 1, 1, 1, 1, 0]).expect("mask");
    for (id, t) in g.inputs.clone().into_iter().zip([ids, mask]) {
        let node = g.node_mut(id);
        node.outputs[0].ty = Some(TensorType::new(t.dtype(), t.ir_shape()));
        node.op = Op::Const(t);
    }
    g.inputs.clear();
    let weights: Vec<NodeIndex> = g
        .node_ids()
        .into_iter()
        .filter(|&id| {
            let n = g.node(id);
            matches!(&n.op, Op::Const(t) if t.dtype() == DType::F32)
                && (n.name.ends_with(".weight") || n.name.ends_with(".bias"))
        })
        .collect();
    for id in weights {
        let node = g.node_mut(id);
        if let Op::Const(t) = &node.op {
            node.op = Op::Param(t.clone());
        }
    }
    let out = g.outputs[0];
    let mut case = Case::new(seed);
    case.g = g;
    case.check(&[out]);
}

#[test]
fn llama_decoder_with_gqa_biases_tied_head_and_scaled_rope() {
    decoder_case(
        r#"{"model_type": "llama", "vocab_size": 11, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 6,
            "max_position_embeddings": 8, "tie_word_embeddings": true, "attention_bias": true,
            "mlp_bias": true, "initializer_range": 0.5,
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0}}"#,
        1801,
    );
}

#[test]
fn mistral_decoder_with_sliding_window() {
    decoder_case(
        r#"{"model_type": "mistral", "vocab_size": 11, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 6,
            "intermediate_size": 6, "max_position_embeddings": 8, "sliding_window": 2,
            "initializer_range": 0.5}"#,
        1802,
    );
}
