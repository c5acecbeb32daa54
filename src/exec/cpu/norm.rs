//! Fused row kernels: Softmax, LayerNormalization, inference BatchNormalization and
//! GELU. Each walks contiguous rows once in a single kernel (rayon over rows) instead
//! of chaining reductions and broadcasts. Softmax over an inner axis moves that axis
//! last, computes rows and hands back a permuted view.

use rayon::prelude::*;

use crate::ir::{DType, GeluApprox};

use super::math;
use super::strided::{PAR_MIN_ELEMS, for_rows, map1};
use super::value::{CpuValue, OpResult, bail, sh};
use super::{axis_index, permute_value};

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in rest {
        s += x;
    }
    s
}

/// Maximum that propagates NaN, with eight lanes as in [`sum`].
#[inline]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    let mut nan = false;
    for c in chunks {
        for i in 0..8 {
            nan |= c[i].is_nan();
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rest {
        nan |= x.is_nan();
        m = if x > m { x } else { m };
    }
    if nan { f32::NAN } else { m }
}

fn softmax_row(x: &[f32], out: &mut [f32]) {
    let m = max(x);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = math::exp(v - m);
    }
    let inv = 1.0 / sum(out);
    for o in out.iter_mut() {
        *o *= inv;
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
        let b = v
            .broadcast_to(dims)
            .map_err(|_| super::value::OpError(format!("{what} of shape {} does not fit {}", sh(p.dims()), sh(dims))))?;
        Ok(map1(dims, &b, |x| x))
    })
}

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
        let row = |(xr, (yr, st)): (&[f32], (&mut [f32], &mut (f32, f32)))| {
            let mean = sum(xr) / len as f32;
            let mut var = 0f32;
            for &a in xr {
                var += (a - mean) * (a - mean);
            }
            let inv = 1.0 / (var / len as f32 + epsilon).sqrt();
            match &beta {
                Some(bv) => {
                    for (((o, &a), &g), &b) in yr.iter_mut().zip(xr).zip(&gamma).zip(bv) {
                        *o = (a - mean) * inv * g + b;
                    }
                }
                None => {
                    for ((o, &a), &g) in yr.iter_mut().zip(xr).zip(&gamma) {
                        *o = (a - mean) * inv * g;
                    }
                }
            }
            *st = (mean, inv);
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
            out.par_chunks_mut(inner).zip(data.par_chunks(inner)).enumerate().for_each(plane);
        } else {
            out.chunks_mut(inner).zip(data.chunks(inner)).enumerate().for_each(plane);
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
