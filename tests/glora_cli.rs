//! GLoRA through the `glora` binary, end to end: `compile` a model into a supernet,
//! `export` it merged (and unmerged) under a random config, check that the merged
//! model has the base model's ops, `verify` it in tract against glora's executor on
//! the adapted graph at two batch sizes, and run the strict ONNX checker on it. The
//! real models come from the fixtures (skipped with a notice when missing); a small
//! model built here covers a layer without a bias and the bad-input cases, each of
//! which must fail with one line naming the file and layer at fault and write nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use glora::ir::{BinaryOp, DType, Dim, Graph, Op, Port, Shape, Tensor, TensorType, UnaryOp};

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Runs the binary and insists on success, showing its output otherwise.
fn ok(args: &[&str]) -> String {
    let o = glora(args);
    assert!(
        o.status.success(),
        "glora {} failed:\nstdout: {}\nstderr: {}",
        args.join(" "),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The op histogram of an ONNX file as glora imports it.
fn histogram(path: &Path) -> BTreeMap<String, usize> {
    glora::onnx::import_file(path)
        .expect("the exported model imports")
        .op_histogram()
}

/// `relu(x·W1 + b1)·W2` with x f32[batch, 3]; the second layer has no bias.
fn write_mlp(dir: &Path) -> PathBuf {
    let mut g = Graph::new("mlp");
    let batch_by_3 = Shape(vec![Dim::sym("batch"), Dim::Known(3)]);
    let x = g.add_input("x", TensorType::new(DType::F32, batch_by_3));
    let w1: Vec<f32> = (0..12).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
    let w2: Vec<f32> = (0..8).map(|i| ((i * 5 % 9) as f32 - 4.0) * 0.15).collect();
    let w1 = g.add_const("fc1.weight", Tensor::from_f32(vec![3, 4], w1).unwrap());
    let b1 = g.add_const(
        "fc1.bias",
        Tensor::from_f32(vec![4], vec![0.1, -0.2, 0.3, 0.05]).unwrap(),
    );
    let w2 = g.add_const("fc2.weight", Tensor::from_f32(vec![4, 2], w2).unwrap());
    let p = |n| Some(Port::new(n, 0));
    let mm1 = g.add_op("mm1", Op::MatMul, &[p(x), p(w1)], &["h0"]);
    let add1 = g.add_op("add1", Op::Binary(BinaryOp::Add), &[p(mm1), p(b1)], &["h1"]);
    let relu = g.add_op("relu", Op::Unary(UnaryOp::Relu), &[p(add1)], &["h2"]);
    let mm2 = g.add_op("mm2", Op::MatMul, &[p(relu), p(w2)], &["y"]);
    g.outputs.push(Port::new(mm2, 0));
    glora::ir::infer::infer_types(&mut g).unwrap();
    let path = dir.join("mlp.onnx");
    glora::onnx::export_file(&g, &path, &Default::default()).unwrap();
    path
}

/// What one model's run leaves behind.
struct Exported {
    supernet: PathBuf,
    merged: PathBuf,
    config: PathBuf,
    compile_out: String,
}

/// compile (random adapters) → export merged with a random config → the checks every
/// model must pass. `input_flags` fix the symbolic sizes other than the batch.
fn end_to_end(dir: &Path, model: &Path, input_flags: &[&str], bias_adds: usize) -> Exported {
    let supernet = dir.join("net.glora");
    let merged = dir.join("merged.onnx");
    let unmerged = dir.join("unmerged.onnx");
    let config = dir.join("config.json");
    let converted = dir.join("converted.onnx");
    let compile_out = ok(&[
        "compile",
        s(model),
        "-o",
        s(&supernet),
        "--random-adapters",
        "--seed",
        "11",
    ]);
    assert!(supernet.join("glora.json").is_file());
    assert!(supernet.join("adapters.safetensors").is_file());

    ok(&[
        "export",
        s(&supernet),
        "--random-config",
        "--seed",
        "5",
        "-o",
        s(&merged),
        "--save-config",
        s(&config),
    ]);
    ok(&["convert", s(model), "-o", s(&converted)]);
    let mut want = histogram(&converted);
    if bias_adds > 0 {
        *want.entry("Add".into()).or_default() += bias_adds;
    }
    assert_eq!(
        histogram(&merged),
        want,
        "merged ops differ from the base's"
    );

    for batch in ["1", "2"] {
        let mut args = vec![
            "verify",
            s(&merged),
            "--against",
            s(&supernet),
            "--config",
            s(&config),
            "--tolerance",
            "1e-4",
            "--batch",
            batch,
        ];
        args.extend_from_slice(input_flags);
        let out = ok(&args);
        assert!(out.contains("OK: max abs error"), "{out}");
        assert!(out.contains("op histograms: identical"), "{out}");
    }

    ok(&[
        "export",
        s(&supernet),
        "--config",
        s(&config),
        "--unmerged",
        "-o",
        s(&unmerged),
    ]);
    let mut args = vec![
        "verify",
        s(&unmerged),
        "--against",
        s(&supernet),
        "--config",
        s(&config),
    ];
    args.extend_from_slice(input_flags);
    let out = ok(&args);
    assert!(out.contains("OK: max abs error"), "{out}");

    if let Some(py) = python_with_onnx() {
        onnx_check(&py, &merged).unwrap_or_else(|e| panic!("onnx checker: {e}"));
        onnx_check(&py, &unmerged).unwrap_or_else(|e| panic!("onnx checker: {e}"));
    }
    Exported {
        supernet,
        merged,
        config,
        compile_out,
    }
}

#[test]
fn dinov2_supernet_exports_a_model_with_the_base_ops() {
    let Some(model) = fixture("models/dinov2-vits14-focus.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = end_to_end(dir.path(), &model, &[], 0);
    assert!(
        out.compile_out.contains("adapted layers: 72"),
        "{}",
        out.compile_out
    );
    let full = out
        .compile_out
        .lines()
        .find(|l| l.contains("full supernet"))
        .unwrap_or_default();
    assert!(full.contains("912,672"), "{}", out.compile_out);
    let inspected = ok(&["inspect", s(&out.supernet)]);
    assert!(inspected.contains("adapted layers: 72"), "{inspected}");
    assert!(inspected.contains("sha256 ok"), "{inspected}");
}

#[test]
fn minilm_supernet_exports_a_model_with_the_base_ops() {
    let Some(model) = fixture("models/paraphrase-minilm-l3.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    end_to_end(dir.path(), &model, &["--seq", "8"], 0);
}

#[test]
fn small_model_end_to_end_gains_a_bias_for_the_biasless_layer() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_mlp(dir.path());
    let out = end_to_end(dir.path(), &model, &[], 1);
    // fc1 (3→4) at R=4: 2·4·(4+3) + 4·3 + 4 + 2·4 = 80; fc2 (4→2): 2·4·6 + 4·4 + 4 + 2·2 = 72.
    assert!(
        out.compile_out.contains("adapted layers: 2"),
        "{}",
        out.compile_out
    );
    let full = out
        .compile_out
        .lines()
        .find(|l| l.contains("full supernet"))
        .unwrap_or_default();
    assert!(full.trim_end().ends_with(" 152"), "{}", out.compile_out);
    let inspected = ok(&["inspect", s(&out.supernet)]);
    assert!(
        inspected.contains("adapted layers: 2") && inspected.contains("shapes ok"),
        "{inspected}"
    );
    assert!(out.merged.is_file() && out.config.is_file());
}

/// A compiled supernet of the small model and a valid random config for it.
fn small_supernet(dir: &Path) -> (PathBuf, PathBuf) {
    let model = write_mlp(dir);
    let supernet = dir.join("mlp.glora");
    ok(&["compile", s(&model), "-o", s(&supernet), "--ranks", "2,4"]);
    let config = dir.join("config.json");
    ok(&[
        "export",
        s(&supernet),
        "--random-config",
        "-o",
        s(&dir.join("first.onnx")),
        "--save-config",
        s(&config),
    ]);
    (supernet, config)
}

/// `glora export` with `config` must fail with one line holding `needles` and leave
/// no output behind.
fn export_fails(supernet: &Path, config: &Path, needles: &[&str]) {
    let out = supernet.with_file_name("out.onnx");
    let o = glora(&["export", s(supernet), "--config", s(config), "-o", s(&out)]);
    assert_one_line_error(&o, needles);
    assert!(!out.exists(), "{} was written", out.display());
}

fn layer_names(config: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    v["layers"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_config_naming_an_unknown_layer_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["layers"]["encoder.nowhere"] =
        serde_json::json!({"A": "none", "B": "none", "C": "none", "D": "none", "E": "none"});
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    export_fails(&supernet, &bad, &["bad.json", "encoder.nowhere"]);
}

#[test]
fn a_config_with_an_unknown_option_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let layer = layer_names(&config)[0].clone();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["layers"][&layer]["B"] = serde_json::json!("diagonal");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    export_fails(&supernet, &bad, &["bad.json", &layer, "diagonal"]);

    // A well-formed option the supernet's rank set does not offer.
    v["layers"][&layer]["B"] = serde_json::json!("LoRA_8");
    std::fs::write(&bad, v.to_string()).unwrap();
    export_fails(&supernet, &bad, &["bad.json", &layer, "LoRA_8"]);
}

#[test]
fn a_wrong_shaped_adapter_tensor_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let file = supernet.join("adapters.safetensors");
    let mut tensors = glora::io::read_safetensors(&file).unwrap();
    let (name, t) = tensors
        .iter_mut()
        .find(|(n, _)| n.ends_with(".Bu"))
        .unwrap();
    let name = name.clone();
    *t = Tensor::from_f32(vec![4, 5], vec![0.25; 20]).unwrap();
    glora::io::write_safetensors(&file, &tensors).unwrap();
    export_fails(
        &supernet,
        &config,
        &["adapters.safetensors", &name, "[4, 5]"],
    );
}

#[test]
fn a_glora_json_failing_its_schema_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let manifest = supernet.join("glora.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["ranks"] = serde_json::json!("four");
    std::fs::write(&manifest, v.to_string()).unwrap();
    export_fails(&supernet, &config, &["glora.json", "/ranks"]);
    let o = glora(&["inspect", s(&supernet)]);
    assert_one_line_error(&o, &["glora.json", "/ranks"]);
}

#[test]
fn a_changed_base_model_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let model = dir.path().join("mlp.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&model, bytes).unwrap();
    export_fails(&supernet, &config, &["mlp.onnx", "sha256"]);
}

#[test]
fn compile_with_no_matching_layer_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_mlp(dir.path());
    let supernet = dir.path().join("none.glora");
    let o = glora(&[
        "compile",
        s(&model),
        "-o",
        s(&supernet),
        "--targets",
        "^attention",
    ]);
    assert_one_line_error(&o, &["mlp.onnx", "^attention"]);
    assert!(!supernet.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn verify_against_a_bad_config_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (supernet, config) = small_supernet(dir.path());
    let layer = layer_names(&config)[1].clone();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["layers"][&layer]["C"] = serde_json::json!("constant");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = glora(&[
        "verify",
        s(&dir.path().join("first.onnx")),
        "--against",
        s(&supernet),
        "--config",
        s(&bad),
    ]);
    assert_one_line_error(&o, &["bad.json", &layer, "constant"]);
}
