//! Bad input through the `glora` binary: every case must exit non-zero with one line
//! that names the file (and node, where there is one), never a panic or backtrace.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use glora::onnx::pb;
use prost::Message;

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `y = x · w` with x f32[2,3]; `op`, the weight's shape and the name the node reads
/// for its weight are the knobs the cases turn.
fn model(op: &str, w_dims: &[i64], w_ref: &str) -> Vec<u8> {
    let n: i64 = w_dims.iter().product();
    let w = pb::TensorProto {
        name: "w".into(),
        dims: w_dims.to_vec(),
        data_type: 1,
        float_data: (0..n).map(|i| i as f32 * 0.1).collect(),
        ..Default::default()
    };
    let node = pb::NodeProto {
        name: "mm".into(),
        op_type: op.into(),
        input: vec!["x".into(), w_ref.into()],
        output: vec!["y".into()],
        ..Default::default()
    };
    let m = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: vec![node],
            initializer: vec![w],
            input: vec![value_info("x", &[2, 3])],
            output: vec![value_info("y", &[2, w_dims.last().copied().unwrap_or(1)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    m.encode_to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn the_good_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.onnx", &model("MatMul", &[3, 4], "w"));
    let o = glora(&["run", p.to_str().unwrap(), "--random-inputs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("output y"), "{}", stdout(&o));
}

#[test]
fn truncated_model() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model("MatMul", &[3, 4], "w");
    let p = write(dir.path(), "truncated.onnx", &bytes[..bytes.len() / 2]);
    assert_one_line_error(
        &glora(&["inspect", p.to_str().unwrap()]),
        &["truncated.onnx"],
    );
}

#[test]
fn corrupt_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "corrupt.onnx",
        b"\xff\xfe this is not protobuf \x00\x01\x02\xff",
    );
    assert_one_line_error(
        &glora(&["run", p.to_str().unwrap(), "--random-inputs"]),
        &["corrupt.onnx"],
    );
}

#[test]
fn unknown_op() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "unknown.onnx",
        &model("FrobnicateOp", &[3, 4], "w"),
    );
    assert_one_line_error(
        &glora(&["inspect", p.to_str().unwrap()]),
        &["unknown.onnx", "'mm'", "FrobnicateOp"],
    );
}

#[test]
fn missing_initializer() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "missing.onnx",
        &model("MatMul", &[3, 4], "w_missing"),
    );
    assert_one_line_error(
        &glora(&[
            "convert",
            p.to_str().unwrap(),
            "-o",
            dir.path().join("o.onnx").to_str().unwrap(),
        ]),
        &["missing.onnx", "'mm'", "w_missing"],
    );
    assert!(!dir.path().join("o.onnx").exists());
}

#[test]
fn shape_mismatch_in_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "mismatch.onnx", &model("MatMul", &[5, 4], "w"));
    assert_one_line_error(
        &glora(&["run", p.to_str().unwrap(), "--random-inputs"]),
        &["mismatch.onnx", "mm"],
    );
}

#[test]
fn shape_mismatch_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.onnx", &model("MatMul", &[3, 4], "w"));
    assert_one_line_error(
        &glora(&[
            "run",
            p.to_str().unwrap(),
            "--random-inputs",
            "--shape",
            "x=2x5",
        ]),
        &["good.onnx", "'x'"],
    );
    let x = dir.path().join("x.safetensors");
    glora::io::write_safetensors(
        &x,
        &[(
            "x".into(),
            glora::ir::Tensor::from_f32(vec![2, 5], vec![0.0; 10]).unwrap(),
        )],
    )
    .unwrap();
    let arg = format!("x={}", x.display());
    assert_one_line_error(
        &glora(&["run", p.to_str().unwrap(), "--input", &arg]),
        &["'x'"],
    );
}

#[test]
fn run_without_inputs_asks_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.onnx", &model("MatMul", &[3, 4], "w"));
    assert_one_line_error(
        &glora(&["run", p.to_str().unwrap()]),
        &["good.onnx", "'x'", "--random-inputs"],
    );
}

#[test]
fn nonexistent_file() {
    assert_one_line_error(
        &glora(&["inspect", "/nonexistent/dir/model.onnx"]),
        &["/nonexistent/dir/model.onnx"],
    );
}

#[test]
fn verify_exits_1_when_models_differ() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &model("MatMul", &[3, 4], "w"));
    let same = write(dir.path(), "same.onnx", &model("MatMul", &[3, 4], "w"));
    let o = glora(&["verify", a.to_str().unwrap(), same.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let mut other = pb::ModelProto::decode(&model("MatMul", &[3, 4], "w")[..]).unwrap();
    other.graph.as_mut().unwrap().initializer[0].float_data[0] = 5.0;
    let b = write(dir.path(), "b.onnx", &other.encode_to_vec());
    let o = glora(&["verify", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("FAILED"));
}

/// Asking for a GPU where no CUDA driver can be loaded is one clear line and a
/// non-zero exit, from every command that runs a model.
#[test]
fn device_cuda_without_a_driver() {
    if glora::exec::cuda::probe().is_ok() {
        println!("skipped: this machine has CUDA; the no-driver error cannot happen here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.onnx", &model("MatMul", &[3, 4], "w"));
    let p = p.to_str().unwrap();
    for args in [
        vec!["run", p, "--random-inputs", "--device", "cuda"],
        vec!["run", p, "--random-inputs", "--device", "cuda:1"],
        vec!["verify", p, "--ours", "--device", "cuda"],
        vec!["bench", "forward", p, "--device", "cuda"],
    ] {
        let o = glora(&args);
        assert_one_line_error(&o, &["--device cuda", "CUDA"]);
    }
    let o = glora(&["run", p, "--random-inputs", "--device", "tpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cpu, cuda or cuda:N"), "{}", stderr(&o));
}
