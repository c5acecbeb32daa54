//! Resize in its modes, checked against hand-worked grids and a direct cubic
//! formula written here.

use super::*;
use crate::ir::{AspectPolicy, CoordTransform, NearestMode, ResizeAttrs, ResizeMode};

fn resize(
    attrs: ResizeAttrs,
    x: Tensor,
    roi: Option<Tensor>,
    scales: Option<Tensor>,
    sizes: Option<Tensor>,
) -> anyhow::Result<Tensor> {
    Ok(eval_opt(Op::Resize(attrs), &[Some(x), roi, scales, sizes], 1)?.remove(0))
}

fn attrs(mode: ResizeMode, coord: CoordTransform) -> ResizeAttrs {
    ResizeAttrs {
        mode,
        coord,
        ..ResizeAttrs::default()
    }
}

fn grid_2x2() -> Tensor {
    f32t(&[1, 1, 2, 2], &[1., 2., 3., 4.])
}

#[test]
fn nearest_upsampling_repeats_pixels() {
    let got = resize(
        attrs(ResizeMode::Nearest, CoordTransform::HalfPixel),
        grid_2x2(),
        None,
        Some(f32t(&[4], &[1., 1., 2., 3.])),
        None,
    )
    .unwrap();
    let want = [
        1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4., 3., 3., 3., 4., 4.,
        4.,
    ];
    assert_f32(&got, &[1, 1, 4, 6], &want, 0.0);
}

#[test]
fn nearest_modes_round_differently() {
    // Asymmetric, scale 2/3 on 3 → 2 samples at 0 and 1.5.
    let x = f32t(&[3], &[10., 20., 30.]);
    let run = |nearest| {
        let a = ResizeAttrs {
            nearest,
            ..attrs(ResizeMode::Nearest, CoordTransform::Asymmetric)
        };
        resize(a, x.clone(), None, None, Some(i64t(&[1], &[2]))).unwrap()
    };
    assert_f32(&run(NearestMode::RoundPreferFloor), &[2], &[10., 20.], 0.0);
    assert_f32(&run(NearestMode::RoundPreferCeil), &[2], &[10., 30.], 0.0);
    assert_f32(&run(NearestMode::Floor), &[2], &[10., 20.], 0.0);
    assert_f32(&run(NearestMode::Ceil), &[2], &[10., 30.], 0.0);
}

#[test]
fn linear_upsampling_with_half_pixel_centres() {
    let got = resize(
        attrs(ResizeMode::Linear, CoordTransform::HalfPixel),
        grid_2x2(),
        None,
        Some(f32t(&[4], &[1., 1., 2., 2.])),
        None,
    )
    .unwrap();
    let want = [
        1., 1.25, 1.75, 2., 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3., 3.25, 3.75, 4.,
    ];
    assert_f32(&got, &[1, 1, 4, 4], &want, 1e-6);
}

#[test]
fn linear_align_corners_uses_the_unrounded_resized_length() {
    // Width 4 at scale 0.6: 2 samples, the second at 1·3/(2.4−1) = 2.142857.
    let x = f32t(&[1, 1, 2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let got = resize(
        attrs(ResizeMode::Linear, CoordTransform::AlignCorners),
        x,
        None,
        Some(f32t(&[4], &[1., 1., 0.6, 0.6])),
        None,
    )
    .unwrap();
    assert_f32(&got, &[1, 1, 1, 2], &[1., 3.142_857], 1e-6);
}

/// Cubic interpolation at `x` straight from the kernel, edges clamped, optionally
/// dropping taps outside the input and renormalising.
fn cubic_ref(data: &[f32], x: f64, a: f64, exclude_outside: bool) -> f32 {
    let kern = |d: f64| {
        let d = d.abs();
        if d <= 1.0 {
            (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
        } else if d < 2.0 {
            a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
        } else {
            0.0
        }
    };
    let fl = x.floor() as i64;
    let (mut s, mut wsum) = (0f64, 0f64);
    for k in fl - 1..=fl + 2 {
        let inside = k >= 0 && k < data.len() as i64;
        if exclude_outside && !inside {
            continue;
        }
        let w = kern(x - k as f64);
        s += w * data[k.clamp(0, data.len() as i64 - 1) as usize] as f64;
        wsum += w;
    }
    (if exclude_outside { s / wsum } else { s }) as f32
}

#[test]
fn cubic_matches_the_kernel_formula() {
    let data = [1f32, 2., 4., 8., 3.];
    let x = f32t(&[1, 5], &data);
    for (a, exclude) in [(-0.75f32, false), (-0.5, true)] {
        let at = ResizeAttrs {
            cubic_coeff_a: a,
            exclude_outside: exclude,
            ..attrs(ResizeMode::Cubic, CoordTransform::HalfPixel)
        };
        let got = resize(at, x.clone(), None, None, Some(i64t(&[2], &[1, 8]))).unwrap();
        let scale = 8.0 / 5.0;
        let want: Vec<f32> = (0..8)
            .map(|y| cubic_ref(&data, (y as f64 + 0.5) / scale - 0.5, a as f64, exclude))
            .collect();
        assert_f32(&got, &[1, 8], &want, 1e-6);
    }
    // Asymmetric downsampling by 0.5 lands on grid points: plain subsampling.
    let at = attrs(ResizeMode::Cubic, CoordTransform::Asymmetric);
    let got = resize(
        at,
        f32t(&[4], &[1., 2., 4., 8.]),
        None,
        Some(f32t(&[1], &[0.5])),
        None,
    )
    .unwrap();
    assert_f32(&got, &[2], &[1., 4.], 1e-6);
}

#[test]
fn crop_and_resize_extrapolates_outside_the_crop() {
    let at = ResizeAttrs {
        axes: Some(vec![-1]),
        extrapolation_value: -1.0,
        ..attrs(ResizeMode::Linear, CoordTransform::TfCropAndResize)
    };
    // x = 1.5 + 1.5·y over [0, 3]: 1.5 → 15, 3 → 30, 4.5 → outside.
    let got = resize(
        at,
        f32t(&[1, 4], &[0., 10., 20., 30.]),
        Some(f32t(&[2], &[0.5, 1.5])),
        None,
        Some(i64t(&[1], &[3])),
    )
    .unwrap();
    assert_f32(&got, &[1, 3], &[15., 30., -1.], 1e-6);
}

#[test]
fn aspect_policy_scales_all_axes_alike() {
    let x = f32t(&[2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let at = |aspect| ResizeAttrs {
        aspect,
        ..attrs(ResizeMode::Nearest, CoordTransform::HalfPixel)
    };
    // Sizes 4×4 from 2×4: not_larger keeps scale 1, not_smaller doubles both axes.
    let got = resize(
        at(AspectPolicy::NotLarger),
        x.clone(),
        None,
        None,
        Some(i64t(&[2], &[4, 4])),
    )
    .unwrap();
    assert_f32(&got, &[2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.], 0.0);
    let got = resize(
        at(AspectPolicy::NotSmaller),
        x.clone(),
        None,
        None,
        Some(i64t(&[2], &[4, 4])),
    )
    .unwrap();
    let xv = [1., 2., 3., 4., 5., 6., 7., 8.];
    let want: Vec<f32> = (0..4 * 8)
        .map(|f| xv[(f / 8) / 2 * 4 + (f % 8) / 2])
        .collect();
    assert_f32(&got, &[4, 8], &want, 0.0);
}

#[test]
fn antialiased_linear_downsampling_widens_the_filter() {
    let at = ResizeAttrs {
        antialias: true,
        ..attrs(ResizeMode::Linear, CoordTransform::HalfPixel)
    };
    let x = f32t(&[8], &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let got = resize(at, x, None, Some(f32t(&[1], &[0.5])), None).unwrap();
    // Tent of half-width 2 around 2y+0.5, weights .25/.75/.75/.25 over 2.
    assert_f32(&got, &[4], &[0.625, 2.5, 4.5, 6.375], 1e-6);
}

#[test]
fn nearest_works_on_integers_and_bad_inputs_are_errors() {
    let at = attrs(ResizeMode::Nearest, CoordTransform::Asymmetric);
    let got = resize(
        at.clone(),
        i64t(&[2], &[7, 9]),
        None,
        Some(f32t(&[1], &[2.])),
        None,
    )
    .unwrap();
    assert_i64(&got, &[4], &[7, 7, 9, 9]);
    let both = resize(
        at.clone(),
        grid_2x2(),
        None,
        Some(f32t(&[4], &[1.; 4])),
        Some(i64t(&[4], &[1; 4])),
    );
    assert!(
        both.unwrap_err()
            .to_string()
            .contains("only one of scales and sizes")
    );
    let neither = resize(at.clone(), grid_2x2(), None, Some(f32t(&[0], &[])), None);
    assert!(
        neither
            .unwrap_err()
            .to_string()
            .contains("one of scales and sizes")
    );
    let wrong = resize(at, grid_2x2(), None, Some(f32t(&[2], &[1., 2.])), None);
    assert!(
        wrong
            .unwrap_err()
            .to_string()
            .contains("2 scales for 4 axes")
    );
}

#[test]
fn huge_requested_sizes_are_errors() {
    let at = attrs(ResizeMode::Nearest, CoordTransform::Asymmetric);
    let err = resize(
        at.clone(),
        grid_2x2(),
        None,
        None,
        Some(i64t(&[4], &[1, 1, 1 << 20, 1 << 20])),
    );
    assert!(err.unwrap_err().to_string().contains("too large"));
    let err = resize(
        at,
        grid_2x2(),
        None,
        Some(f32t(&[4], &[1., 1., 1e30, 1.])),
        None,
    );
    assert!(err.unwrap_err().to_string().contains("too large"));
}
