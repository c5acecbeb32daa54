//! Backend parity of a whole supernet training step: the tiny-digits ViT with GLoRA
//! on every linear layer, random non-zero adapters, a random config and a fresh head,
//! built as a training graph and run in a [`Session`] on the backend under test and
//! on the CPU backend with the same inputs. The loss, the logits and every gradient
//! are compared with [`crate::exec::parity`]'s error measure; the op-by-op checks
//! live there, below the model builder, the passes and the training graph this
//! check needs.
//!
//! The model is set up so that no compared output is rounding noise: the weights are
//! jittered away from the builder's unit LayerNorm scales and zero shifts, and layers
//! that write the residual stream never take the B or E `constant` option, whose
//! gradient vanishes identically there.

use anyhow::{Context, anyhow};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::exec::parity::{ParityCase, compare_outputs, guarded};
use crate::exec::{Backend, CpuBackend, Session};
use crate::glora::{
    AbOption, AdapterTensors, DeOption, LayerConfig, LayerShape, ModelConfig, SearchSpace,
};
use crate::ir::infer::infer_types;
use crate::ir::{Op, Tensor};

/// Tolerance of [`run_step_parity`]: a step chains a few hundred ops, so rounding
/// differences add up. A relative difference of 1e-6 on every output of every op
/// stays below 1e-4 on the step; an error of 1e-3 in one op's output (a softmax
/// whose rows do not sum to one) exceeds the tolerance.
pub const DEFAULT_STEP_TOLERANCE: f64 = 1e-3;

/// Batch size of the step check.
const STEP_BATCH: usize = 8;
const STEP_CLASSES: usize = 10;
/// LoRA ranks of the step's search space; factors are stored at the largest.
const STEP_RANKS: [usize; 2] = [2, 4];
const STEP_LABEL_SMOOTHING: f32 = 0.1;

/// The step check's training graph, its GLoRA config and its inputs.
struct StepSetup {
    graph: crate::ir::Graph,
    config: ModelConfig,
    inputs: Vec<(String, Tensor)>,
}

/// Every adapter entry non-zero, magnitudes in [0.01, 0.05]: each option of each
/// term then changes the step, while activations through the blocks stay in range.
fn random_adapters(
    layer: &str,
    shape: LayerShape,
    rank: usize,
    rng: &mut StdRng,
) -> anyhow::Result<AdapterTensors> {
    let mut tensors = Vec::with_capacity(8);
    for s in AdapterTensors::expected_shapes(shape, rank) {
        let n: usize = s.iter().product();
        let v = (0..n)
            .map(|_| {
                let m: f32 = rng.random_range(0.01..=0.05);
                if rng.random_bool(0.5) { m } else { -m }
            })
            .collect();
        tensors.push(Tensor::from_f32(s, v)?);
    }
    let tensors: [Tensor; 8] = tensors
        .try_into()
        .map_err(|_| anyhow!("expected eight adapter tensors"))?;
    Ok(AdapterTensors::from_tensors(layer, shape, rank, tensors)?)
}

/// Adds uniform noise in [-0.1, 0.1] to every float weight of `g` (scalars aside).
/// A freshly built ViT has unit LayerNorm scales and zero shifts, so the rows a
/// LayerNorm feeds into a linear layer sum to zero and the gradients of the B
/// `vector` and `constant` options vanish up to rounding; its small weights also
/// make attention nearly uniform. Both would leave outputs whose reference is pure
/// rounding noise, which no relative measure can compare.
fn jitter_weights(g: &mut crate::ir::Graph, rng: &mut StdRng) -> anyhow::Result<()> {
    for id in g.node_ids() {
        let node = g.node_mut(id);
        let Op::Const(t) = &node.op else { continue };
        let Some(values) = t.as_f32().filter(|v| v.len() > 1) else {
            continue;
        };
        let values = values
            .iter()
            .map(|v| v + rng.random_range(-0.1f32..0.1))
            .collect();
        node.op = Op::Const(Tensor::from_f32(t.shape().to_vec(), values)?);
    }
    Ok(())
}

/// Whether a layer of the ViT adds its output to the residual stream. Every reader
/// of that stream is a LayerNorm or another residual add, so a constant added to all
/// of its features changes nothing downstream.
fn writes_residual(layer: &str) -> bool {
    layer.ends_with(".attn.proj") || layer.ends_with(".mlp.fc2")
}

/// A random config for `layer`, except that layers writing the residual stream take
/// `vector` where `constant` was drawn for B or E: those two options add one
/// constant to every output feature, so their gradient there vanishes identically
/// and the reference would hold nothing but rounding noise.
fn step_layer_config(space: &SearchSpace, layer: &str, rng: &mut StdRng) -> LayerConfig {
    let mut config = space.sample(rng);
    if writes_residual(layer) {
        if config.b == AbOption::Constant {
            config.b = AbOption::Vector;
        }
        if config.e == DeOption::Constant {
            config.e = DeOption::Vector;
        }
    }
    config
}

/// The tiny-digits ViT with GLoRA on every linear layer and a fresh head, as a
/// training graph at batch 8, with random adapters, config, images and labels.
fn step_setup(seed: u64) -> anyhow::Result<StepSetup> {
    use crate::models::{VitConfig, build_vit};
    use crate::passes;

    let vit = VitConfig {
        classes: None,
        ..VitConfig::tiny_digits()
    };
    let mut g = build_vit(&vit, seed)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    jitter_weights(&mut g, &mut rng)?;
    passes::optimize(&mut g, &CpuBackend).context("simplifying the ViT")?;
    let space = SearchSpace::new(STEP_RANKS)?;
    let layers = passes::find_linear_layers(&g);
    let adapted = passes::insert_glora(&mut g, &layers, space.max_rank(), seed)?;
    for layer in &adapted {
        let t = random_adapters(&layer.name, layer.shape, space.max_rank(), &mut rng)?;
        passes::set_adapter_tensors(&mut g, &layer.name, &t)?;
    }
    infer_types(&mut g)?;
    let features = passes::default_features(&g)?;
    let spec = passes::plan_head(&g, &features, passes::Pool::Cls, STEP_CLASSES)?;
    let (weight, bias) = passes::init_head(&spec, seed)?;
    passes::attach_head(&mut g, &spec, weight, bias)?;
    let image = [vit.channels, vit.image, vit.image];
    let shapes = crate::train::graph::image_shapes(&g, STEP_BATCH, &image)?;
    let tg = crate::train::graph::build_training_graph(&g, &shapes, STEP_LABEL_SMOOTHING)?;
    let config: ModelConfig = adapted
        .iter()
        .map(|l| (l.name.clone(), step_layer_config(&space, &l.name, &mut rng)))
        .collect();
    let mut shape = vec![STEP_BATCH];
    shape.extend_from_slice(&image);
    let n: usize = shape.iter().product();
    let pixels = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let labels = (0..STEP_BATCH)
        .map(|_| rng.random_range(0..STEP_CLASSES as i64))
        .collect();
    let inputs = vec![
        (tg.inputs[0].clone(), Tensor::from_f32(shape, pixels)?),
        (
            crate::train::graph::LABELS.to_string(),
            Tensor::from_i64(vec![STEP_BATCH], labels)?,
        ),
    ];
    Ok(StepSetup {
        graph: tg.graph,
        config,
        inputs,
    })
}

/// Runs the step on `backend`: a session, the config, one run.
fn run_step_on<B: Backend>(backend: B, setup: &StepSetup) -> Result<Vec<Tensor>, String> {
    let name = backend.name();
    guarded(&format!("the {name} backend"), || {
        let mut session = Session::new(&setup.graph, backend).map_err(|e| e.to_string())?;
        session
            .set_glora_configs(&setup.config)
            .map_err(|e| e.to_string())?;
        session.run(&setup.inputs).map_err(|e| e.to_string())
    })
}

/// Name of the step check's case.
pub const STEP_CASE: &str = "TrainingStep/vit-tiny-digits glora batch 8";

/// One supernet training step of the tiny-digits ViT (GLoRA on every linear layer
/// with random non-zero adapters, a random config from ranks {2, 4}, a head,
/// batch 8, label smoothing 0.1) run as a session on `backend` and on the CPU
/// backend with the same inputs; compares the loss, the logits and every gradient.
/// Errors only when the check cannot be set up (the graph does not build or the
/// CPU reference fails); a failure of `backend` is a failed case.
pub fn run_step_parity<B: Backend>(
    backend: B,
    tolerance: f64,
    seed: u64,
) -> anyhow::Result<ParityCase> {
    let setup = step_setup(seed).context("building the training step")?;
    let want = run_step_on(CpuBackend, &setup).map_err(|e| anyhow!("the CPU reference: {e}"))?;
    let names = Session::new(&setup.graph, CpuBackend)?.output_names();
    let got = run_step_on(backend, &setup);
    Ok(ParityCase::compared(
        STEP_CASE,
        tolerance,
        got.and_then(|got| compare_outputs(&names, &got, &want)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::parity::op_cases;

    #[test]
    fn op_cases_cover_every_op_of_the_training_step() {
        let setup = step_setup(5).unwrap();
        let ops: std::collections::BTreeSet<&str> = setup
            .graph
            .node_ids()
            .into_iter()
            .map(|id| setup.graph.node(id).op.name())
            .filter(|op| !matches!(*op, "Input" | "Const" | "Param"))
            .collect();
        let cases = op_cases(5).unwrap();
        for op in ops {
            assert!(
                cases.iter().any(|c| c.op.node().op.name() == op),
                "the step runs {op}, which no op case checks"
            );
        }
    }

    /// The step has no output whose reference is rounding noise: every gradient is
    /// either exactly zero (an adapter entry the config does not read) or within a
    /// few orders of magnitude of the largest one.
    #[test]
    fn step_outputs_are_zero_or_far_above_rounding() {
        for seed in [0, 11, 12345] {
            let setup = step_setup(seed).unwrap();
            let outs = run_step_on(CpuBackend, &setup).unwrap();
            let maxima: Vec<f64> = outs
                .iter()
                .map(|t| t.to_f64_vec().iter().fold(0f64, |m, v| m.max(v.abs())))
                .collect();
            let largest = maxima[2..].iter().copied().fold(0f64, f64::max);
            assert!(maxima[0] > 0.1 && maxima[1] > 0.0, "loss and logits");
            for (i, m) in maxima.iter().enumerate().skip(2) {
                assert!(
                    *m == 0.0 || *m > 1e-5 * largest,
                    "seed {seed}: gradient output {i} peaks at {m:e}, the largest at {largest:e}"
                );
            }
        }
    }
}
