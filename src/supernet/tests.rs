//! A two-layer model (`relu(x·W1 + b1)·W2`, the second layer without a bias) written
//! to ONNX, compiled into a supernet and checked against GLoRA's host reference
//! forward, hand-counted parameters, and the artifact's error cases.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::glora::{AbOption, COption, DeOption, LayerConfig, forward_reference};
use crate::ir::{DType, Op, TensorType, UnaryOp};

const X_ROWS: usize = 2;

fn w1() -> Vec<f32> {
    (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect()
}

fn b1() -> Vec<f32> {
    vec![0.1, -0.2, 0.3, 0.05]
}

fn w2() -> Vec<f32> {
    (0..8).map(|i| ((i * 5 % 9) as f32 - 4.0) * 0.15).collect()
}

fn x() -> Vec<f32> {
    vec![0.5, -1.0, 2.0, 1.5, 0.25, -0.75]
}

/// Writes the model and returns its path.
fn write_model(dir: &Path) -> PathBuf {
    let mut g = Graph::new("mlp");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[X_ROWS, 3])));
    let w1 = g.add_const("fc1.weight", Tensor::from_f32(vec![3, 4], w1()).unwrap());
    let b1 = g.add_const("fc1.bias", Tensor::from_f32(vec![4], b1()).unwrap());
    let w2 = g.add_const("fc2.weight", Tensor::from_f32(vec![4, 2], w2()).unwrap());
    let p = |n| Some(crate::ir::Port::new(n, 0));
    let mm1 = g.add_op("mm1", Op::MatMul, &[p(x), p(w1)], &["h0"]);
    let add1 = g.add_op(
        "add1",
        Op::Binary(crate::ir::BinaryOp::Add),
        &[p(mm1), p(b1)],
        &["h1"],
    );
    let relu = g.add_op("relu", Op::Unary(UnaryOp::Relu), &[p(add1)], &["h2"]);
    let mm2 = g.add_op("mm2", Op::MatMul, &[p(relu), p(w2)], &["y"]);
    g.outputs.push(crate::ir::Port::new(mm2, 0));
    crate::ir::infer::infer_types(&mut g).unwrap();
    let path = dir.join("mlp.onnx");
    crate::onnx::export_file(&g, &path, &Default::default()).unwrap();
    path
}

fn compiled(dir: &Path) -> Supernet {
    let model = write_model(dir);
    Supernet::compile(&model, None, None, &[2], 7, None).unwrap()
}

/// PyTorch layout `(d_out, d_in)` of a row-major `(d_in, d_out)` MatMul weight.
fn out_in(w: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
    (0..d_out)
        .flat_map(|o| (0..d_in).map(move |i| w[i * d_out + o]))
        .collect()
}

fn busy_config(net: &Supernet) -> ModelConfig {
    let first = LayerConfig {
        a: AbOption::Lora(2),
        b: AbOption::Vector,
        c: COption::Lora(2),
        d: DeOption::Vector,
        e: DeOption::Constant,
    };
    let second = LayerConfig {
        a: AbOption::Constant,
        b: AbOption::Lora(2),
        c: COption::Vector,
        d: DeOption::Vector,
        e: DeOption::Vector,
    };
    [
        (net.layers[0].name.clone(), first),
        (net.layers[1].name.clone(), second),
    ]
    .into_iter()
    .collect()
}

/// The adapted model's output computed on the host by the method's reference forward.
fn reference_output(net: &Supernet, config: &ModelConfig) -> Vec<f32> {
    let l1 = &net.layers[0];
    let l2 = &net.layers[1];
    let t1 = passes::adapter_tensors(&net.graph, &l1.name).unwrap();
    let t2 = passes::adapter_tensors(&net.graph, &l2.name).unwrap();
    let h = forward_reference(
        &x(),
        X_ROWS,
        &out_in(&w1(), 3, 4),
        Some(&b1()),
        l1.shape,
        config.get(&l1.name).unwrap(),
        &t1,
    )
    .unwrap();
    let h: Vec<f32> = h.into_iter().map(|v| v.max(0.0)).collect();
    forward_reference(
        &h,
        X_ROWS,
        &out_in(&w2(), 4, 2),
        None,
        l2.shape,
        config.get(&l2.name).unwrap(),
        &t2,
    )
    .unwrap()
}

fn inputs() -> Vec<(String, Tensor)> {
    vec![(
        "x".to_string(),
        Tensor::from_f32(vec![X_ROWS, 3], x()).unwrap(),
    )]
}

fn assert_close(got: &Tensor, want: &[f32]) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - *w as f64).abs() <= 1e-5 * (1.0 + w.abs() as f64),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn compile_adapts_both_layers_and_counts_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let net = compiled(dir.path());
    assert_eq!(net.layers.len(), 2);
    assert_eq!(net.kinds, [LayerKind::MatMul, LayerKind::MatMul]);
    let shapes: Vec<(usize, usize, bool)> = net
        .layers
        .iter()
        .map(|l| (l.shape.d_in, l.shape.d_out, l.shape.has_bias))
        .collect();
    assert_eq!(shapes, [(3, 4, true), (4, 2, false)]);
    let counts = net.param_counts();
    // fc1 (3→4) at R=2: Ad, Bd 4·2 each, Au, Bu 2·3 each, Cd 3·2, Cu 2, D, E 4 each = 44.
    // fc2 (4→2): Ad, Bd 2·2, Au, Bu 2·4, Cd 4·2, Cu 2, D, E 2 each = 38.
    assert_eq!(counts.supernet, 44 + 38);
    assert_eq!(counts.configs.min, 0);
    // fc1 largest: A, B LoRA_2 14 each, C LoRA_2 8, D, E vectors 4 each = 44.
    // fc2 largest: A, B 12 each, C LoRA_2 10, D unread without a bias, E 2 = 36.
    assert_eq!(counts.configs.max, 44 + 36);
}

#[test]
fn merged_unmerged_and_adapted_runs_match_the_reference_forward() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = compiled(dir.path());
    net.randomize_adapters(3).unwrap();
    let config = busy_config(&net);
    let want = reference_output(&net, &config);

    let (adapted, _) = net.run_adapted(&config, &inputs()).unwrap();
    assert_close(&adapted[0], &want);
    let merged = crate::exec::run_cpu(&net.merged(&config).unwrap(), &inputs()).unwrap();
    assert_close(&merged[0], &want);
    let unmerged = crate::exec::run_cpu(&net.unmerged(&config).unwrap(), &inputs()).unwrap();
    assert_close(&unmerged[0], &want);
}

#[test]
fn the_merged_graph_has_the_base_ops_plus_one_bias_add() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = compiled(dir.path());
    net.randomize_adapters(1).unwrap();
    let merged = net.merged(&net.random_config(5)).unwrap();
    let mut want = net.base.op_histogram();
    *want.entry("Add".to_string()).or_default() += 1;
    assert_eq!(merged.op_histogram(), want);
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = compiled(dir.path());
    net.randomize_adapters(9).unwrap();
    net.config = Some(net.random_config(2));
    let out = dir.path().join("mlp.glora");
    net.save(&out).unwrap();
    let back = Supernet::load(&out).unwrap();
    assert_eq!(back.layer_entries(), net.layer_entries());
    assert_eq!(back.space, net.space);
    assert_eq!(back.config, net.config);
    assert_eq!(back.adapters().unwrap(), net.adapters().unwrap());
    // The randomised values, not a fresh initialisation, came back.
    let ad = &back.adapters().unwrap()[0];
    assert!(ad.0.ends_with(".Ad"));
    assert!(ad.1.to_f64_vec().iter().all(|v| *v != 0.0));
}

fn saved(dir: &Path) -> PathBuf {
    let net = compiled(dir);
    let out = dir.join("mlp.glora");
    net.save(&out).unwrap();
    out
}

fn load_error(dir: &Path) -> String {
    format!("{:#}", Supernet::load(dir).unwrap_err())
}

#[test]
fn a_wrong_shaped_adapter_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = saved(dir.path());
    let mut tensors = artifact::read_adapters(&out).unwrap();
    let (name, t) = tensors
        .iter_mut()
        .find(|(n, _)| n.ends_with(".Au"))
        .unwrap();
    let name = name.clone();
    *t = Tensor::from_f32(vec![3, 3], vec![0.5; 9]).unwrap();
    crate::io::write_safetensors(&out.join(ADAPTERS_FILE), &tensors).unwrap();
    let msg = load_error(&out);
    assert!(
        msg.contains(ADAPTERS_FILE) && msg.contains(&name) && msg.contains("[3, 3]"),
        "{msg}"
    );
}

#[test]
fn missing_and_stray_adapters_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = saved(dir.path());
    let all = artifact::read_adapters(&out).unwrap();
    let without_e: Vec<_> = all
        .iter()
        .filter(|(n, _)| !n.ends_with(".E"))
        .cloned()
        .collect();
    crate::io::write_safetensors(&out.join(ADAPTERS_FILE), &without_e).unwrap();
    let msg = load_error(&out);
    assert!(msg.contains(".E") && msg.contains("missing"), "{msg}");

    let mut extra = all.clone();
    extra.push((
        "head.Ad".into(),
        Tensor::from_f32(vec![1], vec![1.0]).unwrap(),
    ));
    crate::io::write_safetensors(&out.join(ADAPTERS_FILE), &extra).unwrap();
    let msg = load_error(&out);
    assert!(msg.contains("head.Ad"), "{msg}");
}

#[test]
fn manifest_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = saved(dir.path());
    let manifest_file = out.join(MANIFEST_FILE);
    let good = fs::read_to_string(&manifest_file).unwrap();

    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["ranks"] = serde_json::json!("four");
    fs::write(&manifest_file, v.to_string()).unwrap();
    let msg = load_error(&out);
    assert!(
        msg.contains("glora.json") && msg.contains("/ranks"),
        "{msg}"
    );

    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["layers"][0]["d_in"] = serde_json::json!(5);
    fs::write(&manifest_file, v.to_string()).unwrap();
    let msg = load_error(&out);
    assert!(msg.contains("glora.json") && msg.contains("d_in"), "{msg}");

    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["config"] = serde_json::json!({"layers": {"nope": {"A": "none", "B": "none", "C": "none", "D": "none", "E": "none"}}});
    fs::write(&manifest_file, v.to_string()).unwrap();
    let msg = load_error(&out);
    assert!(msg.contains("glora.json") && msg.contains("nope"), "{msg}");
}

#[test]
fn configs_outside_the_model_or_space_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let net = compiled(dir.path());
    let mut config = net.random_config(0);
    config.insert("not.a.layer", LayerConfig::NONE);
    let msg = net.merged(&config).unwrap_err().to_string();
    assert!(msg.contains("not.a.layer"), "{msg}");

    let mut config = net.random_config(0);
    config.insert(
        net.layers[0].name.clone(),
        LayerConfig {
            a: AbOption::Lora(8),
            ..LayerConfig::NONE
        },
    );
    let msg = net.unmerged(&config).unwrap_err().to_string();
    assert!(msg.contains("LoRA_8"), "{msg}");
}
