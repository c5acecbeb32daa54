//! Scalar f32 functions for the fused kernels (softmax, GELU): `exp` and
//! `erf` written without library calls so that the compiler can vectorise the loops
//! that use them, accurate to a few 1e-7 relative (tests check them against f64
//! references). Plain unary ops use the standard library instead.

/// e^x. Range reduction x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 Taylor
/// polynomial for e^r, and 2^(n−1) assembled in the exponent bits (then doubled, so
/// that n = 128 near the overflow threshold still fits).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in two so that n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -86.5;
    const HI: f32 = 88.72;
    let xc = x.clamp(LO, HI);
    let k = xc * LOG2E + ROUND;
    let n = k - ROUND;
    // k's low mantissa bits hold n: read it without a float-to-int conversion,
    // which does not vectorise.
    let ni = (k.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let half_scale = f32::from_bits((ni.wrapping_add(126) as u32) << 23);
    let y = p * half_scale * 2.0;
    // Beyond the range: overflow to inf, results below ~1e-38 flush to 0 (only
    // sums of exponentials use this), NaN stays NaN.
    if x > HI {
        f32::INFINITY
    } else if x < LO {
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
        std::f32::consts::FRAC_2_SQRT_PI,
        0.200_079_52,
        0.050_579_82,
        0.003_701_280_8,
        0.000_141_292_13,
        -1.942_101e-6,
        1.966_770_2e-8,
    ];
    const Q: [f32; 5] = [
        1.0,
        0.510_647_65,
        0.115_049_42,
        0.014_357_079,
        0.000_954_246_3,
    ];
    let xc = x.clamp(-4.0, 4.0);
    let t = xc * xc;
    let p = P[0] + t * (P[1] + t * (P[2] + t * (P[3] + t * (P[4] + t * (P[5] + t * P[6])))));
    let q = Q[0] + t * (Q[1] + t * (Q[2] + t * (Q[3] + t * Q[4])));
    let y = (xc * p / q).clamp(-1.0, 1.0);
    if x.is_nan() { x } else { y }
}

/// GELU with the exact (erf) form.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation, using 1 + tanh(u) = 2/(1 + e^{−2u}) so that
/// no cancellation occurs.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    let u = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
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

/// Σ (x − mean)², with eight accumulators as in [`sum`].
#[inline(always)]
pub(crate) fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in rest {
        s += (x - mean) * (x - mean);
    }
    s
}

/// Maximum that propagates NaN, with eight lanes as in [`sum`].
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_err(got: f32, want: f64) -> f64 {
        let g = got as f64;
        if want == 0.0 {
            g.abs()
        } else {
            ((g - want) / want).abs()
        }
    }

    #[test]
    fn exp_matches_f64_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.72 {
            let want = (x as f64).exp();
            if x >= -86.5 {
                worst = worst.max(rel_err(exp(x), want));
            } else {
                assert!((exp(x) as f64 - want).abs() < 3e-38, "exp({x})");
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
    fn gelu_forms_match_their_definitions() {
        for &x in &[-3.0f32, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5] {
            let xd = x as f64;
            let exact = 0.5 * xd * (1.0 + candle_core::cpu::erf::erf_f64(xd / 2f64.sqrt()));
            assert!((gelu_erf(x) as f64 - exact).abs() < 1e-6, "gelu_erf({x})");
            let approx = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!(
                (gelu_tanh(x) as f64 - approx).abs() < 1e-6,
                "gelu_tanh({x})"
            );
        }
    }
}
