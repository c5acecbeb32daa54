//! Graph passes checked end to end: small decomposed graphs built by hand are run on
//! the CPU executor before and after each pass (and against hand-worked values), and
//! the standard pipeline is run on the real models from the fixtures, whose structure
//! after optimisation is compared with counts read off the original ONNX files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use glora::exec::{CpuBackend, run_cpu};
use glora::ir::infer::infer_types;
use glora::ir::{
    BinaryOp, DType, Dim, Graph, NodeIndex, Op, Port, ReduceOp, Shape, Tensor, TensorType, UnaryOp,
};
use glora::passes::{
    LinearKind, eliminate_dead_code, eliminate_identity, find_linear_layers, fold_constants,
    fuse_gelu, fuse_layer_norm, optimize,
};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("GLORA_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/glora/fixtures"))
        })?;
    dir.is_dir().then_some(dir)
}

/// A fixture model, or `None` with a notice when it is missing.
fn model(rel: &str) -> Option<PathBuf> {
    let path = match rel.strip_prefix('/') {
        Some(_) => PathBuf::from(rel),
        None => fixtures()?.join(rel),
    };
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipping: fixture {} is missing", path.display());
        None
    }
}

/// Deterministic values in [-2, 2) from a linear congruential generator.
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

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

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run(g: &Graph, inputs: &[(String, Tensor)]) -> Vec<Tensor> {
    run_cpu(g, inputs).unwrap_or_else(|e| panic!("running {}: {e}", g.name))
}

fn histogram(g: &Graph) -> BTreeMap<String, usize> {
    g.op_histogram()
}

fn count(g: &Graph, op: &str) -> usize {
    g.op_histogram().get(op).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// LayerNorm

/// `x` `[2, 3, 4]` through the DINOv2 decomposition, gamma/beta on the given sides.
fn layer_norm_graph(gamma_first: bool, beta_first: bool) -> Graph {
    let mut g = Graph::new("ln");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[2, 3, 4])));
    let mean = |g: &mut Graph, name: &str, from: NodeIndex| {
        let op = Op::Reduce {
            op: ReduceOp::Mean,
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        };
        g.add_op(name, op, &[p(from)], &[&format!("{name}_out")])
    };
    let m = mean(&mut g, "/norm/ReduceMean", x);
    let d = bin(&mut g, "/norm/Sub", BinaryOp::Sub, x, m);
    let two = g.add_const("two", Tensor::scalar_f32(2.0));
    let sq = bin(&mut g, "/norm/Pow", BinaryOp::Pow, d, two);
    let v = mean(&mut g, "/norm/ReduceMean_1", sq);
    let eps = g.add_const("eps", Tensor::scalar_f32(1e-5));
    let ve = bin(&mut g, "/norm/Add", BinaryOp::Add, eps, v);
    let sd = g.add_op(
        "/norm/Sqrt",
        Op::Unary(UnaryOp::Sqrt),
        &[p(ve)],
        &["/norm/Sqrt_out"],
    );
    let y = bin(&mut g, "/norm/Div", BinaryOp::Div, d, sd);
    let gamma = g.add_const(
        "norm.weight",
        Tensor::from_f32(vec![4], vec![1.0, 0.5, -2.0, 3.0]).unwrap(),
    );
    let beta = g.add_const(
        "norm.bias",
        Tensor::from_f32(vec![4], vec![0.0, 1.0, -1.0, 0.25]).unwrap(),
    );
    let scaled = if gamma_first {
        bin(&mut g, "/norm/Mul", BinaryOp::Mul, gamma, y)
    } else {
        bin(&mut g, "/norm/Mul", BinaryOp::Mul, y, gamma)
    };
    let out = if beta_first {
        bin(&mut g, "/norm/Add_1", BinaryOp::Add, beta, scaled)
    } else {
        bin(&mut g, "/norm/Add_1", BinaryOp::Add, scaled, beta)
    };
    g.outputs.push(Port::new(out, 0));
    g
}

/// LayerNorm over the last axis of rows of 4, written out directly.
fn reference_layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(4)
        .flat_map(|row| {
            let mean = row.iter().sum::<f32>() / 4.0;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
            let inv = 1.0 / (var + eps).sqrt();
            row.iter()
                .enumerate()
                .map(move |(i, v)| (v - mean) * inv * gamma[i] + beta[i])
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_fusion_keeps_results() {
    let xs = pseudo_random(24, 1);
    let inputs = vec![(
        "x".to_string(),
        Tensor::from_f32(vec![2, 3, 4], xs.clone()).unwrap(),
    )];
    let expected = reference_layer_norm(&xs, &[1.0, 0.5, -2.0, 3.0], &[0.0, 1.0, -1.0, 0.25], 1e-5);
    for (gamma_first, beta_first) in [(false, false), (true, true), (false, true)] {
        let mut g = layer_norm_graph(gamma_first, beta_first);
        infer_types(&mut g).unwrap();
        let before = run(&g, &inputs)[0].to_f32_vec();
        let report = fuse_layer_norm(&mut g).unwrap();
        g.validate().unwrap();
        assert_eq!(report.changed, 1);
        assert_eq!(
            histogram(&g),
            BTreeMap::from([("LayerNormalization".to_string(), 1)])
        );
        let after = run(&g, &inputs)[0].to_f32_vec();
        assert!(
            max_abs_diff(&before, &expected) < 1e-4,
            "decomposed graph vs reference"
        );
        assert!(
            max_abs_diff(&after, &expected) < 1e-4,
            "fused graph vs reference"
        );
        assert_eq!(g.value(g.outputs[0]).name, "/norm/Add_1_out");
    }
}

// ---------------------------------------------------------------------------
// GELU

/// GELU of `x` `[4]` in one of the three export orders.
fn gelu_graph(form: usize) -> Graph {
    let mut g = Graph::new("gelu");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[4])));
    let r2 = g.add_const("sqrt2", Tensor::scalar_f32(std::f32::consts::SQRT_2));
    let s = bin(&mut g, "/act/Div", BinaryOp::Div, x, r2);
    let e = g.add_op(
        "/act/Erf",
        Op::Unary(UnaryOp::Erf),
        &[p(s)],
        &["/act/Erf_out"],
    );
    let one = g.add_const("one", Tensor::scalar_f32(1.0));
    let a = bin(&mut g, "/act/Add", BinaryOp::Add, e, one);
    let half = g.add_const("half", Tensor::scalar_f32(0.5));
    let out = match form {
        0 => {
            let m = bin(&mut g, "/act/Mul", BinaryOp::Mul, x, a);
            bin(&mut g, "/act/Mul_1", BinaryOp::Mul, m, half)
        }
        1 => {
            let h = bin(&mut g, "/act/Mul", BinaryOp::Mul, a, half);
            bin(&mut g, "/act/Mul_1", BinaryOp::Mul, h, x)
        }
        _ => {
            let h = bin(&mut g, "/act/Mul", BinaryOp::Mul, half, x);
            bin(&mut g, "/act/Mul_1", BinaryOp::Mul, a, h)
        }
    };
    g.outputs.push(Port::new(out, 0));
    g
}

#[test]
fn gelu_fusion_keeps_results() {
    let inputs = vec![(
        "x".to_string(),
        Tensor::from_f32(vec![4], vec![0.0, 1.0, -1.0, 2.0]).unwrap(),
    )];
    // x·Φ(x): Φ(1) = 0.8413447, Φ(−1) = 0.1586553, Φ(2) = 0.9772499
    let expected = [0.0, 0.841_344_7, -0.158_655_3, 1.954_499_8];
    for form in 0..3 {
        let mut g = gelu_graph(form);
        infer_types(&mut g).unwrap();
        let before = run(&g, &inputs)[0].to_f32_vec();
        assert_eq!(fuse_gelu(&mut g).unwrap().changed, 1);
        g.validate().unwrap();
        assert_eq!(histogram(&g), BTreeMap::from([("Gelu".to_string(), 1)]));
        let after = run(&g, &inputs)[0].to_f32_vec();
        assert!(
            max_abs_diff(&before, &expected) < 1e-5,
            "form {form} decomposed: {before:?}"
        );
        assert!(
            max_abs_diff(&after, &expected) < 1e-5,
            "form {form} fused: {after:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Constant folding, Identity removal, dead code

/// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1, 2]))` plus
/// `x_flat · Transpose(W) + (b1 + b2)` routed through Identities and a dead branch.
fn plumbing_graph(batch: Dim) -> Graph {
    let mut g = Graph::new("plumbing");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, Shape(vec![batch, Dim::Known(3), Dim::Known(4)])),
    );
    let shape = g.add_op(
        "/Shape",
        Op::Shape {
            start: 0,
            end: None,
        },
        &[p(x)],
        &["/Shape_out"],
    );
    let zero = g.add_const("zero", Tensor::scalar_i64(0));
    let n = g.add_op(
        "/Gather",
        Op::Gather { axis: 0 },
        &[p(shape), p(zero)],
        &["/Gather_out"],
    );
    let un = g.add_op(
        "/Unsqueeze",
        Op::Unsqueeze { axes: vec![0] },
        &[p(n)],
        &["/Unsqueeze_out"],
    );
    let rest = g.add_const("rest", Tensor::vec_i64(vec![-1, 2]));
    let cat = g.add_op(
        "/Concat",
        Op::Concat { axis: 0 },
        &[p(un), p(rest)],
        &["/Concat_out"],
    );
    let r = g.add_op(
        "/Reshape",
        Op::Reshape { allowzero: false },
        &[p(x), p(cat)],
        &["/Reshape_out"],
    );
    // W is stored transposed, [2, 2] → used as [2, 2]ᵀ.
    let wt = g.add_const(
        "w_t",
        Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
    );
    let w = g.add_op(
        "/Transpose",
        Op::Transpose { perm: None },
        &[p(wt)],
        &["/Transpose_out"],
    );
    let w_alias = g.add_op("alias", Op::Identity, &[p(w)], &["fc.weight"]);
    let mm = g.add_op(
        "/fc/MatMul",
        Op::MatMul,
        &[p(r), p(w_alias)],
        &["/fc/MatMul_out"],
    );
    let b1 = g.add_const("b1", Tensor::from_f32(vec![2], vec![0.5, -0.5]).unwrap());
    let b2 = g.add_const("b2", Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
    let b = bin(&mut g, "/bias/Add", BinaryOp::Add, b1, b2);
    let y = bin(&mut g, "/fc/Add", BinaryOp::Add, mm, b);
    let out = g.add_op("out", Op::Identity, &[p(y)], &["y"]);
    g.add_op(
        "/dead/Neg",
        Op::Unary(UnaryOp::Neg),
        &[p(y)],
        &["/dead_out"],
    );
    g.outputs.push(Port::new(out, 0));
    g
}

#[test]
fn folding_identity_and_dce_keep_results() {
    let xs = pseudo_random(24, 7);
    let inputs = vec![(
        "x".to_string(),
        Tensor::from_f32(vec![2, 3, 4], xs.clone()).unwrap(),
    )];
    // By hand: each row r of 2 from x times W = Transpose(w_t) = [[1, 3], [2, 4]], plus
    // the bias b1 + b2 = [1.5, 1.5].
    let expected: Vec<f32> = xs
        .chunks(2)
        .flat_map(|r| [r[0] + 2.0 * r[1] + 1.5, 3.0 * r[0] + 4.0 * r[1] + 1.5])
        .collect();
    let mut g = plumbing_graph(Dim::Known(2));
    infer_types(&mut g).unwrap();
    let before = run(&g, &inputs);
    assert!(max_abs_diff(&before[0].to_f32_vec(), &expected) < 1e-5);

    assert_eq!(eliminate_identity(&mut g).unwrap().changed, 2);
    let folded = fold_constants(&mut g, &CpuBackend).unwrap();
    // Shape, Gather, Unsqueeze, Concat, Transpose and the bias Add.
    assert_eq!(folded.changed, 6);
    assert!(eliminate_dead_code(&mut g).unwrap().changed >= 1);
    g.validate().unwrap();
    assert_eq!(
        histogram(&g),
        BTreeMap::from([
            ("Add".to_string(), 1),
            ("MatMul".to_string(), 1),
            ("Reshape".to_string(), 1)
        ])
    );
    let after = run(&g, &inputs);
    assert_eq!(after[0].shape(), &[2, 6, 2]);
    assert!(max_abs_diff(&after[0].to_f32_vec(), &expected) < 1e-5);
    assert_eq!(g.value(g.outputs[0]).name, "y");
    let layers = find_linear_layers(&g);
    assert_eq!(layers.len(), 1);
    assert_eq!((layers[0].d_in, layers[0].d_out), (2, 2));
}

#[test]
fn symbolic_batch_keeps_the_batch_plumbing_and_runs_any_batch() {
    let mut g = plumbing_graph(Dim::sym("batch"));
    let reports = optimize(&mut g, &CpuBackend).unwrap();
    assert_eq!(reports.len(), 5);
    // The batch size is read at run time; the rest folds.
    assert_eq!(count(&g, "Shape"), 1);
    assert_eq!(count(&g, "Transpose"), 0);
    for batch in [1usize, 3] {
        let xs = pseudo_random(batch * 12, batch as u64);
        let inputs = vec![(
            "x".to_string(),
            Tensor::from_f32(vec![batch, 3, 4], xs.clone()).unwrap(),
        )];
        let expected: Vec<f32> = xs
            .chunks(2)
            .flat_map(|r| [r[0] + 2.0 * r[1] + 1.5, 3.0 * r[0] + 4.0 * r[1] + 1.5])
            .collect();
        let out = run(&g, &inputs);
        assert_eq!(out[0].shape(), &[batch, 6, 2]);
        assert!(max_abs_diff(&out[0].to_f32_vec(), &expected) < 1e-5);
    }
}

// ---------------------------------------------------------------------------
// Real models

fn with_input_shape(g: &mut Graph, dims: &[usize]) {
    let id = g.inputs[0];
    let v = &mut g.node_mut(id).outputs[0];
    let dtype = v.ty.as_ref().map_or(DType::F32, |t| t.dtype);
    v.ty = Some(TensorType::new(dtype, Shape::known(dims)));
}

fn linear_dims(g: &Graph) -> BTreeMap<(usize, usize), usize> {
    let mut m = BTreeMap::new();
    for l in find_linear_layers(g) {
        *m.entry((l.d_in, l.d_out)).or_insert(0) += 1;
    }
    m
}

#[test]
fn dinov2_optimizes_to_fused_layer_norms_gelus_and_72_linear_layers() {
    let Some(path) = model("models/dinov2-vits14-focus.onnx") else {
        return;
    };
    let original = glora::onnx::import_file(&path).unwrap();
    // The export decomposes 12 × 2 block norms plus the final norm: 25 Sqrt nodes, one
    // per LayerNorm, and two ReduceMeans each.
    assert_eq!(count(&original, "Sqrt"), 25);
    assert_eq!(count(&original, "ReduceMean"), 50);
    assert_eq!(count(&original, "Erf"), 12);

    let mut g = original.clone();
    optimize(&mut g, &CpuBackend).unwrap();
    assert_eq!(count(&g, "LayerNormalization"), 25);
    for gone in ["ReduceMean", "Pow", "Sqrt", "Erf", "Identity"] {
        assert_eq!(count(&g, gone), 0, "{gone} left: {:?}", histogram(&g));
    }
    assert_eq!(count(&g, "Gelu"), 12);
    let layers = find_linear_layers(&g);
    assert_eq!(layers.len(), 72);
    assert!(
        layers
            .iter()
            .all(|l| l.kind == LinearKind::MatMul && l.bias.is_some())
    );
    assert_eq!(
        linear_dims(&g),
        BTreeMap::from([((384, 384), 48), ((384, 1536), 12), ((1536, 384), 12)])
    );
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert!(
        names.contains(&"backbone.encoder.layer.3.attention.attention.query"),
        "{names:?}"
    );
    assert!(
        names.contains(&"backbone.encoder.layer.11.mlp.fc2"),
        "{names:?}"
    );
    // The batch stays symbolic through every Reshape.
    let out_ty = g.value(g.outputs[0]).ty.clone().unwrap();
    assert_eq!(out_ty.shape.0[0], Dim::sym("batch_size"));

    // With a concrete input shape the shape plumbing folds away entirely, and the
    // optimised graph computes what the imported one does.
    let mut fixed = original.clone();
    with_input_shape(&mut fixed, &[1, 3, 224, 224]);
    let mut opt = fixed.clone();
    optimize(&mut opt, &CpuBackend).unwrap();
    for gone in [
        "Shape",
        "Gather",
        "Unsqueeze",
        "ConstantOfShape",
        "Where",
        "Expand",
        "Equal",
    ] {
        assert_eq!(count(&opt, gone), 0, "{gone} left: {:?}", histogram(&opt));
    }
    // No integer tensor is computed at run time any more: every shape is a constant.
    for id in opt.node_ids() {
        let n = opt.node(id);
        if !matches!(n.op, Op::Input | Op::Const(_) | Op::Param(_)) {
            let ty = n.outputs[0].ty.as_ref().expect("typed");
            assert!(ty.dtype.is_float(), "{} still computes {ty}", n.name);
        }
    }
    let name = opt.value(Port::new(opt.inputs[0], 0)).name.clone();
    let inputs = vec![(
        name,
        Tensor::from_f32(vec![1, 3, 224, 224], pseudo_random(3 * 224 * 224, 3)).unwrap(),
    )];
    let a = run(&fixed, &inputs)[0].to_f32_vec();
    let b = run(&opt, &inputs)[0].to_f32_vec();
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-4, "optimised dinov2 differs by {diff}");
}

#[test]
fn minilm_optimizes_to_18_linear_layers_and_keeps_results() {
    let Some(path) = model("models/paraphrase-minilm-l3.onnx") else {
        return;
    };
    let original = glora::onnx::import_file(&path).unwrap();
    let mut g = original.clone();
    optimize(&mut g, &CpuBackend).unwrap();
    assert_eq!(count(&g, "Gelu"), 3);
    assert_eq!(count(&g, "Erf"), 0);
    assert_eq!(count(&g, "LayerNormalization"), 7);
    let layers = find_linear_layers(&g);
    assert_eq!(layers.len(), 18);
    assert_eq!(
        linear_dims(&g),
        BTreeMap::from([((384, 384), 12), ((384, 1536), 3), ((1536, 384), 3)])
    );
    assert_eq!(
        layers
            .iter()
            .filter(|l| l.name.ends_with("attention.self.query"))
            .count(),
        3
    );
    // Output names are the model's interface.
    let names = |g: &Graph| {
        g.outputs
            .iter()
            .map(|o| g.value(*o).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&g), names(&original));

    let ids: Vec<i64> = (0..2 * 7)
        .map(|i| [101, 2023, 2003, 1037, 3231, 6251, 102][i % 7])
        .collect();
    let inputs = vec![
        (
            "input_ids".to_string(),
            Tensor::from_i64(vec![2, 7], ids).unwrap(),
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_i64(vec![2, 7], vec![1; 14]).unwrap(),
        ),
    ];
    let a = run(&original, &inputs);
    let b = run(&g, &inputs);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.shape(), y.shape());
        let diff = max_abs_diff(&x.to_f32_vec(), &y.to_f32_vec());
        assert!(diff < 1e-4, "optimised MiniLM differs by {diff}");
    }
}

#[test]
fn vit_s_has_48_block_layers_and_a_gemm_head() {
    let Some(path) = model("models/torch-vit-s.onnx") else {
        return;
    };
    let original = glora::onnx::import_file(&path).unwrap();
    let mut g = original.clone();
    optimize(&mut g, &CpuBackend).unwrap();
    assert_eq!(count(&g, "Identity"), 0);
    assert_eq!(count(&g, "Gelu"), 12);
    let layers = find_linear_layers(&g);
    assert_eq!(layers.len(), 49);
    let head = layers
        .iter()
        .find(|l| l.name == "head")
        .expect("the head layer");
    assert_eq!(head.kind, LinearKind::Gemm { trans_b: true });
    assert_eq!((head.d_in, head.d_out), (384, 100));
    assert_eq!(
        linear_dims(&g),
        BTreeMap::from([
            ((384, 100), 1),
            ((384, 384), 12),
            ((384, 1152), 12),
            ((384, 1536), 12),
            ((1536, 384), 12)
        ])
    );
    assert!(layers.iter().any(|l| l.name == "blocks.0.qkv"));

    let x = Tensor::from_f32(vec![2, 3, 224, 224], pseudo_random(2 * 3 * 224 * 224, 5)).unwrap();
    let inputs = vec![("image".to_string(), x)];
    let a = run(&original, &inputs)[0].to_f32_vec();
    let b = run(&g, &inputs)[0].to_f32_vec();
    assert_eq!(a.len(), 200);
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-4, "optimised ViT-S differs by {diff}");
}
