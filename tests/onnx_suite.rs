//! The ONNX backend node tests (`<fixtures>/onnx-suite/node/*`) run on the CPU
//! executor. Each case's `model.onnx` is imported with `glora::onnx::import_file`,
//! every `test_data_set_*` is fed to `glora::exec::run_cpu`, and each output must
//! match the stored one in shape, dtype and value (`|got − want| ≤ atol + rtol·|want|`
//! with the ONNX defaults rtol 1e-3, atol 1e-7; NaN matches NaN; integers and bools
//! exactly).
//!
//! A case whose import fails is skipped with the importer's reason, unless the case
//! only uses ops, element types and opsets the executor promises to support (read
//! here straight from the protobuf): such a case must import and pass. Run with
//! `cargo test --test onnx_suite -- --nocapture` to see the failures, the table of
//! skip reasons and the totals.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use glora::ir::{Graph, Tensor, TensorData};
use glora::onnx::pb;
use prost::Message;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

/// Ops whose cases (with f32/i64/bool tensors, opset ≥ 11) must all pass.
const REQUIRED_OPS: &[&str] = &[
    "MatMul",
    "Gemm",
    "Conv",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Relu",
    "Sigmoid",
    "Sin",
    "Cos",
    "Clip",
    "Softmax",
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Gather",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Shape",
    "Cast",
    "Where",
    "Equal",
    "Expand",
    "ConstantOfShape",
    "Constant",
    "Identity",
    "Range",
    "BatchNormalization",
    "ConvTranspose",
    "Resize",
];

/// ONNX element types of the required cases: FLOAT, INT64, BOOL.
const REQUIRED_ELEM_TYPES: &[i32] = &[1, 7, 9];

/// Cases skipped on purpose, with the reason. Each would otherwise count as a
/// failure or a pass; none may be a required case unless the reason is outside the
/// executor (the IR cannot express the model).
const DELIBERATE_SKIPS: &[(&str, &str)] = &[
    (
        "test_cast_FLOAT_to_BFLOAT16",
        "stored output truncates to bf16; current ONNX rounds to nearest even",
    ),
    (
        "test_castlike_FLOAT_to_BFLOAT16_expanded",
        "stored output truncates to bf16; current ONNX rounds to nearest even",
    ),
];

fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("GLORA_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/glora/fixtures"),
    };
    dir.is_dir().then_some(dir)
}

/// Whether the case only uses what the executor must support, from the protobuf.
fn is_required(model_path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(model_path) else {
        return false;
    };
    let Ok(model) = pb::ModelProto::decode(bytes.as_slice()) else {
        return false;
    };
    let Some(graph) = model.graph else {
        return false;
    };
    let opset_ok = model
        .opset_import
        .iter()
        .all(|o| (o.domain.is_empty() || o.domain == "ai.onnx") && (11..=21).contains(&o.version));
    let ops_ok = graph.node.iter().all(|n| {
        let training_bn = n.op_type == "BatchNormalization"
            && (n.output.len() > 1
                || n.attribute
                    .iter()
                    .any(|a| a.name == "training_mode" && a.i != 0));
        (n.domain.is_empty() || n.domain == "ai.onnx")
            && REQUIRED_OPS.contains(&n.op_type.as_str())
            && !training_bn
    });
    let types_ok = graph.input.iter().chain(&graph.output).all(|v| {
        v.r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .is_some_and(|pb::type_proto::Value::TensorType(t)| {
                REQUIRED_ELEM_TYPES.contains(&t.elem_type)
            })
    });
    opset_ok && ops_ok && types_ok
}

/// Files `prefix_N.pb` in `dir`, ordered by N.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix(prefix)?
                .strip_prefix('_')?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

fn float_values(t: &Tensor) -> Option<Vec<f64>> {
    match t.data() {
        TensorData::F32(_) | TensorData::F16(_) | TensorData::BF16(_) => Some(t.to_f64_vec()),
        _ => None,
    }
}

/// Why `got` does not match `want`, if it does not.
fn mismatch(got: &Tensor, want: &Tensor) -> Option<String> {
    if got.dtype() != want.dtype() {
        return Some(format!("dtype {} instead of {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Some(format!(
            "shape {:?} instead of {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (float_values(got), float_values(want)) {
        (Some(g), Some(w)) => {
            let mut bad = 0;
            let mut first = None;
            for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
                let ok =
                    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= ATOL + RTOL * b.abs();
                if !ok {
                    bad += 1;
                    first.get_or_insert((i, a, b));
                }
            }
            first.map(|(i, a, b)| {
                format!(
                    "{bad} of {} values differ; element {i}: got {a}, want {b}",
                    g.len()
                )
            })
        }
        _ => (got.data() != want.data()).then(|| "values differ".to_string()),
    }
}

/// How a case went wrong: the model or its data could not be read (a skip unless
/// the case is required), or it ran and failed.
enum Outcome {
    Unreadable(String),
    Failed(String),
}

/// The data sets of a case, in order.
fn data_sets(case: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    sets
}

/// The decoded input files of a data set, named after the graph inputs they feed:
/// by their own name when they carry one, else by position.
fn read_inputs(set: &Path, graph_inputs: &[String]) -> Result<Vec<(String, Tensor)>, Outcome> {
    let mut inputs = Vec::new();
    for (i, path) in numbered(set, "input").iter().enumerate() {
        let (name, t) =
            glora::onnx::read_tensor_file(path).map_err(|e| Outcome::Unreadable(e.to_string()))?;
        let name = if !name.is_empty() {
            name
        } else {
            graph_inputs
                .get(i)
                .cloned()
                .ok_or_else(|| Outcome::Failed("more input files than graph inputs".into()))?
        };
        inputs.push((name, t));
    }
    Ok(inputs)
}

/// The model with its integer inputs (axes, split sizes) turned into initializers
/// holding this data set's values. The IR keeps such operands as attributes, so
/// the importer needs them constant; the suite feeds them as inputs.
fn freeze_integer_inputs(model_path: &Path, set: &Path) -> Result<Graph, Outcome> {
    let unreadable = |e: String| Outcome::Unreadable(e);
    let bytes = std::fs::read(model_path).map_err(|e| unreadable(e.to_string()))?;
    let mut model =
        pb::ModelProto::decode(bytes.as_slice()).map_err(|e| unreadable(e.to_string()))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| unreadable("no graph".into()))?;
    let files = numbered(set, "input");
    let mut kept = Vec::new();
    for (i, input) in graph.input.drain(..).enumerate() {
        let elem = input
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .map(|pb::type_proto::Value::TensorType(t)| t.elem_type);
        let integer = matches!(elem, Some(6 | 7));
        match files.get(i) {
            Some(file) if integer => {
                let data = std::fs::read(file).map_err(|e| unreadable(e.to_string()))?;
                let mut t = pb::TensorProto::decode(data.as_slice())
                    .map_err(|e| unreadable(e.to_string()))?;
                t.name = input.name.clone();
                graph.initializer.push(t);
            }
            _ => kept.push(input),
        }
    }
    graph.input = kept;
    let source = model_path.display().to_string();
    glora::onnx::import_bytes(&model.encode_to_vec(), model_path.parent(), &source)
        .map_err(|e| unreadable(e.to_string()))
}

fn input_names(g: &Graph) -> Vec<String> {
    g.inputs
        .iter()
        .map(|&i| g.node(i).outputs[0].name.clone())
        .collect()
}

/// Runs one data set on an imported graph and compares the outputs.
fn run_set(g: &Graph, set: &Path) -> Result<(), Outcome> {
    let set_name = set
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = input_names(g);
    let inputs: Vec<(String, Tensor)> = read_inputs(set, &names)?
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .collect();
    let got = glora::exec::run_cpu(g, &inputs)
        .map_err(|e| Outcome::Failed(format!("{set_name}: {e}")))?;
    let wants = numbered(set, "output");
    if got.len() != wants.len() {
        return Err(Outcome::Failed(format!(
            "{set_name}: {} outputs, {} expected",
            got.len(),
            wants.len()
        )));
    }
    for (i, (gt, path)) in got.iter().zip(&wants).enumerate() {
        let (_, want) =
            glora::onnx::read_tensor_file(path).map_err(|e| Outcome::Unreadable(e.to_string()))?;
        if let Some(why) = mismatch(gt, &want) {
            return Err(Outcome::Failed(format!("{set_name} output {i}: {why}")));
        }
    }
    Ok(())
}

/// Imports and runs every data set of one case.
fn run_case(case: &Path) -> Result<(), Outcome> {
    let model = case.join("model.onnx");
    let sets = data_sets(case);
    if sets.is_empty() {
        return Err(Outcome::Failed("no test_data_set_* directories".into()));
    }
    match glora::onnx::import_file(&model) {
        Ok(g) => sets.iter().try_for_each(|set| run_set(&g, set)),
        Err(e) if e.to_string().contains("must be a constant") => sets
            .iter()
            .try_for_each(|set| run_set(&freeze_integer_inputs(&model, set)?, set)),
        Err(e) => Err(Outcome::Unreadable(e.to_string())),
    }
}

/// The part of an import error that says why, without file and node names.
fn skip_reason(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg);
    let tail = line.rsplit(": ").next().unwrap_or(line);
    // "node #3 uses op 'X'" and "node #0 uses op 'X'" are one reason.
    let tail = match tail.strip_prefix("node #") {
        Some(rest) => rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start(),
        None => tail,
    };
    tail.chars().take(100).collect()
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

#[test]
fn onnx_node_suite() {
    let Some(root) = fixtures_dir() else {
        println!(
            "onnx_suite: no fixtures (set GLORA_FIXTURES or fetch them to ~/.cache/glora/fixtures); skipped"
        );
        return;
    };
    let node_dir = root.join("onnx-suite/node");
    let Ok(entries) = std::fs::read_dir(&node_dir) else {
        println!("onnx_suite: {} is missing; skipped", node_dir.display());
        return;
    };
    let mut cases: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();

    let (mut passed, mut failed, mut required_cases) = (0usize, Vec::<String>::new(), 0usize);
    let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((_, why)) = DELIBERATE_SKIPS.iter().find(|(n, _)| *n == name) {
            skipped
                .entry(format!("deliberate: {why}"))
                .or_default()
                .push(name);
            continue;
        }
        let required = is_required(&case.join("model.onnx"));
        required_cases += usize::from(required);
        match catch_unwind(AssertUnwindSafe(|| run_case(case))) {
            Ok(Ok(())) => passed += 1,
            Ok(Err(Outcome::Unreadable(e))) if !required => {
                skipped.entry(skip_reason(&e)).or_default().push(name)
            }
            Ok(Err(Outcome::Unreadable(e))) => {
                failed.push(format!("{name}: a supported case could not be read: {e}"))
            }
            Ok(Err(Outcome::Failed(e))) => failed.push(format!("{name}: {e}")),
            Err(p) => failed.push(format!("{name}: panicked: {}", panic_text(p.as_ref()))),
        }
    }

    for f in &failed {
        println!("FAIL {f}");
    }
    let mut reasons: Vec<(&String, &Vec<String>)> = skipped.iter().collect();
    reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    println!("skip reasons:");
    for (why, names) in &reasons {
        let example = names.first().map(String::as_str).unwrap_or("");
        println!("{:5}  {why}  (e.g. {example})", names.len());
    }
    let nskipped: usize = skipped.values().map(Vec::len).sum();
    println!("({required_cases} cases use only the required ops and element types)");
    println!(
        "{passed} passed, {} failed, {nskipped} skipped",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} ONNX suite cases failed",
        failed.len()
    );
}

#[test]
fn comparison_follows_the_backend_test_tolerances() {
    let t = |v: &[f32]| Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap();
    assert!(mismatch(&t(&[1.0, f32::NAN, 0.0]), &t(&[1.0005, f32::NAN, 5e-8])).is_none());
    assert!(mismatch(&t(&[1.0]), &t(&[1.002])).is_some());
    assert!(mismatch(&t(&[9e-8]), &t(&[0.0])).is_none());
    assert!(mismatch(&t(&[3e-7]), &t(&[0.0])).is_some());
    assert!(mismatch(&t(&[f32::NAN]), &t(&[1.0])).is_some());
    assert!(mismatch(&t(&[f32::INFINITY]), &t(&[f32::INFINITY])).is_none());
    assert!(mismatch(&t(&[1.0, 2.0]), &t(&[1.0])).is_some());
    let i = |v: &[i64]| Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap();
    assert!(mismatch(&i(&[3]), &i(&[3])).is_none());
    assert!(mismatch(&i(&[3]), &i(&[4])).is_some());
    assert!(mismatch(&i(&[1]), &t(&[1.0])).is_some());
}
