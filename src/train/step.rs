//! One optimisation step on a training graph: run forward and backward under the
//! step's GLoRA config, check the loss and the gradients, and apply AdamW to each
//! tensor the config read (the others had no part in the step and keep their values
//! and moments, as parameters without a gradient do in the reference). The trainer
//! and `glora bench train` share it.
//!
//! On the CPU the update runs on host tensors, which are pushed back into the
//! session. On a GPU the parameters and moments stay in device memory: gradients are
//! checked there, one fused AdamW launch updates every tensor that took part in
//! place, and only the loss and the logits come back each step. The host copies
//! (values and optimiser state, which checkpoints and validation read) are brought
//! up to date when asked for.

use std::collections::HashMap;

use anyhow::{anyhow, bail};

use super::graph::{LABELS, TrainingGraph};
use super::mode::reads_tensor;
use super::optim::AdamW;
use crate::exec::cuda::{AdamWHyper, AdamWSlot};
use crate::exec::{Backend, CudaBackend, CudaValue, Device, DeviceSession};
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

/// A batch's inputs with the labels input added.
fn with_labels(mut x: Vec<(String, Tensor)>, y: Tensor) -> Vec<(String, Tensor)> {
    x.push((LABELS.to_string(), y));
    x
}

/// Fails on a loss that is not finite; the update is then skipped.
fn check_loss(loss: f32, step: u64) -> anyhow::Result<()> {
    if !loss.is_finite() {
        bail!(
            "non-finite loss at step {step} (loss {loss}); the last checkpoint is left as it was"
        );
    }
    Ok(())
}

/// The error for a step whose loss is finite but a gradient is not.
fn non_finite_gradient(step: u64, name: &str, at: usize, loss: f32) -> anyhow::Error {
    anyhow!(
        "non-finite loss at step {step}: its gradient with respect to {name} is not finite at element {at} (loss {loss}); the last checkpoint is left as it was"
    )
}

/// A training graph's session with its trainable tensors and optimiser.
pub struct Stepper {
    pub session: DeviceSession,
    /// The data inputs each step feeds.
    pub inputs: Vec<String>,
    pub batch: usize,
    pub names: Vec<String>,
    /// Host copies of the trainable tensors; on a GPU current after [`Stepper::named`].
    pub values: Vec<Tensor>,
    /// Host optimiser state; on a GPU current after [`Stepper::optimizer_state`].
    optimizer: AdamW,
    adapters: AdapterIndex,
    gpu: Option<GpuState>,
}

/// The trainable tensors and their AdamW moments in device memory.
struct GpuState {
    backend: CudaBackend,
    /// Clones of the session's weight values: they share its buffers, so an update
    /// in place is what the next step reads.
    params: Vec<CudaValue>,
    m: Vec<CudaValue>,
    v: Vec<CudaValue>,
    /// Updates each tensor has received.
    steps: Vec<u64>,
    /// Whether the host copies lag behind the device.
    host_stale: bool,
}

fn gpu_session(
    session: &mut DeviceSession,
) -> anyhow::Result<&mut crate::exec::Session<CudaBackend>> {
    match session {
        DeviceSession::Cuda(s) => Ok(s),
        DeviceSession::Cpu(_) => bail!("internal: GPU optimiser state on a CPU session"),
    }
}

impl GpuState {
    fn new(session: &mut DeviceSession, names: &[String]) -> anyhow::Result<GpuState> {
        let s = gpu_session(session)?;
        let backend = s.backend().clone();
        let mut params = Vec::with_capacity(names.len());
        for name in names {
            let p = s
                .param_mut(name)
                .ok_or_else(|| anyhow!("trainable tensor {name} is not a weight of the session"))?
                .clone();
            params.push(p);
        }
        let zeros = |p: &CudaValue| backend.zeros_like(p);
        let m = params.iter().map(zeros).collect::<Result<Vec<_>, _>>()?;
        let v = params.iter().map(zeros).collect::<Result<Vec<_>, _>>()?;
        Ok(GpuState {
            steps: vec![0; params.len()],
            backend,
            params,
            m,
            v,
            host_stale: false,
        })
    }
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
        device: &Device,
    ) -> anyhow::Result<Stepper> {
        let mut session = device.session(&tg.graph)?;
        let (names, values): (Vec<String>, Vec<Tensor>) = tg.params.into_iter().unzip();
        let gpu = match device {
            Device::Cuda(_) => Some(GpuState::new(&mut session, &names)?),
            Device::Cpu => None,
        };
        Ok(Stepper {
            session,
            inputs: tg.inputs,
            batch: tg.batch,
            names,
            values,
            optimizer,
            adapters,
            gpu,
        })
    }

    /// Replaces trainable tensor `i` (a resumed run's values).
    pub fn set_value(&mut self, i: usize, t: Tensor) -> anyhow::Result<()> {
        self.session.set_param(&self.names[i], &t)?;
        if let Some(gpu) = &mut self.gpu {
            // The upload made a new buffer; follow it.
            let s = gpu_session(&mut self.session)?;
            gpu.params[i] = s
                .param_mut(&self.names[i])
                .ok_or_else(|| anyhow!("trainable tensor {} vanished", self.names[i]))?
                .clone();
        }
        self.values[i] = t;
        Ok(())
    }

    /// Replaces the optimiser (a resumed run's state).
    pub fn set_optimizer(&mut self, optimizer: AdamW) -> anyhow::Result<()> {
        if let Some(gpu) = &mut self.gpu {
            let state: HashMap<String, Tensor> = optimizer.export_state().into_iter().collect();
            for (i, name) in self.names.iter().enumerate() {
                let (m, v, step) = match (
                    state.get(&format!("{name}.m")),
                    state.get(&format!("{name}.v")),
                    optimizer.step_count(name),
                ) {
                    (Some(m), Some(v), Some(step)) => (m, v, step),
                    _ => continue,
                };
                let shaped = |t: &Tensor| t.reshaped(self.values[i].shape().to_vec());
                gpu.m[i] = gpu.backend.upload(&shaped(m)?)?;
                gpu.v[i] = gpu.backend.upload(&shaped(v)?)?;
                gpu.steps[i] = step;
            }
        }
        self.optimizer = optimizer;
        Ok(())
    }

    /// The optimiser state as checkpoints store it.
    pub fn optimizer_state(&mut self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let Some(gpu) = &self.gpu else {
            return Ok(self.optimizer.export_state());
        };
        let mut out = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            if gpu.steps[i] == 0 {
                continue;
            }
            let flat = |v: &CudaValue| -> anyhow::Result<Tensor> {
                let t = gpu.backend.download(v)?;
                Ok(t.reshaped(vec![t.numel()])?)
            };
            out.push((format!("{name}.m"), flat(&gpu.m[i])?));
            out.push((format!("{name}.v"), flat(&gpu.v[i])?));
            out.push((
                format!("{name}.step"),
                Tensor::scalar_i64(gpu.steps[i] as i64),
            ));
        }
        Ok(out)
    }

    fn takes_part(&self, name: &str, config: Option<&ModelConfig>) -> bool {
        match (self.adapters.get(name), config) {
            (Some((layer, k, bias)), Some(c)) => {
                c.get(layer).is_some_and(|lc| reads_tensor(lc, *k, *bias))
            }
            _ => true,
        }
    }

    /// Step number `step` (1-based, for messages) on the batch `x` (named inputs) and
    /// labels `y`.
    pub fn step(
        &mut self,
        x: Vec<(String, Tensor)>,
        y: Tensor,
        config: Option<&ModelConfig>,
        lr: f64,
        step: u64,
    ) -> anyhow::Result<StepOutput> {
        if let Some(c) = config {
            self.session.set_glora_configs(c)?;
        }
        if self.gpu.is_some() {
            return self.step_on_gpu(x, y, config, lr, step);
        }
        let mut out = self.session.run(&with_labels(x, y))?;
        let loss = out[0].to_f32_vec()[0];
        check_loss(loss, step)?;
        // A step that overflowed anywhere changes nothing: check every gradient first.
        for (i, name) in self.names.iter().enumerate() {
            if let Some(bad) = out[2 + i].to_f32_vec().iter().position(|g| !g.is_finite()) {
                return Err(non_finite_gradient(step, name, bad, loss));
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

    fn step_on_gpu(
        &mut self,
        x: Vec<(String, Tensor)>,
        y: Tensor,
        config: Option<&ModelConfig>,
        lr: f64,
        step: u64,
    ) -> anyhow::Result<StepOutput> {
        let takes_part: Vec<bool> = self
            .names
            .iter()
            .map(|n| self.takes_part(n, config))
            .collect();
        let hyper = {
            let c = self.optimizer.config();
            AdamWHyper {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
            }
        };
        let names = &self.names;
        let s = gpu_session(&mut self.session)?;
        let out = s.run_values(&with_labels(x, y))?;
        let Some(gpu) = self.gpu.as_mut() else {
            bail!("internal: no GPU optimiser state");
        };
        let [loss, logits, grads @ ..] = out.as_slice() else {
            bail!("the training graph gives no loss and logits");
        };
        let loss = gpu.backend.download(loss)?.to_f32_vec()[0];
        check_loss(loss, step)?;
        let grads: Vec<&CudaValue> = grads.iter().collect();
        let bad = gpu.backend.first_non_finite(&grads)?;
        if let Some((i, at)) = bad
            .iter()
            .enumerate()
            .find_map(|(i, b)| b.map(|at| (i, at)))
        {
            return Err(non_finite_gradient(step, &names[i], at, loss));
        }
        let mut slots = Vec::new();
        for (i, (((param, m), v), count)) in gpu
            .params
            .iter_mut()
            .zip(gpu.m.iter_mut())
            .zip(gpu.v.iter_mut())
            .zip(gpu.steps.iter_mut())
            .enumerate()
        {
            if !takes_part[i] {
                continue;
            }
            *count += 1;
            slots.push(AdamWSlot {
                param,
                grad: grads[i],
                m,
                v,
                step: *count,
            });
        }
        gpu.backend
            .adamw_step(&mut slots, &hyper)
            .map_err(|e| anyhow!("step {step}: {e}"))?;
        gpu.host_stale = true;
        let logits = gpu.backend.download(logits)?;
        Ok(StepOutput { loss, logits })
    }

    /// The trainable tensors by name (on a GPU, downloaded first).
    pub fn named(&mut self) -> anyhow::Result<Vec<(String, Tensor)>> {
        if let Some(gpu) = &mut self.gpu
            && gpu.host_stale
        {
            for (i, p) in gpu.params.iter().enumerate() {
                self.values[i] = gpu.backend.download(p)?;
            }
            gpu.host_stale = false;
        }
        Ok(self
            .names
            .iter()
            .cloned()
            .zip(self.values.iter().cloned())
            .collect())
    }
}
