//! The CUDA backend against the CPU backend: every op and every GLoRA option forward
//! and backward in f32 (relative error ≤ 1e-5) and with TF32 products (≤ 1e-3), and
//! a whole supernet training step, whose loss and gradients pass through dozens of
//! ops with differently ordered sums (≤ 1e-3 in f32, ≤ 1e-2 with TF32). Skipped, with a notice, where no GPU can be
//! opened; `examples/gpu_check.sh` runs the same checks from a release binary.

use glora::exec::parity::run_op_parity;
use glora::exec::{CudaBackend, CudaOptions};
use glora::train::parity::run_step_parity;

fn open(tf32: bool) -> Option<CudaBackend> {
    match CudaBackend::new(
        0,
        CudaOptions {
            tf32,
            ..Default::default()
        },
    ) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("skipped: no GPU to check ({e})");
            None
        }
    }
}

fn check(tf32: bool, tolerance: f64, step_tolerance: f64) {
    let Some(gpu) = open(tf32) else { return };
    let mut failed = Vec::new();
    let cases = run_op_parity(&gpu, tolerance, 0, |c| {
        if !c.passed {
            failed.push(c.to_string());
        }
    });
    assert!(cases.len() > 100, "only {} cases", cases.len());
    let step = run_step_parity(gpu, step_tolerance, 0).expect("the step check builds");
    if !step.passed {
        failed.push(step.to_string());
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_op_and_a_training_step_match_the_cpu_in_f32() {
    check(false, 1e-5, 1e-3);
}

#[test]
fn every_op_and_a_training_step_match_the_cpu_with_tf32() {
    check(true, 1e-3, 1e-2);
}
