//! AdamW with decoupled weight decay, as PyTorch's `torch.optim.AdamW` defines it, on
//! host-side f32 parameters.
//!
//! The trainer passes each trainable tensor by name with its gradient from the backward
//! pass and the learning rate from [`super::schedule`]; the optimiser updates the values
//! in place and keeps per-name moments. Checkpoints store that state as named tensors
//! (`<name>.m`, `<name>.v`, `<name>.step`) and restore it through [`AdamW::import_state`].

use std::collections::BTreeMap;

use crate::ir::Tensor;

/// Hyper-parameters of AdamW; the learning rate comes with every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Why an optimiser step or a state import failed; each names the parameter at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    #[error("parameter {name}: {params} values but gradient has {grads}")]
    GradLength {
        name: String,
        params: usize,
        grads: usize,
    },
    #[error("parameter {name}: {params} values but optimiser state holds {state}")]
    StateLength {
        name: String,
        params: usize,
        state: usize,
    },
    #[error("parameter {name}: non-finite gradient at element {index}")]
    NonFiniteGrad { name: String, index: usize },
    #[error("optimiser state tensor {tensor}: {reason}")]
    BadStateTensor { tensor: String, reason: String },
    #[error("optimiser state for {name} lacks {part}")]
    MissingState { name: String, part: &'static str },
}

/// First and second moments of one parameter and how many updates it has received.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

impl Moments {
    fn zeros(len: usize) -> Moments {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
        }
    }
}

/// AdamW state over named parameters. Updates are element-wise and sequential, so the
/// same inputs give the same bits.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    config: AdamWConfig,
    state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW {
            config,
            state: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates used by the parameter `name` so far; `None` before its first step.
    pub fn step_count(&self, name: &str) -> Option<u64> {
        self.state.get(name).map(|s| s.step)
    }

    /// One AdamW update of `param` in place with gradient `grad` at learning rate `lr`:
    /// `p ← p·(1 − lr·wd)`, then the bias-corrected Adam step.
    pub fn step(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
    ) -> Result<(), OptimError> {
        if param.len() != grad.len() {
            return Err(OptimError::GradLength {
                name: name.to_string(),
                params: param.len(),
                grads: grad.len(),
            });
        }
        if let Some(index) = grad.iter().position(|g| !g.is_finite()) {
            return Err(OptimError::NonFiniteGrad {
                name: name.to_string(),
                index,
            });
        }
        let moments = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| Moments::zeros(param.len()));
        if moments.m.len() != param.len() {
            return Err(OptimError::StateLength {
                name: name.to_string(),
                params: param.len(),
                state: moments.m.len(),
            });
        }
        moments.step += 1;
        let c = &self.config;
        let t = moments.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let decay = 1.0 - lr * c.weight_decay;
        let step_size = lr / bias1;
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(moments.m.iter_mut())
            .zip(moments.v.iter_mut())
        {
            let g = f64::from(g);
            let m_new = c.beta1 * f64::from(*m) + (1.0 - c.beta1) * g;
            let v_new = c.beta2 * f64::from(*v) + (1.0 - c.beta2) * g * g;
            *m = m_new as f32;
            *v = v_new as f32;
            let denom = f64::from(*v).sqrt() / bias2_sqrt + c.eps;
            let decayed = f64::from(*p) * decay;
            *p = (decayed - step_size * f64::from(*m) / denom) as f32;
        }
        Ok(())
    }

    /// [`AdamW::step`] on f32 tensors; the parameter tensor is replaced by its update.
    pub fn step_tensor(
        &mut self,
        name: &str,
        param: &mut Tensor,
        grad: &Tensor,
        lr: f64,
    ) -> Result<(), OptimError> {
        let bad = |which: &str, t: &Tensor| OptimError::BadStateTensor {
            tensor: format!("{name} ({which})"),
            reason: format!("expected f32, got {}", t.dtype()),
        };
        let mut values = param.as_f32().ok_or_else(|| bad("param", param))?.to_vec();
        let grads = grad.as_f32().ok_or_else(|| bad("grad", grad))?;
        self.step(name, &mut values, grads, lr)?;
        *param = Tensor::from_f32(param.shape().to_vec(), values).map_err(|e| {
            OptimError::BadStateTensor {
                tensor: name.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(())
    }

    /// The state as named tensors: `<name>.m` and `<name>.v` (f32, 1-D) and `<name>.step`
    /// (i64 scalar), sorted by name.
    pub fn export_state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.state.len() * 3);
        for (name, s) in &self.state {
            out.push((format!("{name}.m"), flat_f32(&s.m)));
            out.push((format!("{name}.v"), flat_f32(&s.v)));
            out.push((format!("{name}.step"), Tensor::scalar_i64(s.step as i64)));
        }
        out
    }

    /// Rebuilds an optimiser from tensors written by [`AdamW::export_state`].
    pub fn import_state(
        config: AdamWConfig,
        tensors: &[(String, Tensor)],
    ) -> Result<AdamW, OptimError> {
        let mut parts: BTreeMap<&str, PartialMoments> = BTreeMap::new();
        for (tensor_name, tensor) in tensors {
            let bad = |reason: &str| OptimError::BadStateTensor {
                tensor: tensor_name.clone(),
                reason: reason.to_string(),
            };
            let (name, part) = tensor_name
                .rsplit_once('.')
                .ok_or_else(|| bad("name lacks a .m, .v or .step suffix"))?;
            let entry = parts.entry(name).or_default();
            match part {
                "m" => entry.m = Some(f32_values(tensor).ok_or_else(|| bad("not f32"))?),
                "v" => entry.v = Some(f32_values(tensor).ok_or_else(|| bad("not f32"))?),
                "step" => {
                    entry.step = Some(
                        step_value(tensor).ok_or_else(|| bad("not a non-negative i64 scalar"))?,
                    )
                }
                _ => return Err(bad("suffix is not .m, .v or .step")),
            }
        }
        let mut state = BTreeMap::new();
        for (name, p) in parts {
            state.insert(name.to_string(), p.complete(name)?);
        }
        Ok(AdamW { config, state })
    }
}

#[derive(Default)]
struct PartialMoments {
    m: Option<Vec<f32>>,
    v: Option<Vec<f32>>,
    step: Option<u64>,
}

impl PartialMoments {
    fn complete(self, name: &str) -> Result<Moments, OptimError> {
        let missing = |part| OptimError::MissingState {
            name: name.to_string(),
            part,
        };
        let m = self.m.ok_or_else(|| missing(".m"))?;
        let v = self.v.ok_or_else(|| missing(".v"))?;
        let step = self.step.ok_or_else(|| missing(".step"))?;
        if m.len() != v.len() {
            return Err(OptimError::StateLength {
                name: name.to_string(),
                params: m.len(),
                state: v.len(),
            });
        }
        Ok(Moments { m, v, step })
    }
}

fn flat_f32(values: &[f32]) -> Tensor {
    let len = values.len();
    match Tensor::from_f32(vec![len], values.to_vec()) {
        Ok(t) => t,
        // a 1-D shape of the vector's own length always fits
        Err(_) => Tensor::scalar_f32(f32::NAN),
    }
}

fn f32_values(t: &Tensor) -> Option<Vec<f32>> {
    t.as_f32().map(<[f32]>::to_vec)
}

fn step_value(t: &Tensor) -> Option<u64> {
    match t.as_i64() {
        Some(&[s]) if t.rank() == 0 => u64::try_from(s).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_config() -> AdamWConfig {
        AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }

    #[test]
    fn few_steps_match_hand_computed_values() {
        let cfg = reference_config();
        let lr = 0.05;
        let grads = [[0.5f32, -2.0], [0.1, 0.3], [-1.0, 0.0]];
        let mut opt = AdamW::new(cfg);
        let mut param = [1.0f32, -0.5];
        // Hand expansion, element by element, in f64.
        let mut p = [1.0f64, -0.5];
        let mut m = [0.0f64; 2];
        let mut v = [0.0f64; 2];
        for (k, g) in grads.iter().enumerate() {
            opt.step("w", &mut param, g, lr).unwrap();
            let t = (k + 1) as f64;
            for i in 0..2 {
                let gi = f64::from(g[i]);
                p[i] -= lr * 0.1 * p[i];
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.999 * v[i] + 0.001 * gi * gi;
                let m_hat = m[i] / (1.0 - 0.9f64.powf(t));
                let v_hat = v[i] / (1.0 - 0.999f64.powf(t));
                p[i] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
            }
            for i in 0..2 {
                assert!(
                    (f64::from(param[i]) - p[i]).abs() < 1e-6,
                    "step {} element {i}: {} vs {}",
                    k + 1,
                    param[i],
                    p[i]
                );
            }
        }
        assert_eq!(opt.step_count("w"), Some(3));
        // first step of Adam moves each element by about lr against the gradient sign
        let mut fresh = AdamW::new(AdamWConfig {
            weight_decay: 0.0,
            ..cfg
        });
        let mut q = [0.0f32, 0.0];
        fresh.step("q", &mut q, &[3.0, -0.25], 0.05).unwrap();
        assert!(
            (q[0] + 0.05).abs() < 1e-6 && (q[1] - 0.05).abs() < 1e-6,
            "{q:?}"
        );
    }

    #[test]
    fn zero_gradient_only_decays() {
        let mut opt = AdamW::new(reference_config());
        let mut param = [2.0f32, -4.0];
        for _ in 0..3 {
            opt.step("w", &mut param, &[0.0, 0.0], 0.5).unwrap();
        }
        // p * (1 - 0.5 * 0.1)^3
        let factor = 0.95f64.powi(3);
        assert!((f64::from(param[0]) - 2.0 * factor).abs() < 1e-6);
        assert!((f64::from(param[1]) + 4.0 * factor).abs() < 1e-6);
    }

    #[test]
    fn export_import_continues_bit_identically() {
        let cfg = reference_config();
        let grads = [
            [0.5f32, -2.0, 0.25],
            [0.1, 0.3, -0.7],
            [-1.0, 0.0, 0.2],
            [0.4, 0.4, 0.4],
        ];
        let mut straight = AdamW::new(cfg);
        let mut a = [1.0f32, -0.5, 0.3];
        let mut bias = [0.1f32];
        for g in &grads {
            straight.step("layer.0.w", &mut a, g, 1e-2).unwrap();
            straight.step("head.b", &mut bias, &[g[0]], 1e-2).unwrap();
        }

        let mut first = AdamW::new(cfg);
        let mut b = [1.0f32, -0.5, 0.3];
        let mut bias2 = [0.1f32];
        for g in &grads[..2] {
            first.step("layer.0.w", &mut b, g, 1e-2).unwrap();
            first.step("head.b", &mut bias2, &[g[0]], 1e-2).unwrap();
        }
        let saved = first.export_state();
        let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "head.b.m",
                "head.b.v",
                "head.b.step",
                "layer.0.w.m",
                "layer.0.w.v",
                "layer.0.w.step"
            ]
        );
        let mut resumed = AdamW::import_state(cfg, &saved).unwrap();
        assert_eq!(resumed, first);
        assert_eq!(resumed.step_count("layer.0.w"), Some(2));
        for g in &grads[2..] {
            resumed.step("layer.0.w", &mut b, g, 1e-2).unwrap();
            resumed.step("head.b", &mut bias2, &[g[0]], 1e-2).unwrap();
        }
        assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
        assert_eq!(bias[0].to_bits(), bias2[0].to_bits());
        assert_eq!(resumed.export_state(), straight.export_state());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut opt = AdamW::new(reference_config());
        let mut p = [1.0f32, 2.0];
        assert!(matches!(
            opt.step("w", &mut p, &[1.0], 1e-3),
            Err(OptimError::GradLength { .. })
        ));
        assert!(matches!(
            opt.step("w", &mut p, &[1.0, f32::NAN], 1e-3),
            Err(OptimError::NonFiniteGrad { index: 1, .. })
        ));
        opt.step("w", &mut p, &[1.0, 1.0], 1e-3).unwrap();
        let mut longer = [0.0f32; 3];
        assert!(matches!(
            opt.step("w", &mut longer, &[0.0; 3], 1e-3),
            Err(OptimError::StateLength { .. })
        ));
        let mut state = opt.export_state();
        state.retain(|(n, _)| n != "w.v");
        assert_eq!(
            AdamW::import_state(reference_config(), &state),
            Err(OptimError::MissingState {
                name: "w".into(),
                part: ".v"
            })
        );
        let odd = vec![("w.x".to_string(), Tensor::scalar_f32(0.0))];
        assert!(AdamW::import_state(reference_config(), &odd).is_err());
    }

    #[test]
    fn tensor_step_keeps_shape() {
        let mut opt = AdamW::new(reference_config());
        let mut p = Tensor::from_f32(vec![2, 1], vec![1.0, 2.0]).unwrap();
        let g = Tensor::from_f32(vec![2, 1], vec![0.0, 0.0]).unwrap();
        opt.step_tensor("w", &mut p, &g, 1.0).unwrap();
        assert_eq!(p.shape(), &[2, 1]);
        let values = p.as_f32().unwrap();
        assert!((values[0] - 0.9).abs() < 1e-6 && (values[1] - 1.8).abs() < 1e-6);
    }
}
