//! Fused row kernels: Softmax, LayerNormalization, inference BatchNormalization and
//! GELU. Each walks contiguous rows once in a single kernel (rayon over rows) instead
//! of chaining reductions and broadcasts. Softmax over an inner axis moves that axis
//! last, computes rows and hands back a permuted view.

use rayon::prelude::*;

use crate::ir::{DType, GeluApprox};

use super::math::{self, max, sum, sum_sq_dev};
use super::simd::multiversion;
use super::strided::{PAR_MIN_ELEMS, for_rows, map1};
use super::value::{CpuValue, OpResult, bail, sh};
use super::{axis_index, permute_value};

multiversion! {
    /// One row of softmax: `out = exp(x − max x) / Σ exp(x − max x)`.
    fn softmax_row<>(x: &[f32], out: &mut [f32]) where [] {
        let m = max(x);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = math::exp(v - m);
        }
        let inv = 1.0 / sum(out);
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

multiversion! {
    /// One row of LayerNormalization: `y = (x − mean)·inv·gamma + beta`; returns
    /// (mean, inv) with inv = 1/√(variance + epsilon).
    fn layer_norm_row<>(
        x: &[f32],
        y: &mut [f32],
        gamma: &[f32],
        beta: Option<&[f32]>,
        epsilon: f32,
    ) -> (f32, f32) where [] {
        let len = x.len() as f32;
        let mean = sum(x) / len;
        let inv = 1.0 / (sum_sq_dev(x, mean) / len + epsilon).sqrt();
        match beta {
            Some(bv) => {
                for (((o, &a), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(bv) {
                    *o = (a - mean) * inv * g + b;
                }
            }
            None => {
                for ((o, &a), &g) in y.iter_mut().zip(x).zip(gamma) {
                    *o = (a - mean) * inv * g;
                }
            }
        }
        (mean, inv)
    }
}

pub(crate) fn softmax(x: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let r = x.rank();
    let ax = axis_index(axis, r)?;
    let mut perm: Vec<usize> = (0..r).filter(|&i| i != ax).collect();
    perm.push(ax);
    let len = x.dims()[ax];
    let (out, dims) = x.read_f32(|v| {
        let pv = v.permuted(&perm);
        let data = pv.to_contiguous();
        let mut out = vec![0f32; data.len()];
        for_rows(&data, len, &mut out, len, softmax_row);
        Ok((out, pv.dims))
    })?;
    let y = CpuValue::from_f32(out, &dims, x.dtype())?;
    if ax == r - 1 {
        return Ok(y);
    }
    let mut inverse = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    permute_value(&y, &inverse)
}

/// The elements of a per-feature parameter broadcast to the normalised shape.
fn feature_vector(p: &CpuValue, dims: &[usize], what: &str) -> OpResult<Vec<f32>> {
    p.read_f32(|v| {
        let b = v.broadcast_to(dims).map_err(|_| {
            super::value::OpError(format!(
                "{what} of shape {} does not fit {}",
                sh(p.dims()),
                sh(dims)
            ))
        })?;
        Ok(map1(dims, &b, |x| x))
    })
}

/// One input row, its output row and its (mean, inverse std) slot.
type RowAndStats<'a> = (&'a [f32], (&'a mut [f32], &'a mut (f32, f32)));

/// LayerNormalization; returns `y` and, when asked for, the mean and inverse
/// standard deviation (f32, normalised axes kept as size 1).
pub(crate) fn layer_norm(
    x: &CpuValue,
    scale: &CpuValue,
    bias: Option<&CpuValue>,
    axis: i64,
    epsilon: f32,
    outputs: usize,
) -> OpResult<Vec<CpuValue>> {
    let r = x.rank();
    let ax = axis_index(axis, r)?;
    let dims = x.dims().to_vec();
    let len: usize = dims[ax..].iter().product();
    let rows: usize = dims[..ax].iter().product();
    let gamma = feature_vector(scale, &dims[ax..], "scale")?;
    let beta = match bias {
        Some(b) => Some(feature_vector(b, &dims[ax..], "bias")?),
        None => None,
    };
    let mut stats = vec![(0f32, 0f32); rows];
    let y = x.read_f32(|v| {
        let data = v.to_contiguous();
        let mut out = vec![0f32; data.len()];
        if len == 0 {
            return Ok(out);
        }
        let row = |(xr, (yr, st)): RowAndStats<'_>| {
            *st = layer_norm_row(xr, yr, &gamma, beta.as_deref(), epsilon);
        };
        if data.len() >= PAR_MIN_ELEMS {
            let min_rows = (PAR_MIN_ELEMS / 4 / len).max(1);
            data.par_chunks(len)
                .zip(out.par_chunks_mut(len).zip(stats.par_iter_mut()))
                .with_min_len(min_rows)
                .for_each(row);
        } else {
            data.chunks(len)
                .zip(out.chunks_mut(len).zip(stats.iter_mut()))
                .for_each(row);
        }
        Ok(out)
    })?;
    let mut result = vec![CpuValue::from_f32(y, &dims, x.dtype())?];
    if outputs > 1 {
        let mut sdims = dims[..ax].to_vec();
        sdims.resize(r, 1);
        let (mean, inv): (Vec<f32>, Vec<f32>) = if len == 0 {
            (vec![f32::NAN; rows], vec![f32::NAN; rows])
        } else {
            stats.into_iter().unzip()
        };
        result.push(CpuValue::from_f32(mean, &sdims, DType::F32)?);
        if outputs > 2 {
            result.push(CpuValue::from_f32(inv, &sdims, DType::F32)?);
        }
    }
    Ok(result)
}

/// Inference-mode BatchNormalization over axis 1.
pub(crate) fn batch_norm(
    x: &CpuValue,
    scale: &CpuValue,
    bias: &CpuValue,
    mean: &CpuValue,
    var: &CpuValue,
    epsilon: f32,
) -> OpResult<CpuValue> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 {
        bail!("input must have a channel axis, got shape {}", sh(&dims));
    }
    let c = dims[1];
    let channel = |p: &CpuValue, what: &str| -> OpResult<Vec<f32>> {
        if p.dims() != [c] {
            bail!("{what} must have shape [{c}], got {}", sh(p.dims()));
        }
        Ok(p.to_f64_vec()?.into_iter().map(|v| v as f32).collect())
    };
    let (s, b, m, v) = (
        channel(scale, "scale")?,
        channel(bias, "bias")?,
        channel(mean, "mean")?,
        channel(var, "var")?,
    );
    let inner: usize = dims[2..].iter().product();
    let out = x.read_f32(|xv| {
        let data = xv.to_contiguous();
        let mut out = vec![0f32; data.len()];
        if inner == 0 || c == 0 {
            return Ok(out);
        }
        let plane = |(i, (o, xr)): (usize, (&mut [f32], &[f32]))| {
            let ch = i % c;
            let inv = 1.0 / (v[ch] + epsilon).sqrt();
            for (y, &a) in o.iter_mut().zip(xr) {
                *y = (a - m[ch]) * inv * s[ch] + b[ch];
            }
        };
        if data.len() >= PAR_MIN_ELEMS {
            out.par_chunks_mut(inner)
                .zip(data.par_chunks(inner))
                .enumerate()
                .for_each(plane);
        } else {
            out.chunks_mut(inner)
                .zip(data.chunks(inner))
                .enumerate()
                .for_each(plane);
        }
        Ok(out)
    })?;
    CpuValue::from_f32(out, &dims, x.dtype())
}

pub(crate) fn gelu(x: &CpuValue, approx: GeluApprox) -> OpResult<CpuValue> {
    let dims = x.dims().to_vec();
    let out = x.read_f32(|v| {
        Ok(match approx {
            GeluApprox::None => map1(&dims, &v, math::gelu_erf),
            GeluApprox::Tanh => map1(&dims, &v, math::gelu_tanh),
        })
    })?;
    CpuValue::from_f32(out, &dims, x.dtype())
}
