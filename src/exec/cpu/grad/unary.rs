//! Derivative rules of the elementwise functions: `dx = f'(x)·dy` for the forward
//! input `x`, its output `y = f(x)` and the incoming gradient `dy`, all of one shape.
//! Each rule reads whichever of `x` and `y` gives the derivative most cheaply and
//! runs through the strided elementwise loops (vectorised, rayon over chunks).

use crate::exec::cpu::math;
use crate::exec::cpu::strided::map2;
use crate::exec::cpu::value::{CpuValue, OpResult};
use crate::ir::{GeluApprox, UnaryGradKind};

use super::{float_dtype, same_shape};

/// 2/√π
const TWO_OVER_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;
/// √(2/π), the scale inside the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_CUBIC: f32 = 0.044_715;

/// The subgradient 0 at the kink; NaN inputs stay NaN.
#[inline(always)]
fn abs_grad(x: f32, dy: f32) -> f32 {
    if x > 0.0 {
        dy
    } else if x < 0.0 {
        -dy
    } else {
        0.0 * x
    }
}

/// d/dx of `0.5·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)`. With
/// `s = 1/(1 + e^{−2u}) = (1 + tanh u)/2` the slope is `s + 2x·s(1−s)·u'`; this
/// form has no cancellation for large |u|.
#[inline(always)]
fn gelu_tanh_slope(x: f32) -> f32 {
    let x2 = x * x;
    let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x2 * x);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x2);
    let s = 1.0 / (1.0 + math::exp(-2.0 * u));
    s + 2.0 * x * s * (1.0 - s) * du
}

pub(super) fn unary_grad(
    kind: UnaryGradKind,
    x: &CpuValue,
    y: &CpuValue,
    dy: &CpuValue,
) -> OpResult<CpuValue> {
    let dtype = float_dtype(dy, "dy")?;
    float_dtype(x, "x")?;
    float_dtype(y, "y")?;
    same_shape(x, "x", y, "y")?;
    same_shape(x, "x", dy, "dy")?;
    let dims = dy.dims().to_vec();
    // Each arm passes its own closure so that the loop inlines and vectorises it.
    let out = match kind {
        UnaryGradKind::Sqrt => apply(y, dy, &dims, |y, dy| dy / (2.0 * y)),
        UnaryGradKind::Reciprocal => apply(y, dy, &dims, |y, dy| -dy * y * y),
        UnaryGradKind::Exp => apply(y, dy, &dims, |y, dy| dy * y),
        UnaryGradKind::Log => apply(x, dy, &dims, |x, dy| dy / x),
        UnaryGradKind::Abs => apply(x, dy, &dims, abs_grad),
        UnaryGradKind::Erf => apply(x, dy, &dims, |x, dy| {
            dy * TWO_OVER_SQRT_PI * math::exp(-x * x)
        }),
        UnaryGradKind::Tanh => apply(y, dy, &dims, |y, dy| dy * (1.0 - y * y)),
        UnaryGradKind::Relu => apply(x, dy, &dims, |x, dy| if x > 0.0 { dy } else { 0.0 }),
        UnaryGradKind::Sigmoid => apply(y, dy, &dims, |y, dy| dy * y * (1.0 - y)),
        UnaryGradKind::Gelu(GeluApprox::None) => gelu_erf_grad(x, dy, &dims),
        UnaryGradKind::Gelu(GeluApprox::Tanh) => {
            apply(x, dy, &dims, |x, dy| dy * gelu_tanh_slope(x))
        }
    }?;
    CpuValue::from_f32(out, &dims, dtype)
}

/// `dy·(Φ(x) + x·φ(x))` in two vectorised passes: a loop body holding both the erf
/// and the exp polynomial is not vectorised and runs about 30 times slower.
fn gelu_erf_grad(x: &CpuValue, dy: &CpuValue, dims: &[usize]) -> OpResult<Vec<f32>> {
    let mut out = apply(x, dy, dims, |x, dy| {
        dy * x * INV_SQRT_2PI * math::exp(-0.5 * x * x)
    })?;
    let cdf_part = apply(x, dy, dims, |x, dy| {
        dy * (0.5 * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2)))
    })?;
    for (o, c) in out.iter_mut().zip(&cdf_part) {
        *o += c;
    }
    Ok(out)
}

/// `f(src, dy)` elementwise, row-major out.
fn apply(
    src: &CpuValue,
    dy: &CpuValue,
    dims: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> OpResult<Vec<f32>> {
    src.read_f32(|sv| dy.read_f32(|dv| Ok(map2(dims, &sv, &dv, f))))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::testing::*;
    use crate::exec::cpu::permute_value;
    use crate::ir::{GeluApprox, GradOp, UnaryGradKind};

    fn erf64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    /// The forward function in f64 and the interval its test inputs come from.
    fn forward(kind: UnaryGradKind) -> (fn(f64) -> f64, (f64, f64)) {
        use std::f64::consts::PI;
        match kind {
            UnaryGradKind::Sqrt => (f64::sqrt, (0.05, 4.0)),
            UnaryGradKind::Reciprocal => (|x| 1.0 / x, (0.2, 3.0)),
            UnaryGradKind::Exp => (f64::exp, (-3.0, 3.0)),
            UnaryGradKind::Log => (f64::ln, (0.05, 5.0)),
            UnaryGradKind::Abs => (f64::abs, (-3.0, 3.0)),
            UnaryGradKind::Erf => (erf64, (-3.0, 3.0)),
            UnaryGradKind::Tanh => (f64::tanh, (-4.0, 4.0)),
            UnaryGradKind::Relu => (|x| x.max(0.0), (-3.0, 3.0)),
            UnaryGradKind::Sigmoid => (|x| 1.0 / (1.0 + (-x).exp()), (-6.0, 6.0)),
            UnaryGradKind::Gelu(GeluApprox::None) => {
                (|x| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())), (-5.0, 5.0))
            }
            UnaryGradKind::Gelu(GeluApprox::Tanh) => (
                |x| 0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
                (-5.0, 5.0),
            ),
        }
    }

    /// Inputs in `range`, kept 1e-2 away from 0 where the function has a kink.
    fn inputs(rng: &mut StdRng, n: usize, (lo, hi): (f64, f64)) -> Vec<f64> {
        (0..n)
            .map(|_| {
                loop {
                    let v = rng.random_range(lo..hi) as f32 as f64;
                    if v.abs() > 1e-2 {
                        break v;
                    }
                }
            })
            .collect()
    }

    fn check_kind(kind: UnaryGradKind, dims: &[usize], rng: &mut StdRng) {
        let n: usize = dims.iter().product();
        let (f, range) = forward(kind);
        let x = inputs(rng, n, range);
        let y: Vec<f64> = x.iter().map(|&v| f(v) as f32 as f64).collect();
        let dy = random_vec(rng, n);
        let got = run_one(
            &GradOp::Unary(kind),
            &[
                Some(&f32_value(dims, &x)),
                Some(&f32_value(dims, &y)),
                Some(&f32_value(dims, &dy)),
            ],
        );
        assert_eq!(got.shape(), dims);
        let want: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| d * central_difference(f, v))
            .collect();
        assert_close(&got.to_f32_vec(), &want, 2e-4, &format!("{kind:?}"));
    }

    #[test]
    fn every_rule_matches_finite_differences_of_its_forward() {
        let mut rng = StdRng::seed_from_u64(11);
        for kind in UnaryGradKind::ALL {
            let rank = rng.random_range(1..4);
            let dims: Vec<usize> = (0..rank).map(|_| rng.random_range(1..7)).collect();
            check_kind(kind, &dims, &mut rng);
        }
    }

    #[test]
    fn large_tensors_go_through_the_parallel_path() {
        let mut rng = StdRng::seed_from_u64(12);
        for kind in [
            UnaryGradKind::Gelu(GeluApprox::None),
            UnaryGradKind::Sigmoid,
            UnaryGradKind::Log,
        ] {
            check_kind(kind, &[70, 1031], &mut rng);
        }
    }

    #[test]
    fn strided_inputs_are_read_through_their_views() {
        // dy arrives as a transposed view: element (i, j) of the [3, 4] value is
        // element (j, i) of the stored [4, 3] buffer.
        let x: Vec<f64> = (0..12).map(|i| 0.1 + i as f64 * 0.3).collect();
        let y: Vec<f64> = x.iter().map(|v| (v.ln() as f32) as f64).collect();
        let stored: Vec<f64> = (0..12).map(|i| i as f64 - 5.5).collect();
        let dy_t = permute_value(&f32_value(&[4, 3], &stored), &[1, 0]).unwrap();
        let got = run_one(
            &GradOp::Unary(UnaryGradKind::Log),
            &[
                Some(&f32_value(&[3, 4], &x)),
                Some(&f32_value(&[3, 4], &y)),
                Some(&dy_t),
            ],
        );
        let want: Vec<f64> = (0..12)
            .map(|k| {
                let (i, j) = (k / 4, k % 4);
                stored[j * 3 + i] / x[k]
            })
            .collect();
        assert_close(&got.to_f32_vec(), &want, 1e-6, "Log over a view");
    }

    #[test]
    fn kinks_and_zero_have_defined_slopes() {
        let x = [-1.0, 0.0, 2.0];
        let dy = [5.0, 7.0, 9.0];
        let v = f32_value(&[3], &x);
        let d = f32_value(&[3], &dy);
        let abs = run_one(
            &GradOp::Unary(UnaryGradKind::Abs),
            &[Some(&v), Some(&v), Some(&d)],
        );
        assert_eq!(abs.to_f32_vec(), vec![-5.0, 0.0, 9.0]);
        let relu = run_one(
            &GradOp::Unary(UnaryGradKind::Relu),
            &[Some(&v), Some(&v), Some(&d)],
        );
        assert_eq!(relu.to_f32_vec(), vec![0.0, 0.0, 9.0]);
    }

    #[test]
    fn mismatched_shapes_and_integer_inputs_are_errors() {
        let a = f32_value(&[2, 3], &[1.0; 6]);
        let b = f32_value(&[3, 2], &[1.0; 6]);
        let op = GradOp::Unary(UnaryGradKind::Exp);
        let e = run_err(&op, &[Some(&a), Some(&a), Some(&b)], 1);
        assert!(e.contains("dy of shape [3,2]"), "{e}");
        let i = i64_value(&[2, 3], &[1; 6]);
        let e = run_err(&op, &[Some(&a), Some(&a), Some(&i)], 1);
        assert!(e.contains("dy must be a float tensor"), "{e}");
        let e = run_err(&op, &[Some(&a), None, Some(&a)], 1);
        assert!(e.contains("missing input 1"), "{e}");
    }
}
