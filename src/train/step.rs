//! One optimisation step on a training graph: run forward and backward under the
//! step's GLoRA config, check the loss, apply AdamW on the host to each tensor the
//! config read (the others had no part in the step and keep their values and moments,
//! as parameters without a gradient do in the reference), and push the updated
//! tensors back into the session. The trainer and `glora bench train` share it.

use std::collections::HashMap;

use anyhow::{anyhow, bail};

use super::graph::{LABELS, TrainingGraph};
use super::mode::reads_tensor;
use super::optim::AdamW;
use crate::exec::{CpuBackend, Session};
use crate::glora::{ModelConfig, tensor_names};
use crate::ir::Tensor;
use crate::supernet::Supernet;

/// Which adapter tensor (layer, index 0..8, whether the layer has a base bias) each
/// adapter value name is.
pub type AdapterIndex = HashMap<String, (String, usize, bool)>;

pub fn adapter_index(net: &Supernet) -> AdapterIndex {
    let mut m = HashMap::new();
    for l in &net.layers {
        for (k, name) in tensor_names(&l.name).into_iter().enumerate() {
            m.insert(name, (l.name.clone(), k, l.shape.has_bias));
        }
    }
    m
}

/// A training graph's session with its trainable tensors and optimiser.
pub struct Stepper {
    pub session: Session<CpuBackend>,
    pub input: String,
    pub batch: usize,
    pub names: Vec<String>,
    pub values: Vec<Tensor>,
    pub optimizer: AdamW,
    adapters: AdapterIndex,
}

/// What one step computed (before its update).
pub struct StepOutput {
    pub loss: f32,
    pub logits: Tensor,
}

impl Stepper {
    pub fn new(
        tg: TrainingGraph,
        optimizer: AdamW,
        adapters: AdapterIndex,
    ) -> anyhow::Result<Stepper> {
        let session = Session::new(&tg.graph, CpuBackend)?;
        let (names, values) = tg.params.into_iter().unzip();
        Ok(Stepper {
            session,
            input: tg.input,
            batch: tg.batch,
            names,
            values,
            optimizer,
            adapters,
        })
    }

    /// Replaces trainable tensor `i` (a resumed run's values).
    pub fn set_value(&mut self, i: usize, t: Tensor) -> anyhow::Result<()> {
        self.session.set_param(&self.names[i], &t)?;
        self.values[i] = t;
        Ok(())
    }

    fn takes_part(&self, name: &str, config: Option<&ModelConfig>) -> bool {
        match (self.adapters.get(name), config) {
            (Some((layer, k, bias)), Some(c)) => {
                c.get(layer).is_some_and(|lc| reads_tensor(lc, *k, *bias))
            }
            _ => true,
        }
    }

    /// Step number `step` (1-based, for messages) on images `x` and labels `y`.
    pub fn step(
        &mut self,
        x: Tensor,
        y: Tensor,
        config: Option<&ModelConfig>,
        lr: f64,
        step: u64,
    ) -> anyhow::Result<StepOutput> {
        if let Some(c) = config {
            self.session.set_glora_configs(c)?;
        }
        let mut out = self
            .session
            .run(&[(self.input.clone(), x), (LABELS.to_string(), y)])?;
        let loss = out[0].to_f32_vec()[0];
        if !loss.is_finite() {
            bail!(
                "non-finite loss at step {step} (loss {loss}); the last checkpoint is left as it was"
            );
        }
        // A step that overflowed anywhere changes nothing: check every gradient first.
        for (i, name) in self.names.iter().enumerate() {
            if let Some(bad) = out[2 + i].to_f32_vec().iter().position(|g| !g.is_finite()) {
                bail!(
                    "non-finite loss at step {step}: its gradient with respect to {name} is not finite at element {bad} (loss {loss}); the last checkpoint is left as it was"
                );
            }
        }
        for i in 0..self.names.len() {
            if !self.takes_part(&self.names[i], config) {
                continue;
            }
            let grad = &out[2 + i];
            self.optimizer
                .step_tensor(&self.names[i], &mut self.values[i], grad, lr)
                .map_err(|e| anyhow!("step {step}: {e}"))?;
            self.session.set_param(&self.names[i], &self.values[i])?;
        }
        let logits = out.swap_remove(1);
        Ok(StepOutput { loss, logits })
    }

    /// The trainable tensors by name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .cloned()
            .zip(self.values.iter().cloned())
            .collect()
    }
}
