//! Element-wise comparison of two sets of outputs, as `glora verify` reports it.

use crate::ir::Tensor;

/// How far one output of model A is from the same output of model B (the reference).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub name: String,
    pub shape_a: Vec<usize>,
    pub shape_b: Vec<usize>,
    /// Largest |a − b|; infinite when the shapes differ or only one side is NaN.
    pub max_abs: f64,
    /// `max_abs` divided by the largest |b| (the reference's scale), 0 when b is all 0.
    pub max_rel: f64,
}

impl Comparison {
    pub fn within(&self, tolerance: f64) -> bool {
        self.max_abs <= tolerance
    }
}

/// Compares `a[i]` with the reference `b[i]` for every output name.
pub fn compare_outputs(names: &[String], a: &[Tensor], b: &[Tensor]) -> Vec<Comparison> {
    names
        .iter()
        .zip(a.iter().zip(b))
        .map(|(name, (x, y))| compare_one(name, x, y))
        .collect()
}

fn compare_one(name: &str, a: &Tensor, b: &Tensor) -> Comparison {
    let mut c = Comparison {
        name: name.to_string(),
        shape_a: a.shape().to_vec(),
        shape_b: b.shape().to_vec(),
        max_abs: f64::INFINITY,
        max_rel: f64::INFINITY,
    };
    if a.shape() != b.shape() {
        return c;
    }
    let (xa, xb) = (a.to_f64_vec(), b.to_f64_vec());
    let mut max_abs = 0.0f64;
    let mut scale = 0.0f64;
    for (&p, &q) in xa.iter().zip(&xb) {
        let d = match (p.is_nan(), q.is_nan()) {
            (true, true) => 0.0,
            (false, false) if p == q => 0.0,
            (false, false) => (p - q).abs(),
            _ => f64::INFINITY,
        };
        max_abs = max_abs.max(d);
        if q.is_finite() {
            scale = scale.max(q.abs());
        }
    }
    c.max_abs = max_abs;
    c.max_rel = if scale > 0.0 {
        max_abs / scale
    } else {
        max_abs
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_largest_difference_and_scale() {
        let a = Tensor::from_f32(vec![3], vec![1.0, 2.5, -4.0]).unwrap();
        let b = Tensor::from_f32(vec![3], vec![1.0, 2.0, -4.25]).unwrap();
        let c = &compare_outputs(&["y".into()], &[a], &[b])[0];
        assert_eq!(c.max_abs, 0.5);
        assert_eq!(c.max_rel, 0.5 / 4.25);
        assert!(c.within(0.5) && !c.within(0.49));
    }

    #[test]
    fn shape_mismatch_and_lone_nan_are_infinite() {
        let a = Tensor::from_f32(vec![2], vec![1.0, f32::NAN]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![1.0, 0.0]).unwrap();
        assert!(
            compare_outputs(&["y".into()], std::slice::from_ref(&a), &[b])[0]
                .max_abs
                .is_infinite()
        );
        let c = Tensor::from_f32(vec![1, 2], vec![1.0, f32::NAN]).unwrap();
        assert!(
            compare_outputs(&["y".into()], std::slice::from_ref(&a), &[c])[0]
                .max_abs
                .is_infinite()
        );
        assert_eq!(
            compare_outputs(
                &["y".into()],
                std::slice::from_ref(&a),
                std::slice::from_ref(&a)
            )[0]
            .max_abs,
            0.0
        );
    }
}
