//! Learning-rate schedules and training presets.
//!
//! The trainer asks for the learning rate of each optimiser step (by epoch and step within
//! the epoch) and hands it to [`super::optim::AdamW::step`]. The curve is linear warm-up
//! followed by half a cosine, as timm's `CosineLRScheduler` computes it with
//! `warmup_prefix=False` and one cycle. [`Preset::Reference`] carries the reference
//! GLoRA supernet-training settings.

use std::f64::consts::PI;

use super::optim::AdamWConfig;

/// Linear warm-up from `warmup_lr_init` towards `base_lr` over `warmup_t` units, then a
/// cosine from `base_lr` down to `lr_min` reached at `t_initial`; `lr_min` from then on.
/// The cosine is evaluated at the absolute `t`, so it starts below `base_lr` when there is
/// a warm-up (timm's `warmup_prefix=False`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub lr_min: f64,
    pub warmup_lr_init: f64,
    pub warmup_t: u64,
    pub t_initial: u64,
}

impl WarmupCosine {
    /// The curve's value at `t` (epochs or steps, whichever unit the curve is set up in).
    pub fn lr_at(&self, t: u64) -> f64 {
        if t < self.warmup_t {
            let per_unit = (self.base_lr - self.warmup_lr_init) / self.warmup_t as f64;
            return self.warmup_lr_init + t as f64 * per_unit;
        }
        if t >= self.t_initial {
            return self.lr_min;
        }
        let progress = t as f64 / self.t_initial as f64;
        self.lr_min + 0.5 * (self.base_lr - self.lr_min) * (1.0 + (PI * progress).cos())
    }
}

/// How often the schedule moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepping {
    /// Curve units are epochs; the rate is updated after each epoch, so epoch 0 trains at
    /// `warmup_lr_init` and epoch `e ≥ 1` at `lr_at(e − 1)` (timm's `step(epoch)` called
    /// at the end of the epoch).
    PerEpoch,
    /// Curve units are optimiser steps; step `s` overall trains at `lr_at(s)`.
    PerStep { steps_per_epoch: u64 },
}

/// A curve together with the way it is stepped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub curve: WarmupCosine,
    pub stepping: Stepping,
}

impl LrSchedule {
    /// Learning rate for step `step_in_epoch` of epoch `epoch` (both from 0).
    pub fn lr(&self, epoch: u64, step_in_epoch: u64) -> f64 {
        match self.stepping {
            Stepping::PerEpoch => self.lr_for_epoch(epoch),
            Stepping::PerStep { steps_per_epoch } => self.curve.lr_at(
                epoch
                    .saturating_mul(steps_per_epoch)
                    .saturating_add(step_in_epoch),
            ),
        }
    }

    /// Rate used throughout `epoch` under per-epoch stepping.
    pub fn lr_for_epoch(&self, epoch: u64) -> f64 {
        match epoch.checked_sub(1) {
            None => self.curve.warmup_lr_init,
            Some(previous) => self.curve.lr_at(previous),
        }
    }
}

/// Named bundles of training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The reference supernet training: AdamW(lr 1e-4, wd 1e-4, betas (0.9, 0.999),
    /// eps 1e-8), batch 64, 500 epochs, warm-up 10 epochs from 1e-6, cosine to 1e-5,
    /// stepped per epoch, plain cross-entropy.
    Reference,
}

/// Everything a preset fixes for a training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingSettings {
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub batch_size: usize,
    pub epochs: u64,
    pub label_smoothing: f32,
}

impl Preset {
    pub fn settings(self) -> TrainingSettings {
        match self {
            Preset::Reference => TrainingSettings {
                optimizer: AdamWConfig {
                    lr: 1e-4,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 1e-4,
                },
                schedule: LrSchedule {
                    curve: WarmupCosine {
                        base_lr: 1e-4,
                        lr_min: 1e-5,
                        warmup_lr_init: 1e-6,
                        warmup_t: 10,
                        t_initial: 500,
                    },
                    stepping: Stepping::PerEpoch,
                },
                batch_size: 64,
                epochs: 500,
                label_smoothing: 0.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's formulas for the reference curve, written out directly.
    fn spec_lr(t: u64) -> f64 {
        let t = t as f64;
        if t < 10.0 {
            1e-6 + t * (1e-4 - 1e-6) / 10.0
        } else {
            1e-5 + 0.5 * (1e-4 - 1e-5) * (1.0 + (std::f64::consts::PI * t / 500.0).cos())
        }
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() <= 1e-15, "{got} vs {want}");
    }

    #[test]
    fn reference_epochs_follow_the_spec() {
        let s = Preset::Reference.settings().schedule;
        assert_eq!(s.lr_for_epoch(0), 1e-6);
        for epoch in [1u64, 5, 10, 11, 250, 499] {
            assert_close(s.lr_for_epoch(epoch), spec_lr(epoch - 1));
            assert_close(s.lr(epoch, 7), spec_lr(epoch - 1));
        }
        // hand values: epoch 1 runs at lr(0) = 1e-6, epoch 5 at lr(4) = 1e-6 + 4 * 9.9e-6,
        // epoch 11 at lr(10), the first cosine point
        assert_close(s.lr_for_epoch(1), 1e-6);
        assert_close(s.lr_for_epoch(5), 4.06e-5);
        assert_close(s.lr_for_epoch(10), 1e-6 + 9.0 * 9.9e-6);
        let cos10 = (PI * 10.0 / 500.0).cos();
        assert_close(s.lr_for_epoch(11), 1e-5 + 4.5e-5 * (1.0 + cos10));
        // lr(249) sits just above the midpoint 5.5e-5 of the cosine
        assert!(s.lr_for_epoch(250) > 5.5e-5);
        assert_close(s.lr_for_epoch(251), 5.5e-5);
        assert!(s.lr_for_epoch(499) > 1e-5 && s.lr_for_epoch(499) < 1.001e-5);
        assert_eq!(s.curve.lr_at(500), 1e-5);
        assert_eq!(s.curve.lr_at(10_000), 1e-5);
    }

    #[test]
    fn per_step_uses_global_step() {
        let curve = WarmupCosine {
            base_lr: 1.0,
            lr_min: 0.0,
            warmup_lr_init: 0.0,
            warmup_t: 4,
            t_initial: 20,
        };
        let s = LrSchedule {
            curve,
            stepping: Stepping::PerStep { steps_per_epoch: 5 },
        };
        assert_close(s.lr(0, 0), 0.0);
        assert_close(s.lr(0, 2), 0.5);
        // global step 10 = half of t_initial: cosine midpoint 0.5
        assert_close(s.lr(2, 0), 0.5);
        // global step 5: 0.5 * (1 + cos(pi / 4))
        assert_close(s.lr(1, 0), 0.5 * (1.0 + 0.5f64.sqrt()));
        assert_close(s.lr(4, 0), 0.0);
    }

    #[test]
    fn reference_preset_values() {
        let p = Preset::Reference.settings();
        assert_eq!(p.optimizer.lr, 1e-4);
        assert_eq!(p.optimizer.weight_decay, 1e-4);
        assert_eq!((p.optimizer.beta1, p.optimizer.beta2), (0.9, 0.999));
        assert_eq!(p.optimizer.eps, 1e-8);
        assert_eq!(p.batch_size, 64);
        assert_eq!(p.epochs, 500);
        assert_eq!(p.label_smoothing, 0.0);
        assert_eq!(p.schedule.stepping, Stepping::PerEpoch);
        assert_eq!(p.schedule.curve.base_lr, p.optimizer.lr);
    }
}
