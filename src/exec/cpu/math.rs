//! Scalar f32 functions for the fused kernels (softmax, GELU): `exp` and
//! `erf` written without library calls so that the compiler can vectorise the loops
//! that use them, accurate to a few 1e-7 relative (tests check them against f64
//! references). Plain unary ops use the standard library instead.

/// e^x. Range reduction x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 Taylor
/// polynomial for e^r, and 2^n assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = p * scale;
    // Out of the clamped range: overflow to inf, results below the normal range
    // flush to 0 (only sums of exponentials use this), NaN stays NaN.
    if x > 88.72284 {
        f32::INFINITY
    } else if x < -87.0 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf(x) as x·P(x²)/Q(x²) on [-4, 4] (erf is ±1 in f32 beyond), with
/// coefficients fitted by iterated weighted least squares for relative error;
/// the maximum relative error in f32 is about 4.4e-7.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: [f32; 7] = [
        1.128_379_1,
        0.200_079_52,
        0.050_579_82,
        0.003_701_280_8,
        0.000_141_292_13,
        -1.942_101e-6,
        1.966_770_1e-8,
    ];
    const Q: [f32; 5] = [1.0, 0.510_647_65, 0.115_049_425, 0.014_357_079, 0.000_954_246_3];
    let xc = x.clamp(-4.0, 4.0);
    let t = xc * xc;
    let p = P[0] + t * (P[1] + t * (P[2] + t * (P[3] + t * (P[4] + t * (P[5] + t * P[6])))));
    let q = Q[0] + t * (Q[1] + t * (Q[2] + t * (Q[3] + t * Q[4])));
    let y = xc * p / q;
    if x.is_nan() { x } else { y }
}

/// tanh(x) = 1 − 2/(e^{2x} + 1), with the odd symmetry used so that small |x|
/// keeps its relative precision.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let y = if a < 0.0625 {
        // tanh a = a − a³/3 + 2a⁵/15 − 17a⁷/315 to f32 precision here.
        let t = a * a;
        a * (1.0 + t * (-1.0 / 3.0 + t * (2.0 / 15.0 - t * (17.0 / 315.0))))
    } else {
        1.0 - 2.0 / (exp(2.0 * a) + 1.0)
    };
    if x.is_nan() { x } else { y.copysign(x) }
}

/// GELU with the exact (erf) form.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + tanh(K * (x + 0.044_715 * x * x * x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_err(got: f32, want: f64) -> f64 {
        let g = got as f64;
        if want == 0.0 { g.abs() } else { ((g - want) / want).abs() }
    }

    #[test]
    fn exp_matches_f64_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.7 {
            let want = (x as f64).exp();
            if x >= -87.0 {
                worst = worst.max(rel_err(exp(x), want));
            } else {
                assert!((exp(x) as f64 - want).abs() < 2e-38, "exp({x})");
            }
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_matches_f64_reference() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max(rel_err(erf(x), want));
            x += 0.000_97;
        }
        assert!(worst < 6e-7, "worst relative error {worst}");
        assert!(rel_err(erf(1e-6), 1.128_379_167e-6) < 1e-6);
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(f32::INFINITY), 1.0);
    }

    #[test]
    fn tanh_matches_f64() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let t = (x as f64).tanh();
            assert!((tanh(x) as f64 - t).abs() <= 3e-7 * t.abs().max(1e-30) + 1e-12, "tanh({x})");
            x += 0.0071;
        }
    }

    #[test]
    fn gelu_forms_match_their_definitions() {
        for &x in &[-3.0f32, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5] {
            let xd = x as f64;
            let exact = 0.5 * xd * (1.0 + candle_core::cpu::erf::erf_f64(xd / 2f64.sqrt()));
            assert!((gelu_erf(x) as f64 - exact).abs() < 1e-6, "gelu_erf({x})");
            let approx = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!((gelu_tanh(x) as f64 - approx).abs() < 1e-6, "gelu_tanh({x})");
        }
    }
}
