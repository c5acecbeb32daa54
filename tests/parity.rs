//! The backend parity suite (`glora::exec::parity`, `glora::train::parity`) checked on the CPU backend: the
//! CPU against itself passes every op case and the training step; wrapper backends
//! that perturb one op's output, swap one GLoRA option, fail or panic on one op make
//! exactly the cases of that op fail, so the suite provably detects such errors.

use std::collections::BTreeSet;

use glora::exec::parity::{DEFAULT_OP_TOLERANCE, ParityCase, op_cases, run_op_parity};
use glora::exec::{Backend, CpuBackend, CpuValue, ExecError};
use glora::glora::{DeOption, LayerConfig};
use glora::ir::{GloraLinearAttrs, Node, Tensor};
use glora::train::parity::{DEFAULT_STEP_TOLERANCE, run_step_parity};

const SEED: u64 = 11;

/// What a [`Faulty`] backend does wrong.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Multiplies every output of the named op by `1 + rel`.
    Scale { op: &'static str, rel: f32 },
    /// Runs GLoRA forwards whose D term is `vector` as if it were `constant`.
    SwapGloraD,
    /// Returns an error for the named op.
    Fail { op: &'static str },
    /// Panics on the named op.
    Panic { op: &'static str },
    /// Multiplies every float output of every op by `1 + rel·u`, `u` in [-1, 1]
    /// varying per element: the size of rounding differences between backends.
    Noise { rel: f32 },
}

/// The CPU backend with one deliberate fault.
#[derive(Clone, Copy, Debug)]
struct Faulty(Fault);

/// `v` with element `i` multiplied by `factor(i)`.
fn scaled(v: &CpuValue, factor: impl Fn(usize) -> f32) -> Result<CpuValue, ExecError> {
    let t = CpuBackend.download(v)?;
    let Some(values) = t.as_f32() else {
        return Ok(v.clone());
    };
    let values = values
        .iter()
        .enumerate()
        .map(|(i, x)| x * factor(i))
        .collect();
    let t = Tensor::from_f32(t.shape().to_vec(), values)
        .map_err(|e| ExecError::Graph(e.to_string()))?;
    CpuBackend.upload(&t)
}

impl Backend for Faulty {
    type Value = CpuValue;

    fn name(&self) -> &'static str {
        "faulty"
    }

    fn upload(&self, t: &Tensor) -> Result<CpuValue, ExecError> {
        CpuBackend.upload(t)
    }

    fn download(&self, v: &CpuValue) -> Result<Tensor, ExecError> {
        CpuBackend.download(v)
    }

    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&CpuValue>],
    ) -> Result<Vec<CpuValue>, ExecError> {
        let op = node.op.name();
        match self.0 {
            Fault::Fail { op: target } if op == target => Err(ExecError::Node {
                node: node.name.clone(),
                op: op.to_string(),
                msg: "deliberately unsupported".into(),
            }),
            Fault::Panic { op: target } if op == target => panic!("deliberate panic in {op}"),
            Fault::Scale { op: target, rel } if op == target => CpuBackend
                .run_node(node, inputs)?
                .iter()
                .map(|v| scaled(v, |_| 1.0 + rel))
                .collect(),
            Fault::Noise { rel } => noisy(CpuBackend.run_node(node, inputs)?, rel),
            _ => CpuBackend.run_node(node, inputs),
        }
    }

    fn run_glora_linear(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CpuValue>],
    ) -> Result<CpuValue, ExecError> {
        let mut config = *config;
        if matches!(self.0, Fault::SwapGloraD) && config.d == DeOption::Vector {
            config.d = DeOption::Constant;
        }
        let y = CpuBackend.run_glora_linear(node, attrs, &config, inputs)?;
        match self.0 {
            Fault::Noise { rel } => Ok(noisy(vec![y], rel)?.remove(0)),
            _ => Ok(y),
        }
    }

    fn run_glora_linear_grad(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CpuValue>],
    ) -> Result<Vec<CpuValue>, ExecError> {
        let grads = CpuBackend.run_glora_linear_grad(node, attrs, config, inputs)?;
        match self.0 {
            Fault::Noise { rel } => noisy(grads, rel),
            _ => Ok(grads),
        }
    }
}

/// Relative noise of size up to `rel` on every element, from a fixed hash of its
/// index so that runs repeat.
fn noisy(values: Vec<CpuValue>, rel: f32) -> Result<Vec<CpuValue>, ExecError> {
    let u = |i: usize| {
        let h = (i as u64 ^ 0x5851_f42d_4c95_7f2d).wrapping_mul(0x2545_f491_4f6c_dd1d);
        (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    values
        .iter()
        .map(|v| scaled(v, |i| 1.0 + rel * u(i)))
        .collect()
}

fn failing(results: &[ParityCase]) -> BTreeSet<String> {
    results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.clone())
        .collect()
}

fn names_where(results: &[ParityCase], f: impl Fn(&str) -> bool) -> BTreeSet<String> {
    results
        .iter()
        .filter(|c| f(&c.name))
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn cpu_against_itself_passes_every_case() {
    let mut seen = 0;
    let results = run_op_parity(&CpuBackend, DEFAULT_OP_TOLERANCE, SEED, |_| seen += 1);
    assert_eq!(seen, results.len(), "progress sees every case");
    let failed: Vec<String> = results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.to_string())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(results.iter().all(|c| c.error.is_none()));
}

#[test]
fn the_suite_covers_every_op_a_training_backend_runs() {
    let cases = op_cases(SEED).expect("cases build");
    let count = |op: &str| {
        cases
            .iter()
            .filter(|c| c.name.starts_with(&format!("{op}/")))
            .count()
    };
    for op in [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Neg",
        "Abs",
        "Exp",
        "Log",
        "Erf",
        "Tanh",
        "Relu",
        "Sigmoid",
        "Clip",
        "Gelu",
        "Softmax",
        "LayerNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Concat",
        "Split",
        "Gather",
        "Slice",
        "Expand",
        "Where",
        "Cast",
        "MatMul",
        "Gemm",
        "Conv",
        "UnaryGrad",
        "SoftmaxGrad",
        "LayerNormalizationGrad",
        "GatherGrad",
        "SliceGrad",
        "ConvWeightGrad",
        "SoftmaxCrossEntropy",
        "SoftmaxCrossEntropyGrad",
        "GloraLinear",
        "GloraLinearGrad",
    ] {
        assert!(count(op) > 0, "no case for {op}");
    }
    assert_eq!(
        count("UnaryGrad"),
        11,
        "nine elementwise kinds and two GELU forms"
    );
    assert_eq!(count("Gemm"), 5);
    // 21 configs × 2 layouts × 2 bias settings; backward also × 3 (dx, y) variants.
    assert_eq!(count("GloraLinear"), 84);
    assert_eq!(count("GloraLinearGrad"), 252);
    for option in [
        "A=LoRA_3",
        "A=LoRA_6",
        "B=constant",
        "C=LoRA_3",
        "C=vector",
        "E=constant",
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c.name.starts_with("GloraLinearGrad/out_in/no_bias/dx")
                    && c.name.contains(option)),
            "no backward case with {option}"
        );
    }
}

#[test]
fn a_small_error_in_softmax_fails_exactly_the_softmax_cases() {
    let faulty = Faulty(Fault::Scale {
        op: "Softmax",
        rel: 1e-3,
    });
    let results = run_op_parity(&faulty, DEFAULT_OP_TOLERANCE, SEED, |_| {});
    let expected = names_where(&results, |n| n.starts_with("Softmax/"));
    assert_eq!(expected.len(), 4);
    assert_eq!(failing(&results), expected);
    for c in results.iter().filter(|c| !c.passed) {
        assert!(c.error.is_none(), "{c}");
        // Every output scaled by 1.001: the error is 1e-3 of the largest value.
        assert!((c.max_rel_err - 1e-3).abs() < 1e-4, "{c}");
        assert!(c.worst.is_some());
    }
}

#[test]
fn a_swapped_glora_option_fails_exactly_the_cases_it_changes() {
    let results = run_op_parity(
        &Faulty(Fault::SwapGloraD),
        DEFAULT_OP_TOLERANCE,
        SEED,
        |_| {},
    );
    // D scales the base bias, so only forward cases with a bias and D = vector change.
    let expected = names_where(&results, |n| {
        n.starts_with("GloraLinear/") && n.contains("/bias/") && n.contains("D=vector")
    });
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(failing(&results), expected);
}

#[test]
fn backend_errors_and_panics_are_failed_cases() {
    let results = run_op_parity(
        &Faulty(Fault::Fail { op: "MatMul" }),
        DEFAULT_OP_TOLERANCE,
        SEED,
        |_| {},
    );
    let expected = names_where(&results, |n| n.starts_with("MatMul/"));
    assert_eq!(failing(&results), expected);
    for c in results.iter().filter(|c| !c.passed) {
        let e = c.error.as_deref().unwrap_or_default();
        assert!(e.contains("deliberately unsupported"), "{c}");
        assert!(c.max_rel_err.is_infinite());
    }

    let results = run_op_parity(
        &Faulty(Fault::Panic { op: "Gemm" }),
        DEFAULT_OP_TOLERANCE,
        SEED,
        |_| {},
    );
    let expected = names_where(&results, |n| n.starts_with("Gemm/"));
    assert_eq!(failing(&results), expected);
    for c in results.iter().filter(|c| !c.passed) {
        let e = c.error.as_deref().unwrap_or_default();
        assert!(
            e.contains("faulty backend panicked") && e.contains("deliberate panic"),
            "{c}"
        );
    }
}

#[test]
fn rounding_level_noise_passes_the_op_suite() {
    let results = run_op_parity(
        &Faulty(Fault::Noise { rel: 1e-6 }),
        DEFAULT_OP_TOLERANCE,
        SEED,
        |_| {},
    );
    let failed: Vec<String> = results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.to_string())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn step_parity_passes_on_the_cpu() {
    let ok = run_step_parity(CpuBackend, DEFAULT_STEP_TOLERANCE, SEED).expect("step builds");
    assert!(ok.passed && ok.error.is_none(), "{ok}");
    assert_eq!(
        ok.max_rel_err, 0.0,
        "the CPU backend repeats itself exactly"
    );
}

#[test]
fn step_parity_tolerates_rounding_noise_in_every_op() {
    // About ten units in the last place on every output of every op.
    for seed in [SEED, 1, 2] {
        let noisy = Faulty(Fault::Noise { rel: 1e-6 });
        let case = run_step_parity(noisy, DEFAULT_STEP_TOLERANCE, seed).expect("step builds");
        assert!(case.passed, "seed {seed}: {case}");
        assert!(
            case.max_rel_err > 0.0,
            "seed {seed}: the noise reached no output"
        );
    }
}

#[test]
fn step_parity_fails_for_a_small_error_in_one_op() {
    let faulty = Faulty(Fault::Scale {
        op: "Softmax",
        rel: 1e-3,
    });
    let bad = run_step_parity(faulty, DEFAULT_STEP_TOLERANCE, SEED).expect("step builds");
    assert!(!bad.passed && bad.error.is_none(), "{bad}");
    assert!(bad.max_rel_err > DEFAULT_STEP_TOLERANCE, "{bad}");
    assert!(bad.worst.is_some(), "{bad}");

    let faulty = Faulty(Fault::SwapGloraD);
    let bad = run_step_parity(faulty, DEFAULT_STEP_TOLERANCE, SEED).expect("step builds");
    assert!(!bad.passed, "{bad}");
}

#[test]
fn step_parity_reports_a_backend_error_as_a_failed_case() {
    let failing = Faulty(Fault::Fail { op: "Gelu" });
    let bad = run_step_parity(failing, DEFAULT_STEP_TOLERANCE, SEED).expect("step builds");
    assert!(!bad.passed && bad.max_rel_err.is_infinite(), "{bad}");
    let e = bad.error.as_deref().unwrap_or_default();
    assert!(
        e.contains("Gelu") && e.contains("deliberately unsupported"),
        "{bad}"
    );

    let panicking = Faulty(Fault::Panic {
        op: "LayerNormalization",
    });
    let bad = run_step_parity(panicking, DEFAULT_STEP_TOLERANCE, SEED).expect("step builds");
    let e = bad.error.as_deref().unwrap_or_default();
    assert!(!bad.passed && e.contains("panicked"), "{bad}");
}
