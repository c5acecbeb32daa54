//! AdamW on the GPU: one launch updates every given tensor in place. The host
//! builds a table of (param, grad, m, v, length, step size, √bias correction) per
//! tensor, from each tensor's own step count, with exactly the formulas of
//! `src/train/optim.rs`; the kernel walks table entry `blockIdx.y` and does the
//! element arithmetic in double with explicit rounding, as the host optimiser does.

use crate::ir::DType;

use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, MAX_GRID_Y};
use super::layout::sh;
use super::value::CudaValue;

/// One tensor of a fused AdamW update: the parameter, its gradient, its moments
/// and its step count (already incremented by the caller, so at least 1).
pub struct AdamWSlot<'a> {
    pub param: &'a mut CudaValue,
    pub grad: &'a CudaValue,
    pub m: &'a mut CudaValue,
    pub v: &'a mut CudaValue,
    pub step: u64,
}

/// AdamW's hyper-parameters for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// The per-tensor constants of step `step`: (lr / (1 − β1^t), √(1 − β2^t)), as
/// optim.rs computes them.
pub(crate) fn step_constants(h: &AdamWHyper, step: u64) -> Result<(f64, f64), String> {
    if step == 0 {
        return Err("AdamW step counts start at 1 (increment before updating)".into());
    }
    let t = i32::try_from(step).map_err(|_| format!("AdamW step {step} is too large"))?;
    let bias1 = 1.0 - h.beta1.powi(t);
    let bias2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
    Ok((h.lr / bias1, bias2_sqrt))
}

/// The table words of one slot: five addresses and lengths, then two doubles by
/// their bits (the `AdamWSlot` struct of `kernels/adamw.cu`).
pub(crate) fn table_entry(ptrs: [u64; 4], len: usize, step_size: f64, bias2_sqrt: f64) -> [i64; 7] {
    [
        ptrs[0] as i64,
        ptrs[1] as i64,
        ptrs[2] as i64,
        ptrs[3] as i64,
        len as i64,
        step_size.to_bits() as i64,
        bias2_sqrt.to_bits() as i64,
    ]
}

fn check_slot(i: usize, s: &AdamWSlot<'_>) -> Result<(), String> {
    let n = s.param.numel();
    for (v, what) in [
        (&*s.param, "param"),
        (s.grad, "grad"),
        (&*s.m, "m"),
        (&*s.v, "v"),
    ] {
        if v.dtype() != DType::F32 {
            return Err(format!(
                "AdamW slot {i}: {what} is {}, expected f32",
                v.dtype()
            ));
        }
        if v.numel() != n {
            return Err(format!(
                "AdamW slot {i}: {what} of shape {} does not match the parameter's {}",
                sh(v.dims()),
                sh(s.param.dims())
            ));
        }
    }
    Ok(())
}

pub(crate) fn adamw_step(
    dev: &Device,
    slots: &mut [AdamWSlot<'_>],
    h: &AdamWHyper,
) -> Result<(), String> {
    for (i, s) in slots.iter().enumerate() {
        check_slot(i, s)?;
    }
    let decay = 1.0 - h.lr * h.weight_decay;
    for chunk in slots.chunks_mut(MAX_GRID_Y) {
        let mut words: Vec<i64> = Vec::with_capacity(chunk.len() * 7);
        let mut longest = 0;
        for s in chunk.iter() {
            let (step_size, bias2_sqrt) = step_constants(h, s.step)?;
            let n = s.param.numel();
            longest = longest.max(n);
            words.extend(table_entry(
                [s.param.ptr(), s.grad.ptr(), s.m.ptr(), s.v.ptr()],
                n,
                step_size,
                bias2_sqrt,
            ));
        }
        let table = dev.upload_i64(&words)?;
        dev.launch(
            &kernels::ADAMW_MULTI,
            Grid::Slots {
                len: longest,
                slots: chunk.len(),
            },
            &[
                Arg::Ptr(table.ptr()),
                Arg::F64(h.beta1),
                Arg::F64(h.beta2),
                Arg::F64(h.eps),
                Arg::F64(decay),
            ],
        )?;
        for s in chunk.iter_mut() {
            s.param.drop_host();
            s.m.drop_host();
            s.v.drop_host();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{AdamW, AdamWConfig};

    /// The kernel's element arithmetic, step by step in the same order.
    fn kernel_element(p: &mut f32, g: f32, m: &mut f32, v: &mut f32, h: &AdamWHyper, step: u64) {
        let (step_size, bias2_sqrt) = step_constants(h, step).unwrap();
        let decay = 1.0 - h.lr * h.weight_decay;
        let gd = g as f64;
        let m_new = h.beta1 * (*m as f64) + (1.0 - h.beta1) * gd;
        let v_new = h.beta2 * (*v as f64) + ((1.0 - h.beta2) * gd) * gd;
        *m = m_new as f32;
        *v = v_new as f32;
        let denom = (*v as f64).sqrt() / bias2_sqrt + h.eps;
        let decayed = (*p as f64) * decay;
        *p = (decayed - (step_size * (*m as f64)) / denom) as f32;
    }

    #[test]
    fn the_table_and_element_math_reproduce_the_host_optimiser_bit_for_bit() {
        let config = AdamWConfig {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        };
        let h = AdamWHyper {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        let mut host = AdamW::new(config);
        let mut p_host = vec![0.5f32, -1.25, 3.0, 1e-3];
        let mut p = p_host.clone();
        let (mut m, mut v) = (vec![0f32; 4], vec![0f32; 4]);
        for step in 1..=5u64 {
            let g: Vec<f32> = (0..4)
                .map(|i| ((i as f32) - 1.5) * 0.1 * step as f32)
                .collect();
            host.step("w", &mut p_host, &g, config.lr).unwrap();
            for i in 0..4 {
                kernel_element(&mut p[i], g[i], &mut m[i], &mut v[i], &h, step);
            }
            assert_eq!(p, p_host, "step {step}");
        }
    }

    #[test]
    fn table_entries_carry_the_doubles_by_their_bits() {
        let e = table_entry([1, 2, 3, 4], 10, 0.5, 0.25);
        assert_eq!(&e[..5], &[1, 2, 3, 4, 10]);
        assert_eq!(f64::from_bits(e[5] as u64), 0.5);
        assert_eq!(f64::from_bits(e[6] as u64), 0.25);
        let h = AdamWHyper {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        assert!(step_constants(&h, 0).is_err());
        let (s, b) = step_constants(&h, 1).unwrap();
        assert!((s - 0.1 / (1.0 - 0.9)).abs() < 1e-15);
        assert!((b - (1.0f64 - 0.99).sqrt()).abs() < 1e-15);
    }
}
