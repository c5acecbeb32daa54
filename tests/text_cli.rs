//! Text classification through the CLI, as a user runs it: a labelled CSV and the
//! all-MiniLM-L6-v2 checkpoint folder through `glora pipeline` to a merged ONNX that
//! passes the strict checker, keeps the base model's ops (plus the head's product and
//! bias), names its labels in its metadata and classifies texts in `glora predict`;
//! and bad text inputs, each one line naming the file and line at fault.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::*;

const GOOD: [&str; 6] = [
    "wonderful",
    "excellent",
    "delightful",
    "superb",
    "lovely",
    "brilliant",
];
const BAD: [&str; 6] = [
    "terrible", "awful", "dreadful", "horrible", "boring", "painful",
];

/// The word of review `k` and whether it is positive: even reviews are good.
fn review_word(k: usize) -> (&'static str, bool) {
    if k.is_multiple_of(2) {
        (GOOD[k / 2 % GOOD.len()], true)
    } else {
        (BAD[k / 2 % BAD.len()], false)
    }
}

/// A CSV of `n` short reviews, alternating positive and negative, with string labels.
fn reviews(path: &Path, n: usize, offset: usize) {
    let mut s = String::from("id,text,label\n");
    for i in 0..n {
        let k = i + offset;
        let (word, good) = review_word(k);
        let label = if good { "positive" } else { "negative" };
        let _ = writeln!(
            s,
            "{k},\"The film was {word}, truly {word} (review {k}).\",{label}"
        );
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn a_text_csv_goes_through_the_pipeline_to_a_predicting_onnx() {
    let Some(model) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    reviews(&train, 48, 0);
    reviews(&test, 16, 100);
    let run = dir.path().join("run");
    let out = glora_ok(&[
        "pipeline",
        path_str(&model),
        "--data",
        path_str(&train),
        "--test-data",
        path_str(&test),
        "--method",
        "lora",
        "--targets",
        "query,value",
        "--max-length",
        "24",
        "--epochs",
        "3",
        "--batch",
        "8",
        "--lr",
        "3e-3",
        "-o",
        path_str(&run),
    ]);
    println!("{out}");
    let onnx = run.join("model.onnx");
    if let Some(py) = python_with_onnx() {
        onnx_check(&py, &onnx).unwrap();
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["labels"],
        serde_json::json!(["negative", "positive"])
    );
    assert_eq!(report["test_samples"], 16);
    let confusion: Vec<Vec<usize>> = serde_json::from_value(report["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<usize>(), 16);
    // The merged export has the base model's ops, and the head's MatMul and Add.
    let base = report["base_ops"].as_object().unwrap();
    let merged = report["merged_ops"].as_object().unwrap();
    for (op, n) in merged {
        let extra = usize::from(op == "MatMul" || op == "Add");
        assert_eq!(
            n.as_u64().unwrap() as usize,
            base.get(op).and_then(|v| v.as_u64()).unwrap_or(0) as usize + extra,
            "op {op}"
        );
    }
    assert_eq!(base.len(), merged.len());
    let labels = glora::verify::exported_labels(&onnx).unwrap().unwrap();
    assert_eq!(labels, ["negative", "positive"]);
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("| true \\ predicted | negative | positive |"),
        "{md}"
    );
    let predicted = glora_ok(&[
        "predict",
        path_str(&onnx),
        "--tokenizer",
        path_str(&model),
        "--data",
        path_str(&test),
        "--label-column",
        "label",
        "--max-length",
        "24",
    ]);
    println!("{predicted}");
    assert_eq!(
        predicted
            .lines()
            .filter(|l| l.contains("positive "))
            .count(),
        16
    );
    let acc_line = predicted.lines().last().unwrap();
    assert!(acc_line.starts_with("accuracy "), "{predicted}");
    // The pipeline's own test accuracy came from glora's executor; tract agrees.
    let ours = report["test_accuracy"].as_f64().unwrap();
    let theirs: f64 = acc_line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap();
    assert!((ours * 100.0 - theirs).abs() < 1e-3, "{ours} vs {theirs}");
    let one = glora_ok(&[
        "predict",
        path_str(&onnx),
        "--text",
        "The film was wonderful.",
        "--top",
        "1",
    ]);
    assert_eq!(one.lines().count(), 1, "{one}");
}

#[test]
fn bad_text_inputs_are_one_line_naming_file_and_line() {
    let Some(model) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ragged = d.join("ragged.csv");
    std::fs::write(
        &ragged,
        "text,label\nfine,positive\nno label here\nok,negative\n",
    )
    .unwrap();
    let runs = std::cell::Cell::new(0);
    let args = |data: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "pipeline",
            path_str(&model),
            "--data",
            path_str(data),
            "--method",
            "lora",
            "--epochs",
            "1",
            "-o",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        runs.set(runs.get() + 1);
        v.push(d.join(format!("run{}", runs.get())).display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| glora(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert_one_line_error(&run(args(&ragged, &[])), &["ragged.csv:3"]);
    let missing = d.join("missing.csv");
    std::fs::write(&missing, "body,label\nfine,positive\n").unwrap();
    let o = run(args(&missing, &["--text-column", "review"]));
    assert_one_line_error(&o, &["missing.csv", "review"]);
    let train = d.join("train.csv");
    reviews(&train, 8, 0);
    let test = d.join("test.csv");
    std::fs::write(&test, "id,text,label\n1,fine,positive\n2,meh,neutral\n").unwrap();
    let o = run(args(&train, &["--test-data", path_str(&test)]));
    assert_one_line_error(&o, &["test.csv:3", "neutral"]);
    assert!(
        !d.join(format!("run{}", runs.get()))
            .join("model.onnx")
            .exists()
    );
    // An ONNX model has no tokenizer beside it: the error says how to give one.
    if let Some(onnx) = fixture("models/paraphrase-minilm-l3.onnx") {
        let mut v = args(&train, &[]);
        v[1] = onnx.display().to_string();
        assert_one_line_error(&run(v), &["train.csv", "--tokenizer"]);
        // A run folder made from one model is not continued with another.
        let mut v = args(&train, &[]);
        let first = d.join("run1").display().to_string();
        *v.last_mut().unwrap() = first;
        v[1] = onnx.display().to_string();
        assert_one_line_error(&run(v), &["compiled from"]);
    }
}

/// The step-by-step commands on a JSONL file with other column names: compile, train
/// (masked-mean head), export, predict; the export names the labels training saw.
#[test]
fn jsonl_through_compile_train_export_and_predict() {
    let Some(model) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reviews.jsonl");
    let mut s = String::new();
    for k in 0..24usize {
        let (word, good) = review_word(k);
        let label = if good { "pos" } else { "neg" };
        let _ = writeln!(
            s,
            "{{\"review\": \"The film was {word}.\", \"stars\": \"{label}\"}}"
        );
    }
    std::fs::write(&data, s).unwrap();
    let net = dir.path().join("m.glora");
    glora_ok(&[
        "compile",
        path_str(&model),
        "--targets",
        "query,value",
        "-o",
        path_str(&net),
    ]);
    let cols = [
        "--text-column",
        "review",
        "--label-column",
        "stars",
        "--max-length",
        "16",
    ];
    let mut train = vec![
        "train",
        path_str(&net),
        "--data",
        path_str(&data),
        "--epochs",
        "1",
    ];
    train.extend(["--batch", "8", "--pool", "mean", "--mode", "lora"]);
    train.extend(cols);
    let out = glora_ok(&train);
    assert!(out.contains("texts"), "{out}");
    let onnx = dir.path().join("m.onnx");
    glora_ok(&["export", path_str(&net), "-o", path_str(&onnx)]);
    let labels = glora::verify::exported_labels(&onnx).unwrap().unwrap();
    assert_eq!(labels, ["neg", "pos"]);
    let p = glora_ok(&[
        "predict",
        path_str(&onnx),
        "--tokenizer",
        path_str(&model),
        "--text",
        "The film was lovely.",
        "--text",
        "The film was awful.",
    ]);
    assert_eq!(p.lines().count(), 2, "{p}");
    assert!(
        p.lines().all(|l| l.contains("neg ") && l.contains("pos ")),
        "{p}"
    );
}
