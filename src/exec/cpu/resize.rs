//! Resize: nearest (all rounding modes), linear and cubic interpolation with every
//! coordinate transformation mode, scales or sizes, `axes`, the aspect-ratio
//! policies, `exclude_outside`, tf_crop_and_resize with its extrapolation value, and
//! antialiased linear and cubic downsampling. Interpolation is separable, so each
//! resized axis is done in turn: per output index a short list of (input index,
//! weight) taps is computed once, then applied to every line along that axis.

use rayon::prelude::*;

use crate::ir::{AspectPolicy, CoordTransform, NearestMode, ResizeAttrs, ResizeMode};

use super::axis_index;
use super::strided::PAR_MIN_ELEMS;
use super::value::{CpuValue, OpResult, bail, with_storage_type};

/// Largest output, in elements, that sizes or scales from tensor data may ask for.
const MAX_OUTPUT_ELEMS: usize = 1 << 34;

/// How one axis is resized.
#[derive(Clone, Debug, PartialEq)]
struct AxisPlan {
    axis: usize,
    scale: f64,
    out_len: usize,
    roi: (f64, f64),
}

/// The taps of one resized axis: `n` (index, weight) pairs per output index, and
/// the output indices that fall outside a tf_crop_and_resize crop.
#[derive(Debug)]
struct Taps {
    n: usize,
    idx: Vec<usize>,
    w: Vec<f32>,
    outside: Vec<bool>,
}

fn present(v: Option<&CpuValue>) -> Option<&CpuValue> {
    v.filter(|v| v.numel() > 0)
}

pub(crate) fn resize(
    attrs: &ResizeAttrs,
    x: &CpuValue,
    roi: Option<&CpuValue>,
    scales: Option<&CpuValue>,
    sizes: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    let plans = plan_axes(
        attrs,
        x.dims(),
        present(roi),
        present(scales),
        present(sizes),
    )?;
    let mut dims = x.dims().to_vec();
    let dtype = x.dtype();
    if attrs.mode == ResizeMode::Nearest {
        return with_storage_type!(dtype, T => {
            let mut data: Vec<T> = x.contiguous_vec::<T>()?;
            for p in &plans {
                let taps = nearest_taps(attrs, p, dims[p.axis]);
                data = apply_nearest(&data, &dims, p.axis, &taps);
                dims[p.axis] = p.out_len;
            }
            CpuValue::from_storage_vec(data, &dims, dtype)
        });
    }
    if !dtype.is_float() {
        bail!(
            "{:?} interpolation needs a float input, got {dtype}",
            attrs.mode
        );
    }
    let mut data: Vec<f32> = x.read_f32(|v| Ok(v.to_contiguous().into_owned()))?;
    for p in &plans {
        let taps = interp_taps(attrs, p, dims[p.axis]);
        data = apply_weighted(&data, &dims, p.axis, &taps, attrs.extrapolation_value);
        dims[p.axis] = p.out_len;
    }
    CpuValue::from_f32(data, &dims, dtype)
}

/// Works out the scale, output length and crop of every axis that changes.
fn plan_axes(
    attrs: &ResizeAttrs,
    input: &[usize],
    roi: Option<&CpuValue>,
    scales: Option<&CpuValue>,
    sizes: Option<&CpuValue>,
) -> OpResult<Vec<AxisPlan>> {
    let r = input.len();
    let axes: Vec<usize> = match &attrs.axes {
        Some(a) => {
            let v: Vec<usize> = a
                .iter()
                .map(|&a| axis_index(a, r))
                .collect::<OpResult<_>>()?;
            let mut seen = vec![false; r];
            if v.iter().any(|&a| std::mem::replace(&mut seen[a], true)) {
                bail!("axes {a:?} repeat an axis");
            }
            v
        }
        None => (0..r).collect(),
    };
    let na = axes.len();
    let crop: Vec<(f64, f64)> = if attrs.coord == CoordTransform::TfCropAndResize {
        let Some(roi) = roi else {
            bail!("tf_crop_and_resize needs a roi");
        };
        let v = roi.to_f64_vec()?;
        if v.len() != 2 * na {
            bail!("roi has {} values for {na} axes", v.len());
        }
        (0..na).map(|i| (v[i], v[na + i])).collect()
    } else {
        vec![(0.0, 1.0); na]
    };
    let (scale, out): (Vec<f64>, Vec<usize>) = match (scales, sizes) {
        (Some(_), Some(_)) => bail!("only one of scales and sizes may be given"),
        (None, None) => bail!("one of scales and sizes must be given"),
        (Some(s), None) => {
            let s = s.to_f64_vec()?;
            if s.len() != na {
                bail!("{} scales for {na} axes", s.len());
            }
            if s.iter().any(|&v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
                bail!("scales {s:?} must be positive");
            }
            let out = axes
                .iter()
                .zip(&s)
                .zip(&crop)
                .map(|((&a, &sc), &(c0, c1))| {
                    let len = if attrs.coord == CoordTransform::TfCropAndResize {
                        input[a] as f64 * (c1 - c0) * sc
                    } else {
                        input[a] as f64 * sc
                    };
                    len.max(0.0).floor() as usize
                })
                .collect();
            (s, out)
        }
        (None, Some(z)) => {
            if !z.dtype().is_int() {
                bail!("sizes must be integers, got {}", z.dtype());
            }
            let z = z.to_i64_vec()?;
            if z.len() != na {
                bail!("{} sizes for {na} axes", z.len());
            }
            if z.iter().any(|&v| v < 0) {
                bail!("sizes {z:?} must not be negative");
            }
            let mut s: Vec<f64> = Vec::with_capacity(na);
            for (&a, &o) in axes.iter().zip(&z) {
                if input[a] == 0 {
                    bail!("cannot resize an empty axis {a}");
                }
                s.push(o as f64 / input[a] as f64);
            }
            let out: Vec<usize> = match attrs.aspect {
                AspectPolicy::Stretch => z.iter().map(|&v| v as usize).collect(),
                policy => {
                    let pick = if policy == AspectPolicy::NotLarger {
                        f64::min
                    } else {
                        f64::max
                    };
                    let k = s.iter().copied().reduce(pick).unwrap_or(1.0);
                    s.iter_mut().for_each(|v| *v = k);
                    axes.iter()
                        .map(|&a| (k * input[a] as f64 + 0.5).floor() as usize)
                        .collect()
                }
            };
            (s, out)
        }
    };
    let mut plans = Vec::new();
    for i in 0..na {
        let a = axes[i];
        let trivial = (scale[i] - 1.0).abs() <= 1e-9 && out[i] == input[a] && crop[i] == (0.0, 1.0);
        if !trivial {
            plans.push(AxisPlan {
                axis: a,
                scale: scale[i],
                out_len: out[i],
                roi: crop[i],
            });
        }
    }
    let mut total: usize = 1;
    for (i, &d) in input.iter().enumerate() {
        let o = plans.iter().find(|p| p.axis == i).map_or(d, |p| p.out_len);
        total = match total.checked_mul(o) {
            Some(t) if t <= MAX_OUTPUT_ELEMS => t,
            _ => bail!("the resized tensor would be too large"),
        };
    }
    Ok(plans)
}

/// The input coordinate of output index `y` and whether it lies outside a crop.
fn source_coord(coord: CoordTransform, p: &AxisPlan, in_len: usize, y: usize) -> (f64, bool) {
    let (y, s, n) = (y as f64, p.scale, in_len as f64);
    let resized = s * n;
    match coord {
        CoordTransform::HalfPixel => ((y + 0.5) / s - 0.5, false),
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = p.out_len as f64 / resized;
            let offset = n / 2.0 * (1.0 - adjustment);
            (offset + (y + 0.5) / s - 0.5, false)
        }
        CoordTransform::PytorchHalfPixel => {
            if p.out_len > 1 {
                ((y + 0.5) / s - 0.5, false)
            } else {
                (0.0, false)
            }
        }
        CoordTransform::AlignCorners => {
            if resized == 1.0 || p.out_len == 1 {
                (0.0, false)
            } else {
                (y * (n - 1.0) / (resized - 1.0), false)
            }
        }
        CoordTransform::Asymmetric => (y / s, false),
        CoordTransform::TfHalfPixelForNn => ((y + 0.5) / s, false),
        CoordTransform::TfCropAndResize => {
            let (c0, c1) = p.roi;
            let x = if p.out_len > 1 {
                c0 * (n - 1.0) + y * (c1 - c0) * (n - 1.0) / (p.out_len as f64 - 1.0)
            } else {
                0.5 * (c0 + c1) * (n - 1.0)
            };
            (x, x < 0.0 || x > n - 1.0)
        }
    }
}

fn clamp_index(i: i64, len: usize) -> usize {
    i.min(len as i64 - 1).max(0) as usize
}

fn nearest_taps(attrs: &ResizeAttrs, p: &AxisPlan, in_len: usize) -> Taps {
    let mut idx = Vec::with_capacity(p.out_len);
    let mut outside = Vec::with_capacity(p.out_len);
    for y in 0..p.out_len {
        let (x, out) = source_coord(attrs.coord, p, in_len, y);
        let fl = x.floor();
        let frac = x - fl;
        let pick = if frac == 0.0 {
            fl
        } else {
            match attrs.nearest {
                NearestMode::RoundPreferFloor => {
                    if frac <= 0.5 {
                        fl
                    } else {
                        fl + 1.0
                    }
                }
                NearestMode::RoundPreferCeil => {
                    if frac < 0.5 {
                        fl
                    } else {
                        fl + 1.0
                    }
                }
                NearestMode::Floor => fl,
                NearestMode::Ceil => fl + 1.0,
            }
        };
        idx.push(clamp_index(pick as i64, in_len));
        outside.push(out);
    }
    Taps {
        n: 1,
        idx,
        w: vec![1.0; p.out_len],
        outside,
    }
}

/// Cubic convolution kernel with parameter `a` at distance `x`.
fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Weights of the taps for a point at fractional position `ratio` in (0, 1] past
/// its left neighbour; tap i sits at distance `first + i − ratio`.
fn interp_weights(attrs: &ResizeAttrs, ratio: f64, scale: f64) -> (i64, Vec<f64>) {
    let a = attrs.cubic_coeff_a as f64;
    let aa = attrs.antialias && scale < 1.0;
    let s = if aa { scale } else { 1.0 };
    match attrs.mode {
        ResizeMode::Cubic => {
            let first = if aa {
                (-2.0 / s).floor() as i64 + 1
            } else {
                -1
            };
            let last = 2 - first;
            let w: Vec<f64> = (first..last)
                .map(|i| cubic_kernel(s * (i as f64 - ratio), a))
                .collect();
            (first, normalise(w, aa))
        }
        _ => {
            let first = if aa { (-1.0 / s).floor() as i64 + 1 } else { 0 };
            let len = 2 - 2 * first;
            let w: Vec<f64> = (first..first + len)
                .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                .collect();
            (first, normalise(w, aa))
        }
    }
}

fn normalise(mut w: Vec<f64>, yes: bool) -> Vec<f64> {
    if yes {
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
    }
    w
}

fn interp_taps(attrs: &ResizeAttrs, p: &AxisPlan, in_len: usize) -> Taps {
    let mut taps = Taps {
        n: 0,
        idx: Vec::new(),
        w: Vec::new(),
        outside: Vec::with_capacity(p.out_len),
    };
    for y in 0..p.out_len {
        let (x, out) = source_coord(attrs.coord, p, in_len, y);
        let fl = x.floor();
        // An exact grid point counts as ratio 1 past the point to its left.
        let (left, ratio) = if x == fl {
            (fl as i64 - 1, 1.0)
        } else {
            (fl as i64, x - fl)
        };
        let (first, mut w) = interp_weights(attrs, ratio, p.scale);
        let idx: Vec<i64> = (0..w.len() as i64).map(|i| left + first + i).collect();
        if attrs.exclude_outside {
            for (wi, &i) in w.iter_mut().zip(&idx) {
                if i < 0 || i >= in_len as i64 {
                    *wi = 0.0;
                }
            }
            let total: f64 = w.iter().sum();
            let total = if total == 0.0 { 1.0 } else { total };
            w.iter_mut().for_each(|v| *v /= total);
        }
        taps.n = w.len();
        taps.idx.extend(idx.iter().map(|&i| clamp_index(i, in_len)));
        taps.w.extend(w.iter().map(|&v| v as f32));
        taps.outside.push(out);
    }
    taps
}

/// Splits `dims` around `axis` into (lines before, length, elements after).
fn around(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis],
        dims[axis + 1..].iter().product(),
    )
}

fn apply_nearest<T: Copy + Default + Send + Sync>(
    data: &[T],
    dims: &[usize],
    axis: usize,
    taps: &Taps,
) -> Vec<T> {
    let (outer, in_len, inner) = around(dims, axis);
    let out_len = taps.idx.len();
    let mut out = vec![T::default(); outer * out_len * inner];
    if inner == 0 || in_len == 0 {
        return out;
    }
    for (row, dst) in out.chunks_mut(inner).enumerate() {
        let (o, j) = (row / out_len, row % out_len);
        let at = (o * in_len + taps.idx[j]) * inner;
        dst.copy_from_slice(&data[at..at + inner]);
    }
    out
}

fn apply_weighted(
    data: &[f32],
    dims: &[usize],
    axis: usize,
    taps: &Taps,
    extrapolation: f32,
) -> Vec<f32> {
    let (outer, in_len, inner) = around(dims, axis);
    let out_len = taps.outside.len();
    let mut out = vec![0f32; outer * out_len * inner];
    if inner == 0 || in_len == 0 {
        return out;
    }
    let line = |row: usize, dst: &mut [f32]| {
        let (o, j) = (row / out_len, row % out_len);
        if taps.outside[j] {
            dst.fill(extrapolation);
            return;
        }
        for k in 0..taps.n {
            let w = taps.w[j * taps.n + k];
            if w == 0.0 {
                continue;
            }
            let at = (o * in_len + taps.idx[j * taps.n + k]) * inner;
            for (d, &s) in dst.iter_mut().zip(&data[at..at + inner]) {
                *d += w * s;
            }
        }
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(r, d)| line(r, d));
    } else {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(r, d)| line(r, d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_weights_are_the_keys_kernel() {
        let attrs = ResizeAttrs {
            mode: ResizeMode::Cubic,
            ..ResizeAttrs::default()
        };
        // At ratio 0.5 with a = -0.75: kernel at distances 1.5, 0.5, 0.5, 1.5.
        let (first, w) = interp_weights(&attrs, 0.5, 2.0);
        assert_eq!(first, -1);
        let far = -0.75 * 1.5f64.powi(3) + 5.0 * 0.75 * 1.5 * 1.5 - 8.0 * 0.75 * 1.5 + 4.0 * 0.75;
        let near = 1.25 * 0.125 - 2.25 * 0.25 + 1.0;
        for (got, want) in w.iter().zip([far, near, near, far]) {
            assert!((got - want).abs() < 1e-12, "{w:?}");
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn antialiased_linear_widens_the_tent() {
        let attrs = ResizeAttrs {
            mode: ResizeMode::Linear,
            antialias: true,
            ..ResizeAttrs::default()
        };
        // Scale 0.5: tent of half-width 2, four taps at distances -1.5, -0.5, 0.5, 1.5.
        let (first, w) = interp_weights(&attrs, 0.5, 0.5);
        assert_eq!(first, -1);
        let raw = [0.25, 0.75, 0.75, 0.25];
        for (got, want) in w.iter().zip(raw) {
            assert!((got - want / 2.0).abs() < 1e-12, "{w:?}");
        }
    }
}
