//! The real exports from the fixtures, end to end through the `glora` binary: our
//! executor against tract, convert-then-verify at two batch sizes, the linear layers
//! that inspect reports, and the strict ONNX checker on what convert writes.

mod common;

use common::*;

fn max_abs(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("OK:") || l.starts_with("FAILED:"))
        .unwrap_or_else(|| panic!("no verdict in:\n{out}"));
    line.split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure in '{line}'"))
}

fn verify_ours(model: &str, extra: &[&str]) {
    let Some(m) = fixture(model) else { return };
    let mut args = vec![
        "verify",
        m.to_str().unwrap(),
        "--ours",
        "--tolerance",
        "1e-4",
    ];
    args.extend_from_slice(extra);
    let o = glora(&args);
    let out = stdout(&o);
    println!("{out}");
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(max_abs(&out) <= 1e-4);
}

fn convert_and_verify(model: &str, extra: &[&str]) {
    let Some(m) = fixture(model) else { return };
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("converted.onnx");
    let o = glora(&["convert", m.to_str().unwrap(), "-o", conv.to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    for batch in ["1", "2"] {
        let mut args = vec![
            "verify",
            m.to_str().unwrap(),
            conv.to_str().unwrap(),
            "--tolerance",
            "1e-5",
            "--batch",
            batch,
        ];
        args.extend_from_slice(extra);
        let o = glora(&args);
        let out = stdout(&o);
        println!("{out}");
        assert!(o.status.success(), "batch {batch}: {out}\n{}", stderr(&o));
    }
    if let Some(py) = python_with_onnx() {
        onnx_check(&py, &conv)
            .unwrap_or_else(|e| panic!("onnx checker rejects our export of {model}: {e}"));
    }
}

fn linear_layers(model: &str) -> Option<usize> {
    let m = fixture(model)?;
    let o = glora(&["inspect", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("linear layers:"))
        .expect("inspect prints the linear layer count");
    Some(
        line.trim_start_matches("linear layers:")
            .trim()
            .parse()
            .unwrap(),
    )
}

const DINO: &str = "models/dinov2-vits14-focus.onnx";
const MINILM: &str = "models/paraphrase-minilm-l3.onnx";
const TORCH_VIT: &str = "models/torch-vit-s.onnx";

#[test]
fn dinov2_ours_matches_tract() {
    verify_ours(DINO, &[]);
}

#[test]
fn minilm_ours_matches_tract() {
    verify_ours(MINILM, &["--seq", "12"]);
}

#[test]
fn torch_vit_ours_matches_tract() {
    verify_ours(TORCH_VIT, &["--batch", "2"]);
}

#[test]
fn dinov2_convert_keeps_results() {
    convert_and_verify(DINO, &[]);
}

#[test]
fn minilm_convert_keeps_results() {
    convert_and_verify(MINILM, &["--seq", "9"]);
}

#[test]
fn torch_vit_convert_keeps_results() {
    convert_and_verify(TORCH_VIT, &[]);
}

#[test]
fn inspect_finds_the_linear_layers() {
    if let Some(n) = linear_layers(DINO) {
        assert_eq!(n, 72);
    }
    if let Some(n) = linear_layers(MINILM) {
        assert_eq!(n, 18);
    }
    if let Some(n) = linear_layers(TORCH_VIT) {
        // 12 blocks × (qkv, proj, fc1, fc2) and the Gemm head.
        assert_eq!(n, 49);
    }
}

/// DINOv2 resamples its position embeddings from the input's size: compiled for
/// 56-px images, its adapted graph and its export (re-loaded from glora.json, which
/// records the size) agree with tract on 56-px inputs; a model whose position
/// embedding is a fixed constant (torch-vit-s) is refused with the size named.
#[test]
fn dinov2_compiles_exports_and_verifies_at_56_px() {
    let Some(m) = fixture(DINO) else { return };
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("d.glora");
    let model = dir.path().join("d56.onnx");
    let config = dir.path().join("c.json");
    glora_ok(&[
        "compile",
        m.to_str().unwrap(),
        "-o",
        path_str(&net),
        "--image-size",
        "56",
        "--random-adapters",
        "--targets",
        "layer\\.(0|11)\\.",
    ]);
    let manifest = std::fs::read_to_string(net.join("glora.json")).unwrap();
    assert!(manifest.contains("\"image_size\""), "{manifest}");
    glora_ok(&[
        "export",
        path_str(&net),
        "--random-config",
        "--save-config",
        path_str(&config),
        "-o",
        path_str(&model),
    ]);
    let out = glora_ok(&[
        "verify",
        path_str(&model),
        "--against",
        path_str(&net),
        "--config",
        path_str(&config),
        "--shape",
        "input_image=2x3x56x56",
    ]);
    assert!(max_abs(&out) <= 1e-4, "{out}");

    let Some(vit) = fixture(TORCH_VIT) else {
        return;
    };
    let o = glora(&[
        "compile",
        vit.to_str().unwrap(),
        "-o",
        path_str(&dir.path().join("v.glora")),
        "--image-size",
        "56",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("does not take 56x56 images"), "{err}");
}
