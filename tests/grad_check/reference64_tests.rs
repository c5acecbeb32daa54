//! Self-tests of the f64 reference interpreter: hand-worked values for the ops whose
//! conventions are easiest to get wrong (broadcasting, negative indices and steps,
//! grouped strided padded convolution, GLoRA weight sharing, smoothed cross-entropy,
//! erf), and, for every op family, agreement with the CPU executor on random f32
//! inputs. The two share no code, so agreement checks both.

use std::collections::HashMap;

use glora::exec::{CpuBackend, Session};
use glora::glora::{AbOption, COption, DeOption, LayerConfig, ModelConfig};
use glora::ir::{
    AutoPad, BinaryOp, ConvAttrs, DType, GLORA_LINEAR_INPUTS, GeluApprox, GemmAttrs,
    GloraLinearAttrs, GradOp, Graph, NodeIndex, Op, Port, ReduceOp, ResizeAttrs, Shape, Tensor,
    TensorData, TensorType, UnaryOp, WeightLayout,
};
use glora::train::loss::softmax_cross_entropy;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::reference64::{Array64, erf, eval64};

/// Agreement asked of executor (f32) and reference (f64), relative to max(|ref|, 1).
const TOL: f64 = 1e-4;

/// A graph under construction with the tensors to feed its inputs.
struct Case {
    g: Graph,
    feeds: Vec<(String, Tensor)>,
    rng: StdRng,
    configs: ModelConfig,
}

fn p(id: NodeIndex) -> Option<Port> {
    Some(Port::new(id, 0))
}

impl Case {
    fn new(seed: u64) -> Case {
        Case {
            g: Graph::new("case"),
            feeds: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            configs: ModelConfig::new(),
        }
    }

    fn random(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(lo..hi)).collect()
    }

    /// A graph input holding `t`.
    fn feed(&mut self, t: Tensor) -> NodeIndex {
        let name = format!("in{}", self.feeds.len());
        let id = self
            .g
            .add_input(&name, TensorType::new(t.dtype(), t.ir_shape()));
        self.feeds.push((name, t));
        id
    }

    /// A graph input with values uniform in `[lo, hi)`.
    fn input_in(&mut self, shape: &[usize], lo: f32, hi: f32) -> NodeIndex {
        let v = self.random(shape.iter().product(), lo, hi);
        self.feed(Tensor::from_f32(shape.to_vec(), v).unwrap())
    }

    fn input(&mut self, shape: &[usize]) -> NodeIndex {
        self.input_in(shape, -2.0, 2.0)
    }

    fn konst(&mut self, t: Tensor) -> NodeIndex {
        let name = self.g.fresh_name("k");
        self.g.add_const(name, t)
    }

    fn ints(&mut self, v: &[i64]) -> NodeIndex {
        self.konst(Tensor::vec_i64(v.to_vec()))
    }

    /// A node computing `op`, each of its `outputs` made a graph output.
    fn op(&mut self, op: Op, inputs: &[Option<Port>], outputs: usize) -> NodeIndex {
        let name = self.g.fresh_name("n");
        let outs: Vec<String> = (0..outputs).map(|k| format!("{name}_y{k}")).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let id = self.g.add_op(name, op, inputs, &refs);
        for slot in 0..outputs {
            self.g.outputs.push(Port::new(id, slot));
        }
        id
    }

    fn reference(&self) -> Result<Vec<Array64>, String> {
        let feeds: HashMap<String, Array64> = self
            .feeds
            .iter()
            .map(|(n, t)| (n.clone(), Array64::from_tensor(t)))
            .collect();
        eval64(&self.g, &feeds, &self.configs)
    }

    fn executor(&self) -> Result<Vec<Tensor>, String> {
        let mut s = Session::new(&self.g, CpuBackend).map_err(|e| e.to_string())?;
        if !self.configs.is_empty() {
            s.set_glora_configs(&self.configs)
                .map_err(|e| e.to_string())?;
        }
        s.run(&self.feeds).map_err(|e| e.to_string())
    }

    /// Runs both and asserts agreement within [`TOL`].
    fn check(&self, what: &str) {
        let want = self
            .reference()
            .unwrap_or_else(|e| panic!("{what}: reference: {e}"));
        let got = self
            .executor()
            .unwrap_or_else(|e| panic!("{what}: executor: {e}"));
        assert_eq!(got.len(), want.len(), "{what}: output count");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(
                &Array64::from_tensor(g),
                w,
                TOL,
                &format!("{what}, output {k}"),
            );
        }
    }
}

fn assert_close(got: &Array64, want: &Array64, tol: f64, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    for (k, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}: entry {k}: got {g}, want {w}"
        );
    }
}

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
}

/// Evaluates a graph whose inputs are all constants.
fn eval_consts(c: &Case) -> Vec<Array64> {
    c.reference().unwrap()
}

fn expect(got: &Array64, shape: &[usize], data: &[f64], what: &str) {
    let want = Array64::new(shape.to_vec(), data.to_vec()).unwrap();
    assert_close(got, &want, 1e-12, what);
}

// ---------------------------------------------------------------- hand-worked values

#[test]
fn erf_matches_tabulated_values() {
    // Values from the C library's erf, correctly rounded to f64.
    let table = [
        (0.0, 0.0),
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (2.9, 0.9999589021219005),
        (3.0, 0.9999779095030014),
        (3.5, 0.9999992569016276),
        (4.5, 0.9999999998033839),
        (-0.7, -0.6778011938374184),
    ];
    for (x, want) in table {
        let got = erf(x);
        assert!((got - want).abs() <= 2e-15, "erf({x}) = {got}, want {want}");
    }
    assert_eq!(erf(40.0), 1.0);
    assert!(erf(f64::NAN).is_nan());
}

#[test]
fn matmul_broadcasts_batches_and_promotes_vectors() {
    let mut c = Case::new(0);
    let a = c.konst(f32s(&[2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]));
    let col = c.konst(f32s(&[2, 1], &[2., 1.]));
    let v = c.konst(f32s(&[2], &[1., 2.]));
    c.op(Op::MatMul, &[p(a), p(col)], 1);
    c.op(Op::MatMul, &[p(v), p(a)], 1);
    c.op(Op::MatMul, &[p(a), p(v)], 1);
    let a4 = c.konst(f32s(&[2, 1, 1, 2], &[1., 2., 3., 4.]));
    let b3 = c.konst(f32s(&[3, 2, 1], &[1., 0., 0., 1., 1., 1.]));
    c.op(Op::MatMul, &[p(a4), p(b3)], 1);
    let out = eval_consts(&c);
    expect(&out[0], &[2, 2, 1], &[4., 10., 16., 22.], "[2,2,2]·[2,1]");
    expect(&out[1], &[2, 2], &[7., 10., 19., 22.], "[2]·[2,2,2]");
    expect(&out[2], &[2, 2], &[5., 11., 17., 23.], "[2,2,2]·[2]");
    expect(
        &out[3],
        &[2, 3, 1, 1],
        &[1., 2., 3., 3., 4., 7.],
        "[2,1,1,2]·[3,2,1]",
    );
}

#[test]
fn softmax_hand_values_on_either_axis() {
    let mut c = Case::new(0);
    let row = c.konst(f32s(&[1, 3], &[1., 2., 3.]));
    let col = c.konst(f32s(&[3, 1], &[1., 2., 3.]));
    c.op(Op::Softmax { axis: -1 }, &[p(row)], 1);
    c.op(Op::Softmax { axis: 0 }, &[p(col)], 1);
    c.op(Op::Softmax { axis: 0 }, &[p(row)], 1);
    let out = eval_consts(&c);
    let want = [0.09003057317038046, 0.24472847105479767, 0.6652409557748219];
    expect(&out[0], &[1, 3], &want, "row");
    expect(&out[1], &[3, 1], &want, "column");
    // A softmax over a size-1 axis is 1 everywhere.
    expect(&out[2], &[1, 3], &[1., 1., 1.], "size-1 axis");
}

#[test]
fn layer_norm_hand_values_and_statistics() {
    let mut c = Case::new(0);
    let x = c.konst(f32s(&[1, 4], &[1., 2., 3., 4.]));
    let scale = c.konst(f32s(&[4], &[1., 2., 1., 2.]));
    let bias = c.konst(f32s(&[4], &[0., 0., 1., 1.]));
    c.op(
        Op::LayerNorm {
            axis: -1,
            epsilon: 0.0,
        },
        &[p(x), p(scale), p(bias)],
        3,
    );
    let out = eval_consts(&c);
    // mean 2.5, variance 1.25.
    expect(
        &out[0],
        &[1, 4],
        &[
            -1.3416407864998738,
            -0.8944271909999159,
            1.4472135954999579,
            3.6832815729997477,
        ],
        "y",
    );
    expect(&out[1], &[1, 1], &[2.5], "mean");
    expect(&out[2], &[1, 1], &[1.0 / 1.25f64.sqrt()], "inv_std_dev");
}

#[test]
fn gather_counts_negative_indices_from_the_end() {
    let mut c = Case::new(0);
    let x = c.konst(f32s(&[3, 2], &[1., 2., 3., 4., 5., 6.]));
    let rows = c.ints(&[-1, 0]);
    let last = c.konst(Tensor::scalar_i64(-1));
    c.op(Op::Gather { axis: 0 }, &[p(x), p(rows)], 1);
    c.op(Op::Gather { axis: 1 }, &[p(x), p(last)], 1);
    let out = eval_consts(&c);
    expect(&out[0], &[2, 2], &[5., 6., 1., 2.], "rows -1, 0");
    expect(&out[1], &[3], &[2., 4., 6.], "scalar column -1");
}

#[test]
fn slice_with_negative_steps_and_clamped_bounds() {
    let mut c = Case::new(0);
    let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let x = c.konst(f32s(&[10], &v));
    let (s, e, st) = (c.ints(&[-2]), c.ints(&[i64::MIN]), c.ints(&[-3]));
    c.op(Op::Slice, &[p(x), p(s), p(e), None, p(st)], 1);
    let m: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let m = c.konst(f32s(&[3, 4], &m));
    let (s, e, ax, st) = (
        c.ints(&[100, 0]),
        c.ints(&[-100, 4]),
        c.ints(&[1, 0]),
        c.ints(&[-1, 2]),
    );
    c.op(Op::Slice, &[p(m), p(s), p(e), p(ax), p(st)], 1);
    let (s, e) = (c.ints(&[5]), c.ints(&[2]));
    c.op(Op::Slice, &[p(x), p(s), p(e)], 1);
    let out = eval_consts(&c);
    expect(&out[0], &[3], &[8., 5., 2.], "start -2, step -3");
    // Rows 0 and 2; columns from 3 (100 clamped) down to 0 inclusive.
    expect(
        &out[1],
        &[2, 4],
        &[3., 2., 1., 0., 11., 10., 9., 8.],
        "clamped reverse columns",
    );
    expect(&out[2], &[0], &[], "empty");
}

#[test]
fn conv_2d_with_stride_pad_and_two_groups() {
    let mut c = Case::new(0);
    let x = c.konst(f32s(
        &[1, 2, 3, 3],
        &[
            1., 2., 3., 4., 5., 6., 7., 8., 9., // channel 0
            1., 0., 2., 0., 3., 0., 4., 0., 5., // channel 1
        ],
    ));
    let w = c.konst(f32s(&[2, 1, 2, 2], &[1., 0., 0., 1., 1., 1., 1., 1.]));
    let b = c.konst(f32s(&[2], &[0.5, -1.]));
    let attrs = ConvAttrs {
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        group: 2,
        ..ConvAttrs::default()
    };
    c.op(Op::Conv(attrs), &[p(x), p(w), p(b)], 1);
    let out = eval_consts(&c);
    // Output (oy, ox) reads input rows 2·oy−1.., columns 2·ox−1..; the diagonal
    // filter adds x[r][c] and x[r+1][c+1], the ones filter the 2×2 window.
    expect(
        &out[0],
        &[1, 2, 2, 2],
        &[1.5, 3.5, 7.5, 14.5, 0., 1., 3., 7.],
        "conv",
    );
}

#[test]
fn conv_1d_with_dilation() {
    let mut c = Case::new(0);
    let x = c.konst(f32s(&[1, 1, 5], &[1., 2., 3., 4., 5.]));
    let w = c.konst(f32s(&[1, 1, 2], &[1., -1.]));
    let attrs = ConvAttrs {
        dilations: vec![2],
        pads: vec![0, 1],
        group: 1,
        ..ConvAttrs::default()
    };
    c.op(Op::Conv(attrs), &[p(x), p(w)], 1);
    // Taps at t and t+2, the padded end reading 0: 1−3, 2−4, 3−5, 4−0.
    expect(
        &eval_consts(&c)[0],
        &[1, 1, 4],
        &[-2., -2., -2., 4.],
        "conv1d",
    );
}

/// A one-node GloraLinear graph (d_in = d_out = 2, stored rank 2) with
/// W0 = [[1, 2], [3, 4]] (output-major), b0 = [0.5, −1], Ad = [[.25, 9], [.5, 9]] and
/// E = [1, 7]; every other adapter tensor is 5 (read by no option of the test).
fn hand_glora(layout: WeightLayout, config: LayerConfig) -> Case {
    let mut c = Case::new(0);
    let x = c.konst(f32s(&[1, 2], &[2., -1.]));
    let w0 = match layout {
        WeightLayout::OutIn => f32s(&[2, 2], &[1., 2., 3., 4.]),
        WeightLayout::InOut => f32s(&[2, 2], &[1., 3., 2., 4.]),
    };
    let w0 = c.konst(w0);
    let b0 = c.konst(f32s(&[2], &[0.5, -1.]));
    let fives = |shape: &[usize]| f32s(shape, &vec![5.0; shape.iter().product()]);
    let adapters = [
        f32s(&[2, 2], &[0.25, 9., 0.5, 9.]),
        fives(&[2, 2]),
        fives(&[2, 2]),
        fives(&[2, 2]),
        fives(&[2, 2]),
        fives(&[2, 1]),
        fives(&[2]),
        f32s(&[2], &[1., 7.]),
    ];
    let mut slots = vec![p(x), p(w0), p(b0)];
    for t in adapters {
        let id = c.konst(t);
        slots.push(p(id));
    }
    let attrs = GloraLinearAttrs {
        layer: "fc".into(),
        d_in: 2,
        d_out: 2,
        rank: 2,
        layout,
        has_bias: true,
    };
    c.op(Op::GloraLinear(attrs), &slots, 1);
    c.configs.insert("fc", config);
    c
}

#[test]
fn glora_linear_a_vector_and_e_constant_by_hand() {
    let config = LayerConfig {
        a: AbOption::Vector,
        e: DeOption::Constant,
        ..LayerConfig::NONE
    };
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        let c = hand_glora(layout, config);
        // A = Ad[:, 0] = [.25, .5]: W' rows [1.25, 2.5] and [4.5, 6]; E = 1.
        // x = [2, −1]: y0 = 2.5 − 2.5 + 0.5 + 1, y1 = 9 − 6 − 1 + 1.
        expect(
            &eval_consts(&c)[0],
            &[1, 2],
            &[1.5, 3.0],
            &format!("{layout:?}"),
        );
    }
    // Without a config for the layer there is nothing to compute.
    let mut c = hand_glora(WeightLayout::OutIn, config);
    c.configs = ModelConfig::new();
    let err = c.reference().unwrap_err();
    assert!(err.contains("fc") && err.contains("GloraLinear"), "{err}");
}

#[test]
fn cross_entropy_with_label_smoothing_by_hand() {
    let mut c = Case::new(0);
    let ln3 = 3f32.ln();
    let logits = c.konst(f32s(&[2, 2], &[ln3, 0., 0., ln3]));
    let labels = c.ints(&[0, 0]);
    c.op(
        Op::Grad(GradOp::SoftmaxCrossEntropy {
            label_smoothing: 0.2,
        }),
        &[p(logits), p(labels)],
        1,
    );
    // Row 0: softmax [3/4, 1/4]; row 1: [1/4, 3/4]; targets [0.9, 0.1]:
    // ½·(−0.9 ln ¾ − 0.1 ln ¼ − 0.9 ln ¼ − 0.1 ln ¾) = ½·(ln 4 − ln 3 + 0.8·ln 4… )
    let want = 0.5
        * (-(0.9 * 0.75f64.ln() + 0.1 * 0.25f64.ln()) - (0.9 * 0.25f64.ln() + 0.1 * 0.75f64.ln()));
    let got = &eval_consts(&c)[0];
    assert_eq!(got.shape, Vec::<usize>::new());
    // ln 3 was rounded to f32 in the logits.
    assert!(
        (got.data[0] - want).abs() < 1e-7,
        "{} vs {want}",
        got.data[0]
    );
    assert!((want - 0.8369882167858356).abs() < 1e-15);
}

#[test]
fn split_reshape_and_flatten_shapes() {
    let mut c = Case::new(0);
    let x = c.konst(f32s(&[5], &[1., 2., 3., 4., 5.]));
    c.op(
        Op::Split {
            axis: 0,
            sizes: None,
        },
        &[p(x)],
        2,
    );
    c.op(
        Op::Split {
            axis: -1,
            sizes: Some(vec![1, 4]),
        },
        &[p(x)],
        2,
    );
    let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let t = c.konst(f32s(&[2, 3, 4], &v));
    let shape = c.ints(&[0, -1]);
    c.op(Op::Reshape { allowzero: false }, &[p(t), p(shape)], 1);
    c.op(Op::Flatten { axis: -1 }, &[p(t)], 1);
    let out = eval_consts(&c);
    expect(&out[0], &[3], &[1., 2., 3.], "equal split, first");
    expect(&out[1], &[2], &[4., 5.], "equal split, last smaller");
    expect(&out[2], &[1], &[1.], "sizes, first");
    expect(&out[3], &[4], &[2., 3., 4., 5.], "sizes, second");
    assert_eq!(out[4].shape, vec![2, 12]);
    assert_eq!(out[5].shape, vec![6, 4]);
    assert_eq!(out[4].data, out[5].data);
}

#[test]
fn weights_are_replaced_by_name_and_errors_name_the_node() {
    let mut c = Case::new(0);
    let x = c.input(&[1, 2]);
    let w = c.g.add_node(glora::ir::Node::new(
        "w",
        Op::Param(f32s(&[2, 1], &[1., 1.])),
        0,
        vec![glora::ir::Value::new("w")],
    ));
    c.op(Op::MatMul, &[p(x), p(w)], 1);
    let x_val = Array64::from_tensor(&c.feeds[0].1);
    let mut feeds = HashMap::from([("in0".to_string(), x_val.clone())]);
    let plain = eval64(&c.g, &feeds, &c.configs).unwrap();
    assert!((plain[0].data[0] - (x_val.data[0] + x_val.data[1])).abs() < 1e-12);
    feeds.insert("w".into(), Array64::new(vec![2, 1], vec![2., -1.]).unwrap());
    let replaced = eval64(&c.g, &feeds, &c.configs).unwrap();
    let want = 2.0 * x_val.data[0] - x_val.data[1];
    assert!((replaced[0].data[0] - want).abs() < 1e-12);
    feeds.insert("w".into(), Array64::zeros(&[3]));
    let err = eval64(&c.g, &feeds, &c.configs).unwrap_err();
    assert!(err.contains("'w'"), "{err}");
    let err = eval64(&c.g, &HashMap::new(), &c.configs).unwrap_err();
    assert!(err.contains("in0"), "{err}");

    let mut c = Case::new(0);
    let x = c.input(&[1, 1, 2, 2]);
    c.op(Op::Resize(ResizeAttrs::default()), &[p(x)], 1);
    let err = c.reference().unwrap_err();
    assert!(err.contains("Resize"), "{err}");
}

// ---------------------------------------------------------------- against the executor

#[test]
fn matmul_agrees_with_the_executor() {
    let pairs: [(&[usize], &[usize]); 6] = [
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[4, 2]),
        (&[4], &[2, 4, 3]),
        (&[2, 3, 4], &[4]),
        (&[2, 1, 3, 4], &[5, 4, 2]),
        (&[4], &[4]),
    ];
    for (k, (a, b)) in pairs.into_iter().enumerate() {
        let mut c = Case::new(k as u64);
        let (x, y) = (c.input(a), c.input(b));
        c.op(Op::MatMul, &[p(x), p(y)], 1);
        c.check(&format!("MatMul {a:?}·{b:?}"));
    }
}

#[test]
fn gemm_agrees_with_the_executor() {
    let (m, k, n) = (3, 4, 5);
    let c_shapes: [Option<&[usize]>; 4] = [None, Some(&[n]), Some(&[m, 1]), Some(&[m, n])];
    for trans_a in [false, true] {
        for trans_b in [false, true] {
            for c_shape in c_shapes {
                let mut c = Case::new(7);
                let a = c.input(&if trans_a { [k, m] } else { [m, k] });
                let b = c.input(&if trans_b { [n, k] } else { [k, n] });
                let cc = c_shape.map(|s| c.input(s));
                let attrs = GemmAttrs {
                    alpha: 0.7,
                    beta: 1.3,
                    trans_a,
                    trans_b,
                };
                c.op(Op::Gemm(attrs), &[p(a), p(b), cc.and_then(p)], 1);
                c.check(&format!("Gemm tA {trans_a} tB {trans_b} C {c_shape:?}"));
            }
        }
    }
}

#[test]
fn binary_ops_agree_with_the_executor() {
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
    ];
    let shapes: [(&[usize], &[usize]); 3] =
        [(&[2, 3], &[3]), (&[2, 1, 4], &[3, 1]), (&[], &[2, 2])];
    for op in ops {
        for (a, b) in shapes {
            let mut c = Case::new(3);
            // Positive bases and divisors keep Pow and Div well defined and tame.
            let x = c.input_in(a, 0.5, 2.0);
            let y = c.input_in(b, 0.5, 2.0);
            c.op(Op::Binary(op), &[p(x), p(y)], 1);
            c.check(&format!("{op:?} {a:?} {b:?}"));
        }
    }
}

#[test]
fn unary_ops_and_gelu_agree_with_the_executor() {
    let ops = UnaryOp::ALL;
    for op in ops {
        let mut c = Case::new(4);
        let positive = matches!(op, UnaryOp::Sqrt | UnaryOp::Log | UnaryOp::Reciprocal);
        let x = if positive {
            c.input_in(&[3, 5], 0.2, 3.0)
        } else {
            c.input_in(&[3, 5], -3.0, 3.0)
        };
        c.op(Op::Unary(op), &[p(x)], 1);
        c.check(&format!("{op:?}"));
    }
    for approximate in [GeluApprox::None, GeluApprox::Tanh] {
        let mut c = Case::new(5);
        let x = c.input_in(&[4, 6], -4.0, 4.0);
        c.op(Op::Gelu { approximate }, &[p(x)], 1);
        c.check(&format!("Gelu {approximate:?}"));
    }
}

#[test]
fn softmax_and_layer_norm_agree_with_the_executor() {
    for axis in [0, 1, -1] {
        let mut c = Case::new(6);
        let x = c.input(&[2, 3, 4]);
        c.op(Op::Softmax { axis }, &[p(x)], 1);
        c.check(&format!("Softmax axis {axis}"));
    }
    for (axis, with_bias) in [(-1, true), (1, true), (-1, false)] {
        let mut c = Case::new(8);
        let x = c.input(&[2, 3, 4]);
        let norm_shape: &[usize] = if axis == 1 { &[3, 4] } else { &[4] };
        let scale = c.input(norm_shape);
        let bias = with_bias.then(|| c.input(norm_shape));
        c.op(
            Op::LayerNorm {
                axis,
                epsilon: 1e-5,
            },
            &[p(x), p(scale), bias.and_then(p)],
            1,
        );
        c.check(&format!("LayerNorm axis {axis} bias {with_bias}"));
    }
}

#[test]
fn reductions_agree_with_the_executor() {
    let axes_cases: [(Option<Vec<i64>>, bool); 5] = [
        (Some(vec![1]), true),
        (Some(vec![1]), false),
        (Some(vec![0, -1]), false),
        (None, true),
        (None, false),
    ];
    for op in [ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Max] {
        for (axes, keepdims) in &axes_cases {
            let mut c = Case::new(9);
            let x = c.input(&[2, 3, 4]);
            let reduce = Op::Reduce {
                op,
                axes: axes.clone(),
                keepdims: *keepdims,
                noop_with_empty_axes: false,
            };
            c.op(reduce, &[p(x)], 1);
            c.check(&format!("{op:?} axes {axes:?} keepdims {keepdims}"));
        }
        let mut c = Case::new(9);
        let x = c.input(&[2, 3]);
        let noop = Op::Reduce {
            op,
            axes: Some(vec![]),
            keepdims: true,
            noop_with_empty_axes: true,
        };
        c.op(noop, &[p(x)], 1);
        c.check(&format!("{op:?} noop"));
        assert_eq!(c.reference().unwrap()[0].data, c.feeds[0].1.to_f64_vec());
    }
}

#[test]
fn layout_ops_agree_with_the_executor() {
    let mut c = Case::new(10);
    let x = c.input(&[2, 3, 4]);
    let shape = c.ints(&[0, -1, 2]);
    c.op(Op::Reshape { allowzero: false }, &[p(x), p(shape)], 1);
    c.op(
        Op::Transpose {
            perm: Some(vec![1, 2, 0]),
        },
        &[p(x)],
        1,
    );
    c.op(Op::Transpose { perm: None }, &[p(x)], 1);
    let y = c.input(&[2, 1, 4]);
    let z = c.input(&[2, 2, 4]);
    c.op(Op::Concat { axis: 1 }, &[p(x), p(y), p(z)], 1);
    c.op(
        Op::Split {
            axis: -1,
            sizes: Some(vec![1, 3]),
        },
        &[p(x)],
        2,
    );
    c.op(
        Op::Split {
            axis: 1,
            sizes: None,
        },
        &[p(x)],
        3,
    );
    c.op(
        Op::Squeeze {
            axes: Some(vec![1]),
        },
        &[p(y)],
        1,
    );
    c.op(Op::Squeeze { axes: None }, &[p(y)], 1);
    c.op(Op::Unsqueeze { axes: vec![0, -1] }, &[p(x)], 1);
    c.op(Op::Flatten { axis: 2 }, &[p(x)], 1);
    c.op(Op::Flatten { axis: 0 }, &[p(x)], 1);
    c.op(Op::Identity, &[p(x)], 1);
    c.check("layout ops");
}

/// starts, ends, axes?, steps? of one Slice.
type SliceArgs = (
    &'static [i64],
    &'static [i64],
    Option<&'static [i64]>,
    Option<&'static [i64]>,
);

#[test]
fn gather_and_slice_agree_with_the_executor() {
    let mut c = Case::new(11);
    let x = c.input(&[3, 4, 5]);
    let idx = c.konst(Tensor::from_i64(vec![2, 2], vec![0, -1, 3, -4]).unwrap());
    c.op(Op::Gather { axis: 1 }, &[p(x), p(idx)], 1);
    let idx = c.konst(Tensor::scalar_i64(-2));
    c.op(Op::Gather { axis: -1 }, &[p(x), p(idx)], 1);
    let slices: [SliceArgs; 4] = [
        (&[1], &[100], Some(&[2]), None),
        (&[-1, 3], &[i64::MIN, 0], Some(&[1, -1]), Some(&[-2, -1])),
        (&[0, 1, 1], &[3, 3, 5], None, Some(&[2, 1, 3])),
        (&[-100], &[-1], Some(&[0]), None),
    ];
    for (starts, ends, axes, steps) in slices {
        let s = c.ints(starts);
        let e = c.ints(ends);
        let a = axes.map(|a| c.ints(a));
        let st = steps.map(|st| c.ints(st));
        c.op(
            Op::Slice,
            &[p(x), p(s), p(e), a.and_then(p), st.and_then(p)],
            1,
        );
    }
    c.check("gather and slice");
}

#[test]
fn where_and_expand_agree_with_the_executor() {
    let mut c = Case::new(12);
    let flags: Vec<bool> = (0..6).map(|i| i % 3 != 1).collect();
    let cond = c.feed(Tensor::new(vec![2, 3], TensorData::Bool(flags)).unwrap());
    let a = c.input(&[3]);
    let b = c.input(&[2, 1]);
    c.op(Op::Where, &[p(cond), p(a), p(b)], 1);
    let shape = c.ints(&[2, 1, 3]);
    c.op(Op::Expand, &[p(a), p(shape)], 1);
    // A target shorter than the input broadcasts too.
    let shape = c.ints(&[3]);
    c.op(Op::Expand, &[p(b), p(shape)], 1);
    c.check("where and expand");
}

#[test]
fn conv_agrees_with_the_executor() {
    let cases: [(&[usize], &[usize], ConvAttrs, bool); 4] = [
        (
            &[2, 3, 9],
            &[4, 3, 3],
            ConvAttrs {
                dilations: vec![2],
                pads: vec![2, 1],
                strides: vec![1],
                group: 1,
                ..ConvAttrs::default()
            },
            true,
        ),
        (
            &[1, 4, 7, 6],
            &[6, 2, 3, 2],
            ConvAttrs {
                strides: vec![2, 1],
                pads: vec![1, 0, 2, 1],
                group: 2,
                ..ConvAttrs::default()
            },
            true,
        ),
        (
            &[2, 2, 5, 5],
            &[3, 2, 2, 2],
            ConvAttrs {
                strides: vec![2, 2],
                dilations: vec![1, 2],
                auto_pad: AutoPad::Valid,
                group: 1,
                ..ConvAttrs::default()
            },
            false,
        ),
        (
            &[1, 2, 6, 5],
            &[2, 1, 3, 3],
            ConvAttrs {
                strides: vec![2, 2],
                auto_pad: AutoPad::SameUpper,
                group: 2,
                ..ConvAttrs::default()
            },
            true,
        ),
    ];
    for (k, (xs, ws, attrs, bias)) in cases.into_iter().enumerate() {
        let mut c = Case::new(13 + k as u64);
        let x = c.input(xs);
        let w = c.input(ws);
        let b = bias.then(|| c.input(&ws[..1]));
        c.op(Op::Conv(attrs), &[p(x), p(w), b.and_then(p)], 1);
        c.check(&format!("Conv case {k}"));
    }
}

#[test]
fn glora_linear_agrees_with_the_executor() {
    let configs = [
        LayerConfig {
            a: AbOption::Lora(2),
            b: AbOption::Lora(3),
            c: COption::Lora(1),
            d: DeOption::Vector,
            e: DeOption::Constant,
        },
        LayerConfig {
            a: AbOption::Vector,
            b: AbOption::Constant,
            c: COption::Vector,
            d: DeOption::Constant,
            e: DeOption::Vector,
        },
        LayerConfig {
            a: AbOption::Constant,
            b: AbOption::Vector,
            c: COption::None,
            d: DeOption::None,
            e: DeOption::None,
        },
        LayerConfig::NONE,
    ];
    let (d_in, d_out, rank) = (5, 4, 3);
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        for has_bias in [true, false] {
            for (k, config) in configs.iter().enumerate() {
                let mut c = Case::new(20 + k as u64);
                let x = c.input(&[2, 3, d_in]);
                let w0_shape = match layout {
                    WeightLayout::OutIn => [d_out, d_in],
                    WeightLayout::InOut => [d_in, d_out],
                };
                let w0 = c.input(&w0_shape);
                let b0 = has_bias.then(|| c.input(&[d_out]));
                let shapes: [Vec<usize>; 8] = [
                    vec![d_out, rank],
                    vec![rank, d_in],
                    vec![d_out, rank],
                    vec![rank, d_in],
                    vec![d_in, rank],
                    vec![rank, 1],
                    vec![d_out],
                    vec![d_out],
                ];
                let mut slots = vec![p(x), p(w0), b0.and_then(p)];
                for s in &shapes {
                    let v = c.random(s.iter().product(), -1.0, 1.0);
                    let name = c.g.fresh_name("adapter");
                    let id = c.g.add_node(glora::ir::Node::new(
                        name.clone(),
                        Op::Param(f32s(s, &v)),
                        0,
                        vec![glora::ir::Value::typed(
                            name,
                            TensorType::new(DType::F32, Shape::known(s)),
                        )],
                    ));
                    slots.push(p(id));
                }
                assert_eq!(slots.len(), GLORA_LINEAR_INPUTS);
                let attrs = GloraLinearAttrs {
                    layer: "fc".into(),
                    d_in,
                    d_out,
                    rank,
                    layout,
                    has_bias,
                };
                c.op(Op::GloraLinear(attrs), &slots, 1);
                c.configs.insert("fc", *config);
                c.check(&format!("GloraLinear {layout:?} bias {has_bias} {config}"));
            }
        }
    }
}

#[test]
fn cross_entropy_agrees_with_the_host_loss_and_the_executor() {
    let (rows, classes) = (4, 5);
    for smoothing in [0.0f32, 0.1] {
        let mut c = Case::new(30);
        let logits = c.input(&[rows, classes]);
        let labels_v: Vec<i64> = vec![0, 4, 2, 2];
        let labels = c.ints(&labels_v);
        c.op(
            Op::Grad(GradOp::SoftmaxCrossEntropy {
                label_smoothing: smoothing,
            }),
            &[p(logits), p(labels)],
            1,
        );
        let reference = c.reference().unwrap();
        let logits_v = c.feeds[0].1.as_f32().unwrap().to_vec();
        let labels_u: Vec<usize> = labels_v.iter().map(|&l| l as usize).collect();
        let host = softmax_cross_entropy(&logits_v, rows, classes, &labels_u, smoothing).unwrap();
        assert!(
            (reference[0].data[0] - f64::from(host.loss)).abs() <= TOL,
            "smoothing {smoothing}: {} vs host {}",
            reference[0].data[0],
            host.loss
        );
        c.check(&format!("SoftmaxCrossEntropy {smoothing}"));
    }
}

#[test]
fn clip_equal_cast_and_shape_ops_agree_with_the_executor() {
    let mut c = Case::new(40);
    let x = c.input_in(&[2, 3, 4], -3.0, 3.0);
    let lo = c.konst(Tensor::scalar_f32(-1.0));
    let hi = c.konst(Tensor::scalar_f32(0.5));
    c.op(Op::Clip, &[p(x), p(lo), p(hi)], 1);
    c.op(Op::Clip, &[p(x), None, p(hi)], 1);
    let rounded = c.konst(f32s(&[4], &[1., -2., 0., 3.]));
    let cast = c.op(Op::Cast { to: DType::I64 }, &[p(x)], 1);
    let cast_back = c.op(Op::Cast { to: DType::F32 }, &[p(cast)], 1);
    c.op(Op::Binary(BinaryOp::Equal), &[p(cast_back), p(rounded)], 1);
    let shape = c.op(
        Op::Shape {
            start: 1,
            end: None,
        },
        &[p(x)],
        1,
    );
    c.op(
        Op::ConstantOfShape {
            value: Tensor::from_f32(vec![1], vec![2.5]).unwrap(),
        },
        &[p(shape)],
        1,
    );
    c.op(
        Op::Shape {
            start: -2,
            end: Some(-1),
        },
        &[p(x)],
        1,
    );
    let (start, limit, delta) = (
        c.konst(Tensor::scalar_f32(1.0)),
        c.konst(Tensor::scalar_f32(-2.0)),
        c.konst(Tensor::scalar_f32(-0.75)),
    );
    c.op(Op::Range, &[p(start), p(limit), p(delta)], 1);
    let y = c.input(&[2, 3, 2, 2]);
    let scale = c.input(&[3]);
    let bias = c.input(&[3]);
    let mean = c.input(&[3]);
    let var = c.input_in(&[3], 0.5, 2.0);
    c.op(
        Op::BatchNorm { epsilon: 1e-5 },
        &[p(y), p(scale), p(bias), p(mean), p(var)],
        1,
    );
    c.check("clip, equal, cast, shape ops and batch norm");
}
