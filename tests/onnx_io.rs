//! ONNX import and export: tensor decoding, external data, opset normalisation, round
//! trips of every attribute-carrying op, one-line errors on bad input, the real models
//! from the fixtures, and the strict ONNX checker on our exports.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use glora::ir::{
    AspectPolicy, AutoPad, BinaryOp, ConvAttrs, CoordTransform, DType, Dim, GeluApprox, GemmAttrs,
    Graph, NearestMode, Op, Port, ReduceOp, ResizeAttrs, ResizeMode, Shape, Tensor, TensorData,
    TensorType, UnaryOp,
};
use glora::onnx::pb::attribute_proto::AttributeType;
use glora::onnx::pb::tensor_proto::{DataLocation, DataType};
use glora::onnx::pb::tensor_shape_proto::{Dimension, dimension};
use glora::onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use glora::onnx::{self, ExportOptions, OnnxError};
use prost::Message;

// ---------------------------------------------------------------- model building

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

/// A value declaration; `Some(n)` dims are sizes, `None` dims are `dim_param`s named
/// after the axis.
fn vi(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(match d {
                Some(n) => dimension::Value::DimValue(*n),
                None => dimension::Value::DimParam(format!("d{i}")),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32_vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    vi(
        name,
        DataType::Float,
        &dims.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
    )
}

fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "test".into(),
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<Graph, OnnxError> {
    onnx::import_bytes(&m.encode_to_vec(), None, "model.onnx")
}

fn import_ok(m: &ModelProto) -> Graph {
    import(m).unwrap_or_else(|e| panic!("import failed: {e}"))
}

fn import_err(m: &ModelProto) -> String {
    match import(m) {
        Ok(_) => panic!("import should fail"),
        Err(e) => e.0,
    }
}

fn assert_one_line(msg: &str) {
    assert!(!msg.contains('\n'), "error spans lines: {msg:?}");
    assert!(
        msg.starts_with("model.onnx: "),
        "error does not name the file: {msg}"
    );
}

/// The op of the node that produces value `name`.
fn op_of(g: &Graph, name: &str) -> Op {
    let p = g
        .find_value(name)
        .unwrap_or_else(|| panic!("no value '{name}'"));
    g.node(p.node).op.clone()
}

fn histogram(g: &Graph) -> BTreeMap<String, usize> {
    g.op_histogram()
}

fn hist(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A model with one node `op` on an f32 input `x` of shape `dims`.
fn unary_model(opset: i64, n: NodeProto, dims: &[i64], inits: Vec<TensorProto>) -> ModelProto {
    let out = n.output[0].clone();
    model(
        opset,
        vec![n],
        inits,
        vec![f32_vi("x", dims)],
        vec![vi(&out, DataType::Float, &[])],
    )
}

// ---------------------------------------------------------------- tensors

#[test]
fn reads_a_tensor_file_of_the_onnx_suite() {
    let Some(p) = common::fixture("onnx-suite/node/test_add/test_data_set_0/input_0.pb") else {
        return;
    };
    // Figures from the Python onnx package: numpy_helper.to_array(onnx.load_tensor(p)).
    let (name, t) = onnx::read_tensor_file(&p).unwrap();
    assert_eq!(name, "x");
    assert_eq!(t.shape(), &[3, 4, 5]);
    assert_eq!(t.dtype(), DType::F32);
    let v = t.as_f32().unwrap();
    assert_eq!(&v[..3], &[1.764_052_4, 0.400_157_2, 0.978_738]);
    let sum: f64 = v.iter().map(|&x| x as f64).sum();
    assert!((sum - 4.600_037_574_768_066).abs() < 1e-4, "{sum}");
}

#[test]
fn tensor_files_with_half_floats_and_bad_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pb");
    // f16 bits: 0x3C00 = 1.0, 0xB800 = -0.5.
    let t = TensorProto {
        name: "h".into(),
        dims: vec![2],
        data_type: DataType::Float16 as i32,
        int32_data: vec![0x3C00, 0xB800],
        ..Default::default()
    };
    std::fs::write(&p, t.encode_to_vec()).unwrap();
    let (name, got) = onnx::read_tensor_file(&p).unwrap();
    assert_eq!((name.as_str(), got.dtype()), ("h", DType::F16));
    assert_eq!(got.to_f32_vec(), vec![1.0, -0.5]);

    std::fs::write(&p, [0xff, 0xff, 0xff]).unwrap();
    let e = onnx::read_tensor_file(&p).unwrap_err().0;
    assert!(
        e.starts_with(&format!(
            "{}: not a valid serialised TensorProto",
            p.display()
        )),
        "{e}"
    );
    let missing = dir.path().join("missing.pb");
    let e = onnx::read_tensor_file(&missing).unwrap_err().0;
    assert!(
        e.starts_with(&format!("{}: cannot read the file", missing.display())),
        "{e}"
    );
}

#[test]
fn initializers_keep_their_exact_dtype() {
    let h = TensorProto {
        name: "h".into(),
        dims: vec![2],
        data_type: DataType::Bfloat16 as i32,
        raw_data: vec![0x80, 0x3F, 0x40, 0x40], // bf16 1.0 and 3.0
        ..Default::default()
    };
    let b = TensorProto {
        name: "b".into(),
        dims: vec![3],
        data_type: DataType::Bool as i32,
        int32_data: vec![1, 0, 1],
        ..Default::default()
    };
    let m = model(
        17,
        vec![
            node("Identity", "i1", &["h"], &["y1"], vec![]),
            node("Identity", "i2", &["b"], &["y2"], vec![]),
        ],
        vec![h, b],
        vec![],
        vec![
            vi("y1", DataType::Bfloat16, &[Some(2)]),
            vi("y2", DataType::Bool, &[Some(3)]),
        ],
    );
    let g = import_ok(&m);
    let hv = op_of(&g, "h");
    let t = hv.weight().unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    assert_eq!(t.to_f32_vec(), vec![1.0, 3.0]);
    let bv = op_of(&g, "b");
    assert_eq!(
        bv.weight().unwrap().data(),
        &TensorData::Bool(vec![true, false, true])
    );
}

fn external_entry(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn imports_external_data_next_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0xAAu8; 3]; // padding before the tensor: offset 3, unaligned
    for v in [1.5f32, -2.0, 0.25, 8.0] {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(dir.path().join("w.bin"), &bytes).unwrap();
    let w = TensorProto {
        name: "w".into(),
        dims: vec![2, 2],
        data_type: DataType::Float as i32,
        data_location: DataLocation::External as i32,
        external_data: vec![
            external_entry("location", "w.bin"),
            external_entry("offset", "3"),
            external_entry("length", "16"),
        ],
        ..Default::default()
    };
    let m = model(
        17,
        vec![node("MatMul", "mm", &["x", "w"], &["y"], vec![])],
        vec![w],
        vec![f32_vi("x", &[1, 2])],
        vec![f32_vi("y", &[1, 2])],
    );
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let g = onnx::import_file(&path).unwrap();
    assert_eq!(
        op_of(&g, "w").weight().unwrap().as_f32().unwrap(),
        &[1.5, -2.0, 0.25, 8.0]
    );

    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    let e = onnx::import_file(&path).unwrap_err().0;
    assert_eq!(
        e,
        format!(
            "{}: tensor 'w': external data file 'w.bin' not found next to the model",
            path.display()
        )
    );
}

// ---------------------------------------------------------------- opset normalisation

#[test]
fn squeeze_axes_from_attribute_at_11_and_input_at_13() {
    let at11 = unary_model(
        11,
        node(
            "Squeeze",
            "sq",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[0, 2])],
        ),
        &[1, 3, 1],
        vec![],
    );
    let at13 = unary_model(
        13,
        node("Squeeze", "sq", &["x", "ax"], &["y"], vec![]),
        &[1, 3, 1],
        vec![i64_init("ax", &[0, 2])],
    );
    for m in [at11, at13] {
        let g = import_ok(&m);
        assert_eq!(
            op_of(&g, "y"),
            Op::Squeeze {
                axes: Some(vec![0, 2])
            }
        );
        // The axes became an attribute of the op: no constant is left for them.
        assert_eq!(g.node_count(), 2, "x and the Squeeze only");
        assert_eq!(g.inputs_of(g.find_node("sq").unwrap()).len(), 1);
    }
    let none = unary_model(
        13,
        node("Squeeze", "sq", &["x"], &["y"], vec![]),
        &[1, 3],
        vec![],
    );
    assert_eq!(op_of(&import_ok(&none), "y"), Op::Squeeze { axes: None });
}

#[test]
fn unsqueeze_axes_from_attribute_and_input() {
    let at11 = unary_model(
        11,
        node(
            "Unsqueeze",
            "u",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[0])],
        ),
        &[3],
        vec![],
    );
    let at13 = unary_model(
        13,
        node("Unsqueeze", "u", &["x", "ax"], &["y"], vec![]),
        &[3],
        vec![i64_init("ax", &[0])],
    );
    for m in [at11, at13] {
        assert_eq!(op_of(&import_ok(&m), "y"), Op::Unsqueeze { axes: vec![0] });
    }
}

#[test]
fn reduce_axes_move_to_an_input_at_13_for_sum_and_18_for_mean() {
    let sum11 = unary_model(
        11,
        node(
            "ReduceSum",
            "r",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)],
        ),
        &[2, 3],
        vec![],
    );
    let sum13 = unary_model(
        13,
        node(
            "ReduceSum",
            "r",
            &["x", "ax"],
            &["y"],
            vec![attr_int("keepdims", 0)],
        ),
        &[2, 3],
        vec![i64_init("ax", &[1])],
    );
    let want = Op::Reduce {
        op: ReduceOp::Sum,
        axes: Some(vec![1]),
        keepdims: false,
        noop_with_empty_axes: false,
    };
    for m in [sum11, sum13] {
        assert_eq!(op_of(&import_ok(&m), "y"), want);
    }
    let mean17 = unary_model(
        17,
        node(
            "ReduceMean",
            "r",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[-1])],
        ),
        &[2, 3],
        vec![],
    );
    let mean18 = unary_model(
        18,
        node("ReduceMean", "r", &["x", "ax"], &["y"], vec![]),
        &[2, 3],
        vec![i64_init("ax", &[-1])],
    );
    let want = Op::Reduce {
        op: ReduceOp::Mean,
        axes: Some(vec![-1]),
        keepdims: true,
        noop_with_empty_axes: false,
    };
    for m in [mean17, mean18] {
        assert_eq!(op_of(&import_ok(&m), "y"), want);
    }
    // No axes: reduce everything (keepdims defaults to 1).
    let all = unary_model(
        13,
        node("ReduceMax", "r", &["x"], &["y"], vec![]),
        &[2, 3],
        vec![],
    );
    let Op::Reduce { axes, keepdims, .. } = op_of(&import_ok(&all), "y") else {
        panic!("not a Reduce")
    };
    assert_eq!((axes, keepdims), (None, true));
}

fn split_model(
    opset: i64,
    inputs: &[&str],
    attrs: Vec<AttributeProto>,
    inits: Vec<TensorProto>,
    outs: &[&str],
) -> ModelProto {
    let outputs = outs
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| vi(o, DataType::Float, &[]))
        .collect();
    model(
        opset,
        vec![node("Split", "sp", inputs, outs, attrs)],
        inits,
        vec![f32_vi("x", &[2, 6])],
        outputs,
    )
}

#[test]
fn split_sizes_from_attribute_input_or_num_outputs() {
    let want = Op::Split {
        axis: 1,
        sizes: Some(vec![2, 4]),
    };
    let at11 = split_model(
        11,
        &["x"],
        vec![attr_int("axis", 1), attr_ints("split", &[2, 4])],
        vec![],
        &["a", "b"],
    );
    let at13 = split_model(
        13,
        &["x", "s"],
        vec![attr_int("axis", 1)],
        vec![i64_init("s", &[2, 4])],
        &["a", "b"],
    );
    let at18 = split_model(
        18,
        &["x", "s"],
        vec![attr_int("axis", 1)],
        vec![i64_init("s", &[2, 4])],
        &["a", "b"],
    );
    for m in [at11, at13, at18] {
        assert_eq!(op_of(&import_ok(&m), "a"), want);
    }
    let equal = Op::Split {
        axis: 1,
        sizes: None,
    };
    let by_count = split_model(
        18,
        &["x"],
        vec![attr_int("axis", 1), attr_int("num_outputs", 3)],
        vec![],
        &["a", "b", "c"],
    );
    let implicit = split_model(
        13,
        &["x"],
        vec![attr_int("axis", 1)],
        vec![],
        &["a", "b", "c"],
    );
    for m in [by_count, implicit] {
        let g = import_ok(&m);
        assert_eq!(op_of(&g, "a"), equal);
        assert_eq!(g.node(g.find_node("sp").unwrap()).outputs.len(), 3);
    }
    let e = import_err(&split_model(
        18,
        &["x"],
        vec![attr_int("num_outputs", 2)],
        vec![],
        &["a", "b", "c"],
    ));
    assert_eq!(
        e,
        "model.onnx: node 'sp' (Split): attribute 'num_outputs' is 2 but the node has 3 outputs"
    );
    let e = import_err(&split_model(
        13,
        &["x", "s"],
        vec![],
        vec![i64_init("s", &[1, 1, 4])],
        &["a", "b"],
    ));
    assert_eq!(
        e,
        "model.onnx: node 'sp' (Split): has 3 split sizes but 2 outputs"
    );
}

#[test]
fn an_unused_split_output_still_counts_as_a_piece() {
    // The third piece is not wanted, but it decides that pieces are thirds.
    let m = split_model(
        13,
        &["x"],
        vec![attr_int("axis", 1)],
        vec![],
        &["a", "b", ""],
    );
    let g = import_ok(&m);
    let sp = g.node(g.find_node("sp").unwrap());
    assert_eq!(sp.outputs.len(), 3);
    assert!(!sp.outputs[2].name.is_empty());
}

#[test]
fn softmax_before_opset_13_is_flatten_softmax_reshape() {
    let m = unary_model(
        11,
        node("Softmax", "sm", &["x"], &["y"], vec![attr_int("axis", 2)]),
        &[2, 3, 4, 5],
        vec![],
    );
    let g = import_ok(&m);
    assert_eq!(
        histogram(&g),
        hist(&[("Flatten", 1), ("Reshape", 1), ("Shape", 1), ("Softmax", 1)])
    );
    assert_eq!(op_of(&g, "y"), Op::Reshape { allowzero: true });
    let sm = g.find_node("sm").unwrap();
    assert_eq!(g.node(sm).op, Op::Softmax { axis: 1 });
    let flat = g.input(sm, 0).unwrap();
    assert_eq!(g.node(flat.node).op, Op::Flatten { axis: 2 });
    assert_eq!(g.value(g.input(flat.node, 0).unwrap()).name, "x");
    // Default axis before 13 is 1.
    let d = unary_model(
        12,
        node("Softmax", "sm", &["x"], &["y"], vec![]),
        &[2, 3],
        vec![],
    );
    let g = import_ok(&d);
    let sm = g.find_node("sm").unwrap();
    let flat = g.input(sm, 0).unwrap();
    assert_eq!(g.node(flat.node).op, Op::Flatten { axis: 1 });
    // From 13 on it is one op with default axis -1.
    let s13 = unary_model(
        13,
        node("Softmax", "sm", &["x"], &["y"], vec![]),
        &[2, 3],
        vec![],
    );
    assert_eq!(op_of(&import_ok(&s13), "y"), Op::Softmax { axis: -1 });
}

#[test]
fn constant_nodes_of_every_form_become_consts() {
    let forms = vec![
        (attr_float("value_float", 2.5), Tensor::scalar_f32(2.5)),
        (
            attr_floats("value_floats", &[1.0, 2.0]),
            Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap(),
        ),
        (attr_int("value_int", -3), Tensor::scalar_i64(-3)),
        (
            attr_ints("value_ints", &[4, 5]),
            Tensor::vec_i64(vec![4, 5]),
        ),
        (
            attr_tensor("value", f32_init("", &[1, 2], &[7.0, 8.0])),
            Tensor::from_f32(vec![1, 2], vec![7.0, 8.0]).unwrap(),
        ),
    ];
    for (a, want) in forms {
        let m = model(
            17,
            vec![
                node("Constant", "c", &[], &["k"], vec![a]),
                node("Identity", "id", &["k"], &["y"], vec![]),
            ],
            vec![],
            vec![],
            vec![vi("y", DataType::Float, &[])],
        );
        let g = import_ok(&m);
        assert_eq!(op_of(&g, "k"), Op::Const(want));
        // The node keeps the ONNX node name, its value the ONNX value name.
        assert_eq!(g.node(g.find_value("k").unwrap().node).name, "c");
    }
}

#[test]
fn initializers_listed_as_inputs_stay_constants() {
    let mut m = model(
        11,
        vec![node("Add", "add", &["x", "b"], &["y"], vec![])],
        vec![f32_init("b", &[2], &[1.0, 2.0])],
        vec![f32_vi("x", &[2]), f32_vi("b", &[2])],
        vec![f32_vi("y", &[2])],
    );
    m.ir_version = 3;
    let g = import_ok(&m);
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.node(g.inputs[0]).name, "x");
    assert!(matches!(op_of(&g, "b"), Op::Const(_)));
}

#[test]
fn input_types_keep_sizes_names_and_get_fresh_symbols() {
    let mut x = vi("x", DataType::Int64, &[None, Some(4)]);
    // A third axis with neither value nor name.
    if let Some(type_proto::Value::TensorType(t)) = x.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim.push(Dimension::default());
    }
    let m = model(
        17,
        vec![node("Identity", "id", &["x"], &["y"], vec![])],
        vec![],
        vec![x],
        vec![vi("y", DataType::Int64, &[])],
    );
    let g = import_ok(&m);
    let ty = g.value(Port::new(g.inputs[0], 0)).ty.clone().unwrap();
    assert_eq!(ty.dtype, DType::I64);
    assert_eq!(ty.shape.dims()[0], Dim::Sym("d0".into()));
    assert_eq!(ty.shape.dims()[1], Dim::Known(4));
    let Dim::Sym(fresh) = &ty.shape.dims()[2] else {
        panic!("missing dim should be symbolic")
    };
    assert!(fresh != "d0" && !fresh.is_empty());
}

#[test]
fn unnamed_nodes_and_empty_outputs_get_unique_names() {
    let m = model(
        17,
        vec![
            node("Relu", "", &["x"], &["a"], vec![]),
            node("Relu", "", &["a"], &["b"], vec![]),
            // Mean output unnamed before a used one; the trailing one dropped.
            node(
                "LayerNormalization",
                "ln",
                &["b", "s"],
                &["y", "", "istd"],
                vec![],
            ),
            node(
                "LayerNormalization",
                "ln2",
                &["b", "s"],
                &["z", "", ""],
                vec![],
            ),
        ],
        vec![f32_init("s", &[2], &[1.0, 1.0])],
        vec![f32_vi("x", &[3, 2])],
        vec![
            f32_vi("y", &[3, 2]),
            f32_vi("istd", &[3, 1]),
            f32_vi("z", &[3, 2]),
        ],
    );
    let g = import_ok(&m);
    let a = g.node(g.find_value("a").unwrap().node).name.clone();
    let b = g.node(g.find_value("b").unwrap().node).name.clone();
    assert_eq!((a.as_str(), b.as_str()), ("Relu_0", "Relu_1"));
    let ln = g.node(g.find_node("ln").unwrap());
    assert_eq!(ln.outputs.len(), 3);
    assert_eq!(ln.outputs[0].name, "y");
    assert!(
        !ln.outputs[1].name.is_empty() && ln.outputs[1].name != "y" && ln.outputs[1].name != "istd"
    );
    assert_eq!(ln.outputs[2].name, "istd");
    assert_eq!(g.node(g.find_node("ln2").unwrap()).outputs.len(), 1);
}

// ---------------------------------------------------------------- bad input

fn small_model() -> ModelProto {
    model(
        17,
        vec![node("Add", "add", &["x", "b"], &["y"], vec![])],
        vec![f32_init("b", &[2], &[1.0, 2.0])],
        vec![f32_vi("x", &[2])],
        vec![f32_vi("y", &[2])],
    )
}

#[test]
fn the_small_model_imports() {
    let g = import_ok(&small_model());
    assert_eq!(histogram(&g), hist(&[("Add", 1)]));
    assert_eq!(g.value(g.outputs[0]).name, "y");
}

#[test]
fn truncated_and_random_bytes_are_one_line_errors() {
    let bytes = small_model().encode_to_vec();
    let e = onnx::import_bytes(&bytes[..bytes.len() - 1], None, "model.onnx")
        .unwrap_err()
        .0;
    assert!(
        e.starts_with("model.onnx: not a valid ONNX model (truncated or corrupt): "),
        "{e}"
    );
    assert_one_line(&e);
    // Every prefix either fails cleanly or imports; none may panic.
    for n in 0..bytes.len() {
        if let Err(e) = onnx::import_bytes(&bytes[..n], None, "model.onnx") {
            assert_one_line(&e.0);
        }
    }
    // Random bytes and single-byte corruptions of a valid model.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for len in [1usize, 7, 64, 500] {
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let e = onnx::import_bytes(&junk, None, "model.onnx").unwrap_err().0;
        assert_one_line(&e);
    }
    for _ in 0..300 {
        let mut b = bytes.clone();
        let i = next() as usize % b.len();
        b[i] = next() as u8;
        if let Err(e) = onnx::import_bytes(&b, None, "model.onnx") {
            assert_one_line(&e.0);
        }
    }
    let e = onnx::import_bytes(&[], None, "model.onnx").unwrap_err().0;
    assert_eq!(e, "model.onnx: not a valid ONNX model: the file is empty");
}

#[test]
fn unknown_ops_and_domains_are_named() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].op_type = "NotAnOp".into();
    m.graph.as_mut().unwrap().node[0].name = "x".into();
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'x' uses op 'NotAnOp', which glora does not support"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].domain = "com.microsoft".into();
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'add' uses op 'Add' of domain 'com.microsoft', which glora does not support"
    );
}

#[test]
fn dangling_inputs_and_outputs_are_named() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].name = "/blocks.0/Add".into();
    m.graph.as_mut().unwrap().node[0].input[1] = "foo".into();
    assert_eq!(
        import_err(&m),
        "model.onnx: node '/blocks.0/Add' (Add): input 'foo' is not produced by any node, initializer or graph input"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().initializer.clear();
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'add' (Add): input 'b' is not produced by any node, initializer or graph input"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().output[0].name = "nope".into();
    assert_eq!(
        import_err(&m),
        "model.onnx: graph output 'nope' is not produced by any node, initializer or graph input"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].name = String::new();
    m.graph.as_mut().unwrap().node[0].input[1] = "foo".into();
    assert_eq!(
        import_err(&m),
        "model.onnx: node #0 (Add): input 'foo' is not produced by any node, initializer or graph input"
    );
}

#[test]
fn cycles_and_missing_required_inputs_are_errors() {
    let m = model(
        17,
        vec![
            node("Relu", "r1", &["b"], &["a"], vec![]),
            node("Relu", "r2", &["a"], &["b"], vec![]),
        ],
        vec![],
        vec![],
        vec![f32_vi("a", &[2])],
    );
    let e = import_err(&m);
    assert!(
        e == "model.onnx: the imported graph is invalid: the graph has a cycle through node 'r1'"
            || e == "model.onnx: the imported graph is invalid: the graph has a cycle through node 'r2'",
        "{e}"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].input = vec!["".into(), "b".into()];
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'add' (Add): input 0 is required but not given"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[0].input = vec!["x".into(), "".into()];
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'add' (Add): expects 2 inputs, got 1"
    );
}

#[test]
fn unsupported_opsets_and_types_are_errors() {
    let mut m = small_model();
    m.opset_import[0].version = 9;
    assert_eq!(
        import_err(&m),
        "model.onnx: default-domain opset 9 is not supported (glora reads opsets 11 to 21)"
    );
    m.opset_import[0].version = 22;
    assert!(import_err(&m).contains("opset 22 is not supported"));
    m.opset_import.clear();
    assert!(import_err(&m).contains("declares no default-domain opset"));

    let mut m = small_model();
    m.graph.as_mut().unwrap().input[0] = vi("x", DataType::Double, &[Some(2)]);
    assert_eq!(
        import_err(&m),
        "model.onnx: graph input 'x': element type DOUBLE is not supported"
    );
    let mut m = small_model();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![3];
    assert_eq!(
        import_err(&m),
        "model.onnx: tensor 'b': float_data holds 2 values but shape [3] needs 3"
    );
}

#[test]
fn nonexistent_file_is_named() {
    let p = Path::new("/nonexistent/dir/model.onnx");
    let e = onnx::import_file(p).unwrap_err().0;
    assert!(
        e.starts_with("/nonexistent/dir/model.onnx: cannot read the file: "),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn bad_attributes_and_non_constant_inputs_name_the_node() {
    let m = unary_model(
        13,
        node(
            "Softmax",
            "sm",
            &["x"],
            &["y"],
            vec![attr_float("axis", 1.0)],
        ),
        &[2, 3],
        vec![],
    );
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'sm' (Softmax): attribute 'axis' should be INT but is FLOAT"
    );

    let m = model(
        13,
        vec![node("Squeeze", "sq", &["x", "axes"], &["y"], vec![])],
        vec![],
        vec![
            f32_vi("x", &[1, 2]),
            vi("axes", DataType::Int64, &[Some(1)]),
        ],
        vec![f32_vi("y", &[2])],
    );
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'sq' (Squeeze): input 'axes' (axes) must be a constant (an initializer or a Constant node)"
    );

    let bn = node(
        "BatchNormalization",
        "bn",
        &["x", "s", "s", "s", "s"],
        &["y"],
        vec![attr_int("training_mode", 1)],
    );
    let m = unary_model(15, bn, &[1, 2, 2], vec![f32_init("s", &[2], &[1.0, 1.0])]);
    let e = import_err(&m);
    assert!(
        e.starts_with(
            "model.onnx: node 'bn' (BatchNormalization): training_mode=1 is not supported"
        ),
        "{e}"
    );

    let m = unary_model(
        17,
        node("Relu", "r", &["x", "x"], &["y"], vec![]),
        &[2],
        vec![],
    );
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'r' (Relu): expects 1 inputs, got 2"
    );

    let m = unary_model(
        17,
        node(
            "Cast",
            "c",
            &["x"],
            &["y"],
            vec![attr_int("to", DataType::Double as i64)],
        ),
        &[2],
        vec![],
    );
    assert_eq!(
        import_err(&m),
        "model.onnx: node 'c' (Cast): attribute 'to': element type DOUBLE is not supported"
    );

    let m = model(
        17,
        vec![
            node("Relu", "r1", &["x"], &["y"], vec![]),
            node("Relu", "r2", &["x"], &["y"], vec![]),
        ],
        vec![],
        vec![f32_vi("x", &[2])],
        vec![f32_vi("y", &[2])],
    );
    let e = import_err(&m);
    assert!(
        e.starts_with("model.onnx: node 'r2' (Relu): value 'y' is also produced by 'r1'"),
        "{e}"
    );
}

// ---------------------------------------------------------------- round trips

fn f32_type(dims: &[usize]) -> TensorType {
    TensorType::new(DType::F32, Shape::known(dims))
}

/// A graph with one compute node `op`. Inputs are graph inputs (`Err(type)`) or
/// constants (`Ok(tensor)`); every output is a graph output of type `out_types[i]`.
fn one_op(
    op: Op,
    inputs: Vec<Option<Result<Tensor, TensorType>>>,
    out_types: Vec<TensorType>,
) -> Graph {
    let mut g = Graph::new("one_op");
    let mut ports = Vec::new();
    for (i, inp) in inputs.into_iter().enumerate() {
        let port = match inp {
            None => None,
            Some(Ok(t)) => Some(Port::new(g.add_const(format!("c{i}"), t), 0)),
            Some(Err(ty)) => Some(Port::new(g.add_input(format!("in{i}"), ty), 0)),
        };
        ports.push(port);
    }
    let names: Vec<String> = (0..out_types.len()).map(|i| format!("out{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let id = g.add_op("the_op", op, &ports, &name_refs);
    for (i, ty) in out_types.into_iter().enumerate() {
        g.node_mut(id).outputs[i].ty = Some(ty);
        g.outputs.push(Port::new(id, i));
    }
    g
}

fn export_import(g: &Graph, opset: i64) -> (ModelProto, Graph) {
    let opts = ExportOptions {
        opset: Some(opset),
        ..Default::default()
    };
    let m = onnx::export_model(g, &opts).unwrap_or_else(|e| panic!("export failed: {e}"));
    let back = onnx::import_bytes(&m.encode_to_vec(), None, "exported.onnx")
        .unwrap_or_else(|e| panic!("re-import failed: {e}"));
    (m, back)
}

/// Names of the values feeding each input slot of `id`.
fn input_names(g: &Graph, id: glora::ir::NodeIndex) -> Vec<Option<String>> {
    g.inputs_of(id)
        .into_iter()
        .map(|p| p.map(|p| g.value(p).name.clone()))
        .collect()
}

/// The compute node `the_op` is the same op on the same inputs with the same
/// outputs after export and re-import.
fn assert_same_op(g: &Graph, back: &Graph) {
    let a = g.find_node("the_op").unwrap();
    let b = back.find_node("the_op").expect("the node keeps its name");
    assert_eq!(back.node(b).op, g.node(a).op);
    let out = |g: &Graph, id| {
        g.node(id)
            .outputs
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(out(back, b), out(g, a));
    let mut want = input_names(g, a);
    let mut got = input_names(back, b);
    // Empty trailing optional slots may be written shorter.
    while want.last() == Some(&None) {
        want.pop();
    }
    while got.last() == Some(&None) {
        got.pop();
    }
    assert_eq!(got, want);
    for (i, c) in g.inputs_of(a).into_iter().enumerate() {
        if let Some(t) = c.and_then(|p| g.const_value(p)) {
            let p = back.input(b, i).unwrap();
            assert_eq!(back.const_value(p), Some(t), "constant input {i}");
        }
    }
}

fn round_trip(
    op: Op,
    inputs: Vec<Option<Result<Tensor, TensorType>>>,
    out_types: Vec<TensorType>,
    opsets: &[i64],
) {
    let g = one_op(op, inputs, out_types);
    for &opset in opsets {
        let (_, back) = export_import(&g, opset);
        assert_same_op(&g, &back);
    }
}

fn x(dims: &[usize]) -> Option<Result<Tensor, TensorType>> {
    Some(Err(f32_type(dims)))
}

fn c(t: Tensor) -> Option<Result<Tensor, TensorType>> {
    Some(Ok(t))
}

fn ones(dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_f32(dims.to_vec(), vec![1.0; n]).unwrap()
}

const ALL: &[i64] = &[17, 18, 19, 20, 21];

#[test]
fn gemm_and_conv_attributes_round_trip() {
    let gemm = GemmAttrs {
        alpha: 0.5,
        beta: 2.0,
        trans_a: true,
        trans_b: true,
    };
    round_trip(
        Op::Gemm(gemm),
        vec![x(&[3, 2]), c(ones(&[4, 3])), c(ones(&[4]))],
        vec![f32_type(&[2, 4])],
        ALL,
    );
    round_trip(
        Op::Gemm(GemmAttrs::default()),
        vec![x(&[2, 3]), c(ones(&[3, 4])), None],
        vec![f32_type(&[2, 4])],
        &[17],
    );
    let conv = ConvAttrs {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 2,
        ..ConvAttrs::default()
    };
    round_trip(
        Op::Conv(conv),
        vec![x(&[1, 2, 8, 8]), c(ones(&[4, 1, 3, 3])), c(ones(&[4]))],
        vec![f32_type(&[1, 4, 4, 4])],
        ALL,
    );
    let same = ConvAttrs {
        group: 1,
        auto_pad: AutoPad::SameUpper,
        ..ConvAttrs::default()
    };
    round_trip(
        Op::Conv(same),
        vec![x(&[1, 1, 5, 5]), c(ones(&[1, 1, 3, 3])), None],
        vec![f32_type(&[1, 1, 5, 5])],
        &[17],
    );
    let tconv = ConvAttrs {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        output_padding: vec![1, 1],
        group: 1,
        ..ConvAttrs::default()
    };
    round_trip(
        Op::ConvTranspose(tconv),
        vec![x(&[1, 2, 4, 4]), c(ones(&[2, 3, 3, 3])), c(ones(&[3]))],
        vec![f32_type(&[1, 3, 8, 8])],
        ALL,
    );
    let shaped = ConvAttrs {
        strides: vec![2],
        output_shape: vec![9],
        group: 1,
        ..ConvAttrs::default()
    };
    round_trip(
        Op::ConvTranspose(shaped),
        vec![x(&[1, 1, 4]), c(ones(&[1, 1, 3])), None],
        vec![f32_type(&[1, 1, 9])],
        &[17],
    );
}

#[test]
fn normalisation_and_activation_attributes_round_trip() {
    round_trip(
        Op::Softmax { axis: 1 },
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
        ALL,
    );
    round_trip(
        Op::Softmax { axis: -1 },
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
        &[17],
    );
    round_trip(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-3,
        },
        vec![x(&[2, 3]), c(ones(&[3])), c(ones(&[3]))],
        vec![f32_type(&[2, 3]), f32_type(&[2, 1]), f32_type(&[2, 1])],
        ALL,
    );
    round_trip(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        },
        vec![x(&[2, 3]), c(ones(&[3])), None],
        vec![f32_type(&[2, 3])],
        &[17],
    );
    round_trip(
        Op::BatchNorm { epsilon: 1e-3 },
        vec![
            x(&[1, 2, 3]),
            c(ones(&[2])),
            c(ones(&[2])),
            c(ones(&[2])),
            c(ones(&[2])),
        ],
        vec![f32_type(&[1, 2, 3])],
        ALL,
    );
    round_trip(
        Op::Clip,
        vec![
            x(&[4]),
            c(Tensor::scalar_f32(-1.0)),
            c(Tensor::scalar_f32(1.0)),
        ],
        vec![f32_type(&[4])],
        &[17],
    );
    round_trip(
        Op::Clip,
        vec![x(&[4]), None, c(Tensor::scalar_f32(1.0))],
        vec![f32_type(&[4])],
        &[17],
    );
    for approximate in [GeluApprox::None, GeluApprox::Tanh] {
        round_trip(
            Op::Gelu { approximate },
            vec![x(&[2, 3])],
            vec![f32_type(&[2, 3])],
            &[20, 21],
        );
    }
    round_trip(
        Op::Cast { to: DType::I64 },
        vec![x(&[2])],
        vec![TensorType::new(DType::I64, Shape::known(&[2]))],
        &[17],
    );
}

#[test]
fn reduce_attributes_round_trip_at_every_opset() {
    for op in [ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Max] {
        for (axes, keepdims, out) in [
            (Some(vec![1]), false, vec![2]),
            (Some(vec![0, -1]), true, vec![1, 1]),
            (None, true, vec![1, 1]),
        ] {
            let r = Op::Reduce {
                op,
                axes,
                keepdims,
                noop_with_empty_axes: false,
            };
            round_trip(r, vec![x(&[2, 3])], vec![f32_type(&out)], ALL);
        }
    }
    // noop_with_empty_axes survives where the opset has it (ReduceSum ≥ 13, others ≥ 18).
    let noop = |op| Op::Reduce {
        op,
        axes: None,
        keepdims: true,
        noop_with_empty_axes: true,
    };
    round_trip(
        noop(ReduceOp::Sum),
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
        ALL,
    );
    round_trip(
        noop(ReduceOp::Mean),
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
        &[18, 21],
    );
    // Before 18 ReduceMean cannot say "no reduction": it is written as the Identity it is.
    let g = one_op(
        noop(ReduceOp::Mean),
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
    );
    let (_, back) = export_import(&g, 17);
    assert_eq!(op_of(&back, "out0"), Op::Identity);
}

#[test]
fn shape_op_attributes_round_trip() {
    let i64_type = |d: &[usize]| TensorType::new(DType::I64, Shape::known(d));
    round_trip(
        Op::Reshape { allowzero: true },
        vec![x(&[2, 3]), c(Tensor::vec_i64(vec![3, 2]))],
        vec![f32_type(&[3, 2])],
        ALL,
    );
    round_trip(
        Op::Reshape { allowzero: false },
        vec![x(&[2, 3]), c(Tensor::vec_i64(vec![0, 3]))],
        vec![f32_type(&[2, 3])],
        &[17],
    );
    round_trip(
        Op::Transpose {
            perm: Some(vec![1, 0, 2]),
        },
        vec![x(&[2, 3, 4])],
        vec![f32_type(&[3, 2, 4])],
        ALL,
    );
    round_trip(
        Op::Transpose { perm: None },
        vec![x(&[2, 3])],
        vec![f32_type(&[3, 2])],
        &[17],
    );
    round_trip(
        Op::Concat { axis: -1 },
        vec![x(&[2, 3]), x(&[2, 1]), c(ones(&[2, 2]))],
        vec![f32_type(&[2, 6])],
        ALL,
    );
    round_trip(
        Op::Gather { axis: 1 },
        vec![x(&[2, 3]), c(Tensor::vec_i64(vec![2, 0]))],
        vec![f32_type(&[2, 2])],
        ALL,
    );
    round_trip(
        Op::Slice,
        vec![
            x(&[4, 6]),
            c(Tensor::vec_i64(vec![1])),
            c(Tensor::vec_i64(vec![5])),
            c(Tensor::vec_i64(vec![1])),
            c(Tensor::vec_i64(vec![2])),
        ],
        vec![f32_type(&[4, 2])],
        &[17],
    );
    round_trip(
        Op::Squeeze {
            axes: Some(vec![0]),
        },
        vec![x(&[1, 3])],
        vec![f32_type(&[3])],
        ALL,
    );
    round_trip(
        Op::Squeeze { axes: None },
        vec![x(&[1, 3])],
        vec![f32_type(&[3])],
        &[17],
    );
    round_trip(
        Op::Unsqueeze { axes: vec![0, 2] },
        vec![x(&[3])],
        vec![f32_type(&[1, 3, 1])],
        ALL,
    );
    round_trip(
        Op::Flatten { axis: 2 },
        vec![x(&[2, 3, 4])],
        vec![f32_type(&[6, 4])],
        ALL,
    );
    round_trip(
        Op::Shape {
            start: 1,
            end: Some(-1),
        },
        vec![x(&[2, 3, 4])],
        vec![i64_type(&[1])],
        ALL,
    );
    round_trip(
        Op::Shape {
            start: 0,
            end: None,
        },
        vec![x(&[2, 3])],
        vec![i64_type(&[2])],
        &[17],
    );
    round_trip(
        Op::Expand,
        vec![x(&[1, 3]), c(Tensor::vec_i64(vec![2, 3]))],
        vec![f32_type(&[2, 3])],
        &[17],
    );
    round_trip(
        Op::ConstantOfShape {
            value: Tensor::from_i64(vec![1], vec![7]).unwrap(),
        },
        vec![Some(Err(i64_type(&[2])))],
        vec![TensorType::new(
            DType::I64,
            Shape(vec![Dim::sym("a"), Dim::sym("b")]),
        )],
        ALL,
    );
    round_trip(
        Op::Range,
        vec![
            c(Tensor::scalar_i64(0)),
            c(Tensor::scalar_i64(6)),
            c(Tensor::scalar_i64(2)),
        ],
        vec![i64_type(&[3])],
        &[17],
    );
    round_trip(
        Op::Where,
        vec![
            Some(Err(TensorType::new(DType::Bool, Shape::known(&[2])))),
            x(&[2]),
            x(&[2]),
        ],
        vec![f32_type(&[2])],
        &[17],
    );
    round_trip(
        Op::Binary(BinaryOp::Pow),
        vec![x(&[2]), c(Tensor::scalar_f32(2.0))],
        vec![f32_type(&[2])],
        &[17],
    );
    round_trip(
        Op::Unary(UnaryOp::Erf),
        vec![x(&[2])],
        vec![f32_type(&[2])],
        &[17],
    );
}

#[test]
fn split_round_trips_and_spells_uneven_splits_before_18() {
    let two = vec![f32_type(&[2, 2]), f32_type(&[2, 4])];
    round_trip(
        Op::Split {
            axis: 1,
            sizes: Some(vec![2, 4]),
        },
        vec![x(&[2, 6])],
        two,
        ALL,
    );
    let thirds = vec![f32_type(&[2, 2]); 3];
    round_trip(
        Op::Split {
            axis: -1,
            sizes: None,
        },
        vec![x(&[2, 6])],
        thirds,
        ALL,
    );
    // 7 into 3 pieces is 3, 3, 1: explicit sizes at 17, num_outputs from 18 on.
    let uneven = Op::Split {
        axis: 0,
        sizes: None,
    };
    let g = one_op(
        uneven.clone(),
        vec![x(&[7])],
        vec![f32_type(&[3]), f32_type(&[3]), f32_type(&[1])],
    );
    let (m, back) = export_import(&g, 17);
    assert_eq!(
        op_of(&back, "out0"),
        Op::Split {
            axis: 0,
            sizes: Some(vec![3, 3, 1])
        }
    );
    let split = &m.graph.as_ref().unwrap().node[0];
    assert_eq!(split.input.len(), 2, "explicit sizes input at opset 17");
    let (m, back) = export_import(&g, 18);
    assert_eq!(op_of(&back, "out0"), uneven);
    let split = &m.graph.as_ref().unwrap().node[0];
    assert_eq!(split.input.len(), 1);
    assert!(
        split
            .attribute
            .iter()
            .any(|a| a.name == "num_outputs" && a.i == 3)
    );
}

#[test]
fn resize_attributes_round_trip_and_raise_the_opset() {
    let attrs = ResizeAttrs {
        mode: ResizeMode::Cubic,
        coord: CoordTransform::AlignCorners,
        nearest: NearestMode::Floor,
        cubic_coeff_a: -0.5,
        exclude_outside: true,
        extrapolation_value: 1.5,
        ..ResizeAttrs::default()
    };
    let inputs = || {
        vec![
            x(&[1, 1, 2, 2]),
            None,
            None,
            c(Tensor::vec_i64(vec![1, 1, 4, 4])),
        ]
    };
    round_trip(
        Op::Resize(attrs.clone()),
        inputs(),
        vec![f32_type(&[1, 1, 4, 4])],
        ALL,
    );
    let newer = ResizeAttrs {
        mode: ResizeMode::Linear,
        antialias: true,
        axes: Some(vec![2, 3]),
        aspect: AspectPolicy::NotLarger,
        ..ResizeAttrs::default()
    };
    let g = one_op(
        Op::Resize(newer),
        vec![x(&[1, 1, 2, 2]), None, None, c(Tensor::vec_i64(vec![4, 4]))],
        vec![f32_type(&[1, 1, 4, 4])],
    );
    let (m, back) = export_import(&g, 17);
    assert_eq!(
        m.opset_import[0].version, 18,
        "antialias, axes and the aspect policy need 18"
    );
    assert_same_op(&g, &back);
    let sym = ResizeAttrs {
        coord: CoordTransform::HalfPixelSymmetric,
        mode: ResizeMode::Linear,
        ..ResizeAttrs::default()
    };
    let g = one_op(Op::Resize(sym), inputs(), vec![f32_type(&[1, 1, 4, 4])]);
    let (m, back) = export_import(&g, 17);
    assert_eq!(m.opset_import[0].version, 19);
    assert_eq!(m.ir_version, 9);
    assert_same_op(&g, &back);
}

#[test]
fn gelu_is_decomposed_before_opset_20() {
    let g = one_op(
        Op::Gelu {
            approximate: GeluApprox::None,
        },
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
    );
    let (m, back) = export_import(&g, 17);
    assert_eq!(
        histogram(&back),
        hist(&[("Add", 1), ("Div", 1), ("Erf", 1), ("Mul", 2)])
    );
    // The last node writes the Gelu's output name; the constants are √2, 1 and ½.
    assert_eq!(
        m.graph.as_ref().unwrap().node.last().unwrap().output,
        vec!["out0".to_string()]
    );
    let mut consts: Vec<f32> = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .map(|t| onnx::tensor_from_proto(t, None).unwrap().to_f32_vec()[0])
        .collect();
    consts.sort_by(f32::total_cmp);
    assert_eq!(consts, vec![0.5, 1.0, std::f32::consts::SQRT_2]);
    let g = one_op(
        Op::Gelu {
            approximate: GeluApprox::Tanh,
        },
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
    );
    let (_, back) = export_import(&g, 19);
    assert_eq!(
        histogram(&back),
        hist(&[("Add", 2), ("Mul", 6), ("Tanh", 1)])
    );
    // Without a known input type the decomposition cannot pick its constants' type.
    let mut g = Graph::new("g");
    let xin = g.add_input("x", f32_type(&[2]));
    let relu = g.add_op(
        "relu",
        Op::Unary(UnaryOp::Relu),
        &[Some(Port::new(xin, 0))],
        &["r"],
    );
    let gelu = g.add_op(
        "gelu",
        Op::Gelu {
            approximate: GeluApprox::None,
        },
        &[Some(Port::new(relu, 0))],
        &["y"],
    );
    g.node_mut(gelu).outputs[0].ty = Some(f32_type(&[2]));
    g.outputs.push(Port::new(gelu, 0));
    let e = onnx::export_model(&g, &ExportOptions::default())
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        "node 'gelu' (Gelu): the type of input 'r' is unknown; export needs it"
    );
}

// ---------------------------------------------------------------- export rules

#[test]
fn outputs_that_are_inputs_constants_or_repeats_go_through_identity() {
    let mut g = Graph::new("g");
    let xin = g.add_input("x", f32_type(&[2]));
    let k = g.add_const("k", ones(&[2]));
    let add = g.add_op(
        "add",
        Op::Binary(BinaryOp::Add),
        &[Some(Port::new(xin, 0)), Some(Port::new(k, 0))],
        &["y"],
    );
    g.node_mut(add).outputs[0].ty = Some(f32_type(&[2]));
    g.outputs = vec![
        Port::new(xin, 0),
        Port::new(k, 0),
        Port::new(add, 0),
        Port::new(add, 0),
    ];
    let (m, back) = export_import(&g, 17);
    let gp = m.graph.as_ref().unwrap();
    let outs: Vec<&str> = gp.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outs.len(), 4);
    assert_ne!(
        outs[0], "x",
        "a graph input cannot also be produced as an output"
    );
    assert_eq!(outs[1], "k", "a constant output keeps its name");
    assert_eq!(outs[2], "y");
    assert!(outs[3] != "y" && outs[3] != outs[0]);
    assert_eq!(
        gp.node.iter().filter(|n| n.op_type == "Identity").count(),
        3
    );
    assert_eq!(back.outputs.len(), 4);
    // The Add still reads the constant, under the initializer's new name.
    let add_back = back.find_node("add").unwrap();
    let kc = back.const_value(back.input(add_back, 1).unwrap()).unwrap();
    assert_eq!(kc, &ones(&[2]));
}

#[test]
fn export_is_deterministic_and_checks_types_and_opsets() {
    let g = one_op(
        Op::Softmax { axis: 0 },
        vec![x(&[2, 3])],
        vec![f32_type(&[2, 3])],
    );
    let a = onnx::export_model(&g, &ExportOptions::default())
        .unwrap()
        .encode_to_vec();
    let b = onnx::export_model(&g.clone(), &ExportOptions::default())
        .unwrap()
        .encode_to_vec();
    assert_eq!(a, b);
    let m = onnx::export_model(&g, &ExportOptions::default()).unwrap();
    assert_eq!((m.opset_import[0].version, m.ir_version), (17, 8));
    assert_eq!(m.producer_name, "glora");
    let m = onnx::export_model(
        &g,
        &ExportOptions {
            opset: Some(11),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.opset_import[0].version, 17, "never below 17");
    let m = onnx::export_model(
        &g,
        &ExportOptions {
            opset: Some(21),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((m.opset_import[0].version, m.ir_version), (21, 10));
    let e = onnx::export_model(
        &g,
        &ExportOptions {
            opset: Some(22),
            ..Default::default()
        },
    )
    .unwrap_err()
    .0;
    assert_eq!(
        e,
        "opset 22 cannot be written (glora writes opsets 17 to 21)"
    );

    let mut untyped = g.clone();
    let p = untyped.outputs[0];
    untyped.node_mut(p.node).outputs[0].ty = None;
    let e = onnx::export_model(&untyped, &ExportOptions::default())
        .unwrap_err()
        .0;
    assert_eq!(e, "graph output 'out0' has no known type; export needs it");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.onnx");
    let e = onnx::export_file(&untyped, &path, &ExportOptions::default())
        .unwrap_err()
        .0;
    assert!(
        e.starts_with(&format!("{}: graph output 'out0'", path.display())),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing half-written"
    );
}

#[test]
fn symbolic_dims_become_dim_params() {
    let ty = TensorType::new(DType::F32, Shape(vec![Dim::sym("batch"), Dim::Known(3)]));
    let g = one_op(
        Op::Unary(UnaryOp::Relu),
        vec![Some(Err(ty.clone()))],
        vec![ty.clone()],
    );
    let (m, back) = export_import(&g, 17);
    let gp = m.graph.as_ref().unwrap();
    for v in [&gp.input[0], &gp.output[0]] {
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().unwrap().value.as_ref()
        else {
            panic!("tensor type expected")
        };
        let dims: Vec<_> = t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone())
            .collect();
        assert_eq!(
            dims,
            vec![
                Some(dimension::Value::DimParam("batch".into())),
                Some(dimension::Value::DimValue(3))
            ]
        );
    }
    assert_eq!(
        back.value(Port::new(back.inputs[0], 0)).ty.as_ref(),
        Some(&ty)
    );
}

#[test]
fn big_models_put_weights_in_an_external_data_file() {
    let w = Tensor::from_f32(vec![32, 16], (0..512).map(|i| i as f32 * 0.5).collect()).unwrap();
    let small = Tensor::from_f32(vec![16], vec![0.25; 16]).unwrap();
    let mut g = Graph::new("g");
    let xin = g.add_input("x", f32_type(&[1, 32]));
    let wc = g.add_const("w", w.clone());
    let bc = g.add_const("b", small.clone());
    let mm = g.add_op(
        "mm",
        Op::MatMul,
        &[Some(Port::new(xin, 0)), Some(Port::new(wc, 0))],
        &["h"],
    );
    let add = g.add_op(
        "add",
        Op::Binary(BinaryOp::Add),
        &[Some(Port::new(mm, 0)), Some(Port::new(bc, 0))],
        &["y"],
    );
    g.node_mut(add).outputs[0].ty = Some(f32_type(&[1, 16]));
    g.outputs.push(Port::new(add, 0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let opts = ExportOptions {
        external_data_threshold: 1000,
        ..Default::default()
    };
    let rep = onnx::export_file(&g, &path, &opts).unwrap();
    let data = dir.path().join("m.onnx.data");
    assert_eq!(rep.external_data.as_deref(), Some(data.as_path()));
    assert_eq!(rep.opset, 17);
    assert_eq!(rep.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        std::fs::metadata(&data).unwrap().len(),
        512 * 4,
        "only the 2 KiB weight moves"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["m.onnx", "m.onnx.data"],
        "no temporary files left"
    );
    let back = onnx::import_file(&path).unwrap();
    assert_eq!(op_of(&back, "w").weight(), Some(&w));
    assert_eq!(op_of(&back, "b").weight(), Some(&small));
    check_with_onnx(&path);

    // Under the threshold everything stays inline.
    let inline = dir.path().join("inline.onnx");
    let rep = onnx::export_file(&g, &inline, &ExportOptions::default()).unwrap();
    assert_eq!(rep.external_data, None);
    assert!(!dir.path().join("inline.onnx.data").exists());
}

// ---------------------------------------------------------------- real models

/// Runs the strict ONNX checker when Python with the onnx package is available.
fn check_with_onnx(path: &Path) {
    let Some(py) = common::python_with_onnx() else {
        return;
    };
    if let Err(e) = common::onnx_check(&py, path) {
        panic!("onnx.checker rejects {}: {e}", path.display());
    }
}

struct RealModel {
    file: &'static str,
    inputs: &'static [&'static str],
    outputs: &'static [&'static str],
    /// ONNX op counts without `Constant` (which becomes `Const`).
    ops: &'static [(&'static str, usize)],
    /// Constants left after import and the entries they hold.
    consts: usize,
    weights: usize,
}

// Established with the Python onnx package (1.23.2): op_type counts over graph.node;
// consts are the initializers and Constant outputs still read by a node input that
// stays an input in the IR (not Unsqueeze/Squeeze/Split slot 1, nor ReduceSum slot 1
// from opset 13), or by a graph output; weights are their element counts.
const DINOV2: RealModel = RealModel {
    file: "models/dinov2-vits14-focus.onnx",
    inputs: &["input_image"],
    outputs: &["output_importance"],
    ops: &[
        ("Add", 159),
        ("BatchNormalization", 3),
        ("Cast", 10),
        ("Concat", 59),
        ("ConstantOfShape", 1),
        ("Conv", 2),
        ("ConvTranspose", 3),
        ("Div", 39),
        ("Equal", 1),
        ("Erf", 12),
        ("Expand", 1),
        ("Gather", 102),
        ("MatMul", 96),
        ("Mul", 98),
        ("Pow", 26),
        ("ReduceMean", 50),
        ("Relu", 3),
        ("Reshape", 53),
        ("Resize", 2),
        ("Shape", 106),
        ("Sigmoid", 1),
        ("Slice", 4),
        ("Softmax", 12),
        ("Sqrt", 25),
        ("Sub", 25),
        ("Transpose", 52),
        ("Unsqueeze", 109),
        ("Where", 1),
    ],
    consts: 564,
    weights: 24_287_042,
};

const MINILM: RealModel = RealModel {
    file: "models/paraphrase-minilm-l3.onnx",
    inputs: &["input_ids", "attention_mask"],
    outputs: &["output", "463", "onnx::Shape_422", "461"],
    ops: &[
        ("Add", 32),
        ("Cast", 2),
        ("Clip", 1),
        ("Concat", 15),
        ("ConstantOfShape", 2),
        ("Div", 7),
        ("Equal", 2),
        ("Erf", 3),
        ("Expand", 2),
        ("Gather", 32),
        ("Identity", 2),
        ("LayerNormalization", 7),
        ("MatMul", 24),
        ("Mul", 10),
        ("ReduceSum", 2),
        ("Reshape", 14),
        ("Shape", 31),
        ("Slice", 2),
        ("Softmax", 3),
        ("Sub", 1),
        ("Transpose", 12),
        ("Unsqueeze", 34),
        ("Where", 2),
    ],
    consts: 130,
    weights: 17_243_083,
};

fn const_count(g: &Graph) -> usize {
    g.node_ids()
        .into_iter()
        .filter(|&i| matches!(g.node(i).op, Op::Const(_)))
        .count()
}

fn check_real_model(m: &RealModel) {
    let Some(path) = common::fixture(m.file) else {
        return;
    };
    let g = onnx::import_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let inputs: Vec<&str> = g.inputs.iter().map(|&i| g.node(i).name.as_str()).collect();
    assert_eq!(inputs, m.inputs);
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&p| g.value(p).name.as_str())
        .collect();
    assert_eq!(outputs, m.outputs);
    assert_eq!(histogram(&g), hist(m.ops));
    assert_eq!(const_count(&g), m.consts);
    assert_eq!(g.weight_count(), m.weights);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exported.onnx");
    let rep =
        onnx::export_file(&g, &out, &ExportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.opset, 17);
    let back = onnx::import_file(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(histogram(&back), histogram(&g));
    assert_eq!(back.weight_count(), g.weight_count());
    let names = |g: &Graph| {
        g.outputs
            .iter()
            .map(|&p| g.value(p).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&back), names(&g));
    // Same graph, same bytes.
    let again = dir.path().join("again.onnx");
    onnx::export_file(&g, &again, &ExportOptions::default()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    check_with_onnx(&out);
}

#[test]
fn dinov2_imports_exports_and_reimports() {
    check_real_model(&DINOV2);
}

#[test]
fn minilm_imports_exports_and_reimports() {
    check_real_model(&MINILM);
}

#[test]
fn exports_pass_the_strict_onnx_checker() {
    let Some(py) = common::python_with_onnx() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Graph, i64)> = vec![
        (
            "gelu17",
            one_op(
                Op::Gelu {
                    approximate: GeluApprox::Tanh,
                },
                vec![x(&[2, 3])],
                vec![f32_type(&[2, 3])],
            ),
            17,
        ),
        (
            "gelu20",
            one_op(
                Op::Gelu {
                    approximate: GeluApprox::None,
                },
                vec![x(&[2, 3])],
                vec![f32_type(&[2, 3])],
            ),
            20,
        ),
        (
            "ln",
            one_op(
                Op::LayerNorm {
                    axis: -1,
                    epsilon: 1e-5,
                },
                vec![x(&[2, 3]), c(ones(&[3])), c(ones(&[3]))],
                vec![f32_type(&[2, 3])],
            ),
            17,
        ),
        (
            "split17",
            one_op(
                Op::Split {
                    axis: 0,
                    sizes: None,
                },
                vec![x(&[7])],
                vec![f32_type(&[3]), f32_type(&[3]), f32_type(&[1])],
            ),
            17,
        ),
        (
            "split18",
            one_op(
                Op::Split {
                    axis: 0,
                    sizes: None,
                },
                vec![x(&[7])],
                vec![f32_type(&[3]), f32_type(&[3]), f32_type(&[1])],
            ),
            18,
        ),
        (
            "reducemean18",
            one_op(
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: Some(vec![1]),
                    keepdims: true,
                    noop_with_empty_axes: false,
                },
                vec![x(&[2, 3])],
                vec![f32_type(&[2, 1])],
            ),
            18,
        ),
        (
            "squeeze",
            one_op(
                Op::Squeeze {
                    axes: Some(vec![0]),
                },
                vec![x(&[1, 3])],
                vec![f32_type(&[3])],
            ),
            21,
        ),
    ];
    for (name, g, opset) in cases {
        let path = dir.path().join(format!("{name}.onnx"));
        let opts = ExportOptions {
            opset: Some(opset),
            ..Default::default()
        };
        onnx::export_file(&g, &path, &opts).unwrap();
        if let Err(e) = common::onnx_check(&py, &path) {
            panic!("onnx.checker rejects {name}: {e}");
        }
    }
}

/// Metadata (the label names a classifier is exported with) is written as
/// `metadata_props` and read back in file order.
#[test]
fn metadata_props_round_trip() {
    let mut g = Graph::new("m");
    let x = g.add_input("x", f32_type(&[1, 2]));
    g.outputs.push(Port::new(x, 0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let opts = ExportOptions {
        metadata: vec![
            ("id2label".into(), r#"{"0": "ham", "1": "spam"}"#.into()),
            ("task".into(), "text-classification".into()),
        ],
        ..Default::default()
    };
    onnx::export_file(&g, &path, &opts).unwrap();
    let back = onnx::read_metadata(&path).unwrap();
    assert_eq!(back, opts.metadata);
    let bytes = std::fs::read(&path).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(m.metadata_props[1].key, "task");
    assert!(onnx::read_metadata(&dir.path().join("none.onnx")).is_err());
}
