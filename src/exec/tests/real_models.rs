//! The real models of the fixtures, as imported and after the standard passes, run
//! at batch 1 and compared with tract running the original file. Skipped (with a
//! notice) where a model file is missing.

use super::*;
use crate::exec::run_cpu;

/// Largest |ours − tract| allowed, relative to the largest |tract| of the output.
const TOLERANCE: f64 = 1e-4;

fn check(path: &std::path::Path, optimise: bool) {
    let mut g = crate::onnx::import_file(path).unwrap();
    if optimise {
        crate::passes::optimize(&mut g, &CpuBackend).unwrap();
    }
    let shapes = crate::verify::concrete_input_shapes(&g, &[], 1, 16).unwrap();
    let inputs = crate::verify::random_inputs(&shapes, 7);
    let ours = run_cpu(&g, &inputs).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tract = crate::verify::TractModel::load(path, &inputs).unwrap();
    let theirs = tract.run(&inputs).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.shape(), b.shape(), "{}", path.display());
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let diff = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        let scale = y.iter().map(|v| v.abs()).fold(1.0, f64::max);
        assert!(
            diff <= TOLERANCE * scale,
            "{} (optimised: {optimise}): output {:?} differs from tract by {diff:e}",
            path.display(),
            a.shape()
        );
    }
}

#[test]
fn real_models_match_tract() {
    for p in [
        "fixtures:models/torch-vit-s.onnx",
        "fixtures:models/dinov2-vits14-focus.onnx",
        "fixtures:models/paraphrase-minilm-l3.onnx",
    ] {
        match model_path(p) {
            Some(path) => {
                check(&path, false);
                check(&path, true);
            }
            None => println!("{p}: not found, skipped"),
        }
    }
}
