//! Elementwise ops with numpy broadcasting: Add, Sub, Mul, Div, Pow, Equal, the
//! unary functions, Clip, Where and Cast. Floats compute in f32 (f16 and bf16 are
//! widened and the result narrowed back), integers in i64 with wrapping arithmetic
//! and truncating division, bools as 0/1 bytes.

use crate::ir::{BinaryOp, DType, UnaryOp};

use super::math;
use super::strided::{broadcast_shape, map1, map2, map3};
use super::value::{CpuValue, OpResult, bail, sh, with_storage_type};

fn broadcast_dims(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    match broadcast_shape(a, b) {
        Some(d) => Ok(d),
        None => bail!("cannot broadcast {} with {}", sh(a), sh(b)),
    }
}

pub(crate) fn binary(op: BinaryOp, a: &CpuValue, b: &CpuValue) -> OpResult<CpuValue> {
    let dims = broadcast_dims(a.dims(), b.dims())?;
    match op {
        BinaryOp::Pow => return pow(a, b, &dims),
        BinaryOp::Equal => return equal(a, b, &dims),
        _ => {}
    }
    if a.dtype() != b.dtype() {
        bail!("operand types differ: {} and {}", a.dtype(), b.dtype());
    }
    let dtype = a.dtype();
    if dtype.is_float() {
        let out = a.read_f32(|va| {
            b.read_f32(|vb| {
                let va = va.broadcast_to(&dims)?;
                let vb = vb.broadcast_to(&dims)?;
                Ok(match op {
                    BinaryOp::Add => map2(&dims, &va, &vb, |x, y| x + y),
                    BinaryOp::Sub => map2(&dims, &va, &vb, |x, y| x - y),
                    BinaryOp::Mul => map2(&dims, &va, &vb, |x, y| x * y),
                    _ => map2(&dims, &va, &vb, |x, y| x / y),
                })
            })
        })?;
        CpuValue::from_f32(out, &dims, dtype)
    } else if dtype.is_int() {
        let out = a.read_i64(|va| {
            b.read_i64(|vb| {
                let va = va.broadcast_to(&dims)?;
                let vb = vb.broadcast_to(&dims)?;
                Ok(match op {
                    BinaryOp::Add => map2(&dims, &va, &vb, i64::wrapping_add),
                    BinaryOp::Sub => map2(&dims, &va, &vb, i64::wrapping_sub),
                    BinaryOp::Mul => map2(&dims, &va, &vb, i64::wrapping_mul),
                    _ => {
                        if map1(&vb.dims, &vb, |y| y == 0).contains(&true) {
                            bail!("integer division by zero");
                        }
                        // Rust's integer division truncates towards zero, as ONNX asks.
                        map2(
                            &dims,
                            &va,
                            &vb,
                            |x, y| if y == 0 { 0 } else { x.wrapping_div(y) },
                        )
                    }
                })
            })
        })?;
        CpuValue::from_i64(out, &dims, dtype)
    } else {
        bail!("not defined on {dtype}")
    }
}

/// Pow: the result has the base's type; the exponent may be float or integer.
fn pow(a: &CpuValue, b: &CpuValue, dims: &[usize]) -> OpResult<CpuValue> {
    let (ta, tb) = (a.dtype(), b.dtype());
    if ta == DType::Bool || tb == DType::Bool {
        bail!("Pow is not defined on bool");
    }
    if ta.is_float() {
        if tb.is_float()
            && let Some(e) = scalar_exponent(b)?
        {
            return pow_float_by_scalar(a, e, dims);
        }
        let out = a.read_f32(|va| {
            let va = va.broadcast_to(dims)?;
            if tb.is_float() {
                b.read_f32(|vb| {
                    let vb = vb.broadcast_to(dims)?;
                    Ok(map2(dims, &va, &vb, |x, y| {
                        (x as f64).powf(y as f64) as f32
                    }))
                })
            } else {
                b.read_i64(|vb| {
                    let vb = vb.broadcast_to(dims)?;
                    Ok(map2(dims, &va, &vb, |x, y| {
                        (x as f64).powf(y as f64) as f32
                    }))
                })
            }
        })?;
        return CpuValue::from_f32(out, dims, ta);
    }
    let out = a.read_i64(|va| {
        let va = va.broadcast_to(dims)?;
        if tb.is_int() {
            b.read_i64(|vb| {
                let vb = vb.broadcast_to(dims)?;
                Ok(map2(dims, &va, &vb, int_pow))
            })
        } else {
            b.read_f32(|vb| {
                let vb = vb.broadcast_to(dims)?;
                Ok(map2(dims, &va, &vb, |x, y| {
                    (x as f64).powf(y as f64) as i64
                }))
            })
        }
    })?;
    CpuValue::from_i64(out, dims, ta)
}

/// x^y for integers: exact (wrapping) for y ≥ 0, truncated real power otherwise.
fn int_pow(x: i64, y: i64) -> i64 {
    if y >= 0 {
        let mut result: i64 = 1;
        let mut base = x;
        let mut e = y as u64;
        while e > 0 {
            if e & 1 == 1 {
                result = result.wrapping_mul(base);
            }
            base = base.wrapping_mul(base);
            e >>= 1;
        }
        result
    } else {
        (x as f64).powf(y as f64) as i64
    }
}

/// The exponent when it is a single float element, the common `x^2` of norms.
fn scalar_exponent(b: &CpuValue) -> OpResult<Option<f32>> {
    if b.numel() != 1 {
        return Ok(None);
    }
    Ok(b.to_f64_vec()?.first().map(|&e| e as f32))
}

fn pow_float_by_scalar(a: &CpuValue, e: f32, dims: &[usize]) -> OpResult<CpuValue> {
    let out = a.read_f32(|va| {
        let va = va.broadcast_to(dims)?;
        Ok(if e == 2.0 {
            map1(dims, &va, |x| x * x)
        } else if e == 1.0 {
            map1(dims, &va, |x| x)
        } else if e == 0.5 {
            map1(dims, &va, f32::sqrt)
        } else {
            let e = e as f64;
            map1(dims, &va, |x| (x as f64).powf(e) as f32)
        })
    })?;
    CpuValue::from_f32(out, dims, a.dtype())
}

fn equal(a: &CpuValue, b: &CpuValue, dims: &[usize]) -> OpResult<CpuValue> {
    if a.dtype() != b.dtype() {
        bail!("operand types differ: {} and {}", a.dtype(), b.dtype());
    }
    let out = if a.dtype().is_float() {
        a.read_f32(|va| {
            b.read_f32(|vb| {
                Ok(map2(
                    dims,
                    &va.broadcast_to(dims)?,
                    &vb.broadcast_to(dims)?,
                    |x, y| u8::from(x == y),
                ))
            })
        })?
    } else if a.dtype().is_int() {
        a.read_i64(|va| {
            b.read_i64(|vb| {
                Ok(map2(
                    dims,
                    &va.broadcast_to(dims)?,
                    &vb.broadcast_to(dims)?,
                    |x, y| u8::from(x == y),
                ))
            })
        })?
    } else {
        a.read_bool(|va| {
            b.read_bool(|vb| {
                Ok(map2(
                    dims,
                    &va.broadcast_to(dims)?,
                    &vb.broadcast_to(dims)?,
                    |x, y| u8::from((x != 0) == (y != 0)),
                ))
            })
        })?
    };
    CpuValue::from_bool(out, dims)
}

pub(crate) fn unary(op: UnaryOp, x: &CpuValue) -> OpResult<CpuValue> {
    let dims = x.dims().to_vec();
    let dtype = x.dtype();
    if dtype.is_int() {
        let out = x.read_i64(|v| {
            Ok(match op {
                UnaryOp::Neg => map1(&dims, &v, i64::wrapping_neg),
                UnaryOp::Abs => map1(&dims, &v, i64::wrapping_abs),
                UnaryOp::Relu => map1(&dims, &v, |a| a.max(0)),
                _ => bail!("not defined on {dtype}"),
            })
        })?;
        return CpuValue::from_i64(out, &dims, dtype);
    }
    if !dtype.is_float() {
        bail!("not defined on {dtype}");
    }
    let out = x.read_f32(|v| {
        Ok(match op {
            UnaryOp::Sqrt => map1(&dims, &v, f32::sqrt),
            UnaryOp::Reciprocal => map1(&dims, &v, |a| 1.0 / a),
            UnaryOp::Neg => map1(&dims, &v, |a| -a),
            UnaryOp::Abs => map1(&dims, &v, f32::abs),
            UnaryOp::Exp => map1(&dims, &v, f32::exp),
            UnaryOp::Log => map1(&dims, &v, f32::ln),
            UnaryOp::Erf => map1(&dims, &v, math::erf),
            UnaryOp::Tanh => map1(&dims, &v, f32::tanh),
            UnaryOp::Relu => map1(&dims, &v, |a| if a < 0.0 { 0.0 } else { a }),
            UnaryOp::Sigmoid => map1(&dims, &v, |a| 1.0 / (1.0 + (-a).exp())),
            UnaryOp::Sin => map1(&dims, &v, f32::sin),
            UnaryOp::Cos => map1(&dims, &v, f32::cos),
        })
    })?;
    CpuValue::from_f32(out, &dims, dtype)
}

/// The single element of an optional bound, or `None` when the slot is empty.
fn bound(v: Option<&CpuValue>, what: &str) -> OpResult<Option<f64>> {
    let Some(v) = v else { return Ok(None) };
    match v.numel() {
        0 => Ok(None),
        1 => Ok(v.to_f64_vec()?.first().copied()),
        n => bail!("{what} must be a scalar, got {n} elements"),
    }
}

pub(crate) fn clip(
    x: &CpuValue,
    min: Option<&CpuValue>,
    max: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    let dims = x.dims().to_vec();
    let dtype = x.dtype();
    for b in [min, max].into_iter().flatten() {
        if b.dtype() != dtype {
            bail!("bound of type {} for input of type {dtype}", b.dtype());
        }
    }
    let (lo, hi) = (bound(min, "min")?, bound(max, "max")?);
    if dtype.is_float() {
        let lo = lo.map_or(f32::NEG_INFINITY, |v| v as f32);
        let hi = hi.map_or(f32::INFINITY, |v| v as f32);
        let out = x.read_f32(|v| Ok(map1(&dims, &v, |a| clamp_keep_nan(a, lo, hi))))?;
        CpuValue::from_f32(out, &dims, dtype)
    } else if dtype.is_int() {
        let lo = match min {
            Some(m) if m.numel() == 1 => m.to_i64_vec()?[0],
            _ => i64::MIN,
        };
        let hi = match max {
            Some(m) if m.numel() == 1 => m.to_i64_vec()?[0],
            _ => i64::MAX,
        };
        let out = x.read_i64(|v| Ok(map1(&dims, &v, |a| clamp_keep_nan(a, lo, hi))))?;
        CpuValue::from_i64(out, &dims, dtype)
    } else {
        bail!("not defined on {dtype}")
    }
}

/// `min(max(a, lo), hi)` as numpy's clip computes it: NaN stays NaN and `lo > hi`
/// gives `hi`.
fn clamp_keep_nan<T: PartialOrd>(a: T, lo: T, hi: T) -> T {
    let a = if a < lo { lo } else { a };
    if a > hi { hi } else { a }
}

pub(crate) fn where_(cond: &CpuValue, a: &CpuValue, b: &CpuValue) -> OpResult<CpuValue> {
    if cond.dtype() != DType::Bool {
        bail!("condition must be bool, got {}", cond.dtype());
    }
    if a.dtype() != b.dtype() {
        bail!("branch types differ: {} and {}", a.dtype(), b.dtype());
    }
    let dims = broadcast_dims(&broadcast_dims(cond.dims(), a.dims())?, b.dims())?;
    let dtype = a.dtype();
    with_storage_type!(dtype, T => {
        let out: Vec<T> = cond.read_bool(|vc| {
            a.read::<T, _>(|va| {
                b.read::<T, _>(|vb| {
                    Ok(map3(
                        &dims,
                        &vc.broadcast_to(&dims)?,
                        &va.broadcast_to(&dims)?,
                        &vb.broadcast_to(&dims)?,
                        |c, x, y| if c != 0 { x } else { y },
                    ))
                })
            })
        })?;
        CpuValue::from_storage_vec(out, &dims, dtype)
    })
}

pub(crate) fn cast(x: &CpuValue, to: DType) -> OpResult<CpuValue> {
    let from = x.dtype();
    if from == to {
        return Ok(x.clone());
    }
    let dims = x.dims().to_vec();
    if from.is_float() {
        return x.read_f32(|v| match to {
            DType::F32 | DType::F16 | DType::BF16 => {
                CpuValue::from_f32(map1(&dims, &v, |a| a), &dims, to)
            }
            // `as` truncates towards zero and saturates, NaN becoming 0.
            DType::I64 => CpuValue::from_i64(map1(&dims, &v, |a| a as i64), &dims, to),
            DType::I32 => CpuValue::from_i64(map1(&dims, &v, |a| a as i32 as i64), &dims, to),
            DType::Bool => CpuValue::from_bool(map1(&dims, &v, |a| u8::from(a != 0.0)), &dims),
        });
    }
    if from.is_int() {
        return x.read_i64(|v| match to {
            DType::F32 | DType::F16 | DType::BF16 => {
                CpuValue::from_f32(map1(&dims, &v, |a| a as f32), &dims, to)
            }
            DType::I64 | DType::I32 => CpuValue::from_i64(map1(&dims, &v, |a| a), &dims, to),
            DType::Bool => CpuValue::from_bool(map1(&dims, &v, |a| u8::from(a != 0)), &dims),
        });
    }
    x.read_bool(|v| match to {
        DType::F32 | DType::F16 | DType::BF16 => {
            CpuValue::from_f32(map1(&dims, &v, f32::from), &dims, to)
        }
        DType::I64 | DType::I32 => CpuValue::from_i64(map1(&dims, &v, i64::from), &dims, to),
        DType::Bool => Ok(x.clone()),
    })
}
