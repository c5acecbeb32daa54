//! Reshape, Transpose, Concat, Split, Gather, Slice, Squeeze, Unsqueeze, Flatten,
//! Shape, Expand, Identity, ConstantOfShape and Range.

use super::*;

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    f32t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
}

fn iota_vals(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

#[test]
fn reshape_copies_zeros_and_infers_minus_one() {
    let got = eval_ok(
        Op::Reshape { allowzero: false },
        &[iota(&[2, 3, 4]), i64t(&[2], &[0, -1])],
    );
    assert_f32(&got, &[2, 12], &iota_vals(24), 0.0);
    let got = eval_ok(
        Op::Reshape { allowzero: true },
        &[f32t(&[0, 3], &[]), i64t(&[2], &[3, 0])],
    );
    assert_f32(&got, &[3, 0], &[], 0.0);
    let msg = eval_err(
        Op::Reshape { allowzero: false },
        &[iota(&[2, 3]), i64t(&[2], &[4, -1])],
    );
    assert!(msg.contains("cannot reshape [2,3] to [4,-1]"), "{msg}");
}

#[test]
fn transpose_reverses_or_follows_perm() {
    let got = eval_ok(Op::Transpose { perm: None }, &[iota(&[2, 3])]);
    assert_f32(&got, &[3, 2], &[0., 3., 1., 4., 2., 5.], 0.0);
    // [2,2,2] with perm [1,0,2]: y[j,i,k] = x[i,j,k] = 4i + 2j + k.
    let got = eval_ok(
        Op::Transpose {
            perm: Some(vec![1, 0, 2]),
        },
        &[iota(&[2, 2, 2])],
    );
    assert_f32(&got, &[2, 2, 2], &[0., 1., 4., 5., 2., 3., 6., 7.], 0.0);
    assert!(
        eval_err(
            Op::Transpose {
                perm: Some(vec![0, 0])
            },
            &[iota(&[2, 2])]
        )
        .contains("permutation")
    );
}

#[test]
fn concat_on_a_negative_axis() {
    let a = iota(&[2, 1]);
    let b = f32t(&[2, 2], &[10., 11., 12., 13.]);
    let got = eval_ok(Op::Concat { axis: -1 }, &[a, b]);
    assert_f32(&got, &[2, 3], &[0., 10., 11., 1., 12., 13.], 0.0);
    let got = eval_ok(
        Op::Concat { axis: 0 },
        &[i64t(&[1], &[5]), i64t(&[0], &[]), i64t(&[2], &[6, 7])],
    );
    assert_i64(&got, &[3], &[5, 6, 7]);
    assert!(
        eval_err(Op::Concat { axis: 0 }, &[iota(&[1, 2]), iota(&[1, 3])])
            .contains("cannot concatenate")
    );
}

#[test]
fn split_into_equal_and_given_parts() {
    let out = eval_opt(
        Op::Split {
            axis: 0,
            sizes: None,
        },
        &[Some(iota(&[5]))],
        2,
    )
    .unwrap();
    assert_f32(&out[0], &[3], &[0., 1., 2.], 0.0);
    assert_f32(&out[1], &[2], &[3., 4.], 0.0);
    let out = eval_opt(
        Op::Split {
            axis: -1,
            sizes: Some(vec![1, 0, 2]),
        },
        &[Some(iota(&[2, 3]))],
        3,
    )
    .unwrap();
    assert_f32(&out[0], &[2, 1], &[0., 3.], 0.0);
    assert_f32(&out[1], &[2, 0], &[], 0.0);
    assert_f32(&out[2], &[2, 2], &[1., 2., 4., 5.], 0.0);
    let err = eval_opt(
        Op::Split {
            axis: 0,
            sizes: Some(vec![1, 1]),
        },
        &[Some(iota(&[3]))],
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("do not add up"));
}

#[test]
fn gather_with_negative_and_nested_indices() {
    let x = iota(&[3, 2]);
    let got = eval_ok(Op::Gather { axis: 0 }, &[x.clone(), i64t(&[2], &[-1, 0])]);
    assert_f32(&got, &[2, 2], &[4., 5., 0., 1.], 0.0);
    let got = eval_ok(
        Op::Gather { axis: 1 },
        &[x.clone(), i64t(&[2, 2], &[1, 0, 1, 1])],
    );
    assert_f32(
        &got,
        &[3, 2, 2],
        &[1., 0., 1., 1., 3., 2., 3., 3., 5., 4., 5., 5.],
        0.0,
    );
    let got = eval_ok(Op::Gather { axis: 0 }, &[x.clone(), Tensor::scalar_i64(1)]);
    assert_f32(&got, &[2], &[2., 3.], 0.0);
    let got = eval_ok(
        Op::Gather { axis: 0 },
        &[boolt(&[3], &[true, false, true]), i32t(&[2], &[1, 2])],
    );
    assert_bool(&got, &[2], &[false, true]);
    let msg = eval_err(Op::Gather { axis: 0 }, &[x, i64t(&[1], &[3])]);
    assert!(msg.contains("index 3 is out of range"), "{msg}");
}

fn slice(
    x: Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Tensor {
    let n = starts.len();
    let t = |v: &[i64]| i64t(&[v.len()], v);
    eval_opt(
        Op::Slice,
        &[
            Some(x),
            Some(t(starts)),
            Some(t(ends)),
            axes.map(t),
            steps.map(t),
        ],
        1,
    )
    .map(|mut v| v.remove(0))
    .unwrap_or_else(|e| panic!("slice of {n} axes: {e}"))
}

#[test]
fn slice_with_negative_steps_clamping_and_axes() {
    let got = slice(iota(&[10]), &[-1], &[i64::MIN], None, Some(&[-2]));
    assert_f32(&got, &[5], &[9., 7., 5., 3., 1.], 0.0);
    let got = slice(iota(&[10]), &[2], &[1000], None, None);
    assert_f32(&got, &[8], &iota_vals(10)[2..], 0.0);
    // [3,4]: rows 1.., columns 3 down to 1.
    let got = slice(
        iota(&[3, 4]),
        &[3, 1],
        &[0, 1000],
        Some(&[-1, 0]),
        Some(&[-1, 1]),
    );
    assert_f32(&got, &[2, 3], &[7., 6., 5., 11., 10., 9.], 0.0);
    let got = slice(iota(&[4]), &[3], &[1], None, None);
    assert_f32(&got, &[0], &[], 0.0);
    let got = slice(i64t(&[4], &[1, 2, 3, 4]), &[0], &[4], None, Some(&[3]));
    assert_i64(&got, &[2], &[1, 4]);
}

#[test]
fn squeeze_unsqueeze_flatten() {
    let x = iota(&[1, 3, 1]);
    assert_eq!(
        eval_ok(Op::Squeeze { axes: None }, std::slice::from_ref(&x)).shape(),
        &[3]
    );
    assert_eq!(
        eval_ok(
            Op::Squeeze {
                axes: Some(vec![-1])
            },
            std::slice::from_ref(&x)
        )
        .shape(),
        &[1, 3]
    );
    assert!(
        eval_err(
            Op::Squeeze {
                axes: Some(vec![1])
            },
            std::slice::from_ref(&x)
        )
        .contains("cannot squeeze")
    );
    let got = eval_ok(Op::Unsqueeze { axes: vec![0, -1] }, &[iota(&[2, 3])]);
    assert_f32(&got, &[1, 2, 3, 1], &iota_vals(6), 0.0);
    let got = eval_ok(Op::Unsqueeze { axes: vec![1] }, &[iota(&[2])]);
    assert_eq!(got.shape(), &[2, 1]);
    assert_eq!(
        eval_ok(Op::Flatten { axis: 0 }, &[iota(&[2, 3, 4])]).shape(),
        &[1, 24]
    );
    assert_eq!(
        eval_ok(Op::Flatten { axis: -1 }, &[iota(&[2, 3, 4])]).shape(),
        &[6, 4]
    );
    assert_eq!(
        eval_ok(Op::Flatten { axis: 3 }, &[iota(&[2, 3, 4])]).shape(),
        &[24, 1]
    );
}

#[test]
fn shape_with_start_and_end() {
    let x = iota(&[2, 3, 4]);
    assert_i64(
        &eval_ok(
            Op::Shape {
                start: 0,
                end: None,
            },
            std::slice::from_ref(&x),
        ),
        &[3],
        &[2, 3, 4],
    );
    assert_i64(
        &eval_ok(
            Op::Shape {
                start: -2,
                end: None,
            },
            std::slice::from_ref(&x),
        ),
        &[2],
        &[3, 4],
    );
    assert_i64(
        &eval_ok(
            Op::Shape {
                start: 1,
                end: Some(-1),
            },
            std::slice::from_ref(&x),
        ),
        &[1],
        &[3],
    );
    assert_i64(
        &eval_ok(
            Op::Shape {
                start: -10,
                end: Some(10),
            },
            std::slice::from_ref(&x),
        ),
        &[3],
        &[2, 3, 4],
    );
    assert_i64(
        &eval_ok(
            Op::Shape {
                start: 2,
                end: Some(1),
            },
            &[x],
        ),
        &[0],
        &[],
    );
}

#[test]
fn expand_broadcasts_both_ways() {
    let got = eval_ok(
        Op::Expand,
        &[f32t(&[3, 1], &[1., 2., 3.]), i64t(&[3], &[2, 1, 2])],
    );
    assert_f32(
        &got,
        &[2, 3, 2],
        &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.],
        0.0,
    );
    assert!(eval_err(Op::Expand, &[iota(&[3]), i64t(&[1], &[2])]).contains("cannot expand"));
}

#[test]
fn expanded_values_feed_later_ops() {
    // An expanded view (stride 0) read by Add and by Reshape.
    let e = eval_ok(Op::Expand, &[f32t(&[1, 2], &[1., 2.]), i64t(&[2], &[3, 2])]);
    let got = eval_ok(Op::Reshape { allowzero: false }, &[e, i64t(&[1], &[-1])]);
    assert_f32(&got, &[6], &[1., 2., 1., 2., 1., 2.], 0.0);
}

#[test]
fn identity_constant_of_shape_and_range() {
    assert_i64(
        &eval_ok(Op::Identity, &[i64t(&[2], &[4, 5])]),
        &[2],
        &[4, 5],
    );
    let got = eval_ok(
        Op::ConstantOfShape {
            value: Tensor::scalar_f32(1.5),
        },
        &[i64t(&[2], &[2, 1])],
    );
    assert_f32(&got, &[2, 1], &[1.5, 1.5], 0.0);
    let got = eval_ok(
        Op::ConstantOfShape {
            value: Tensor::new(vec![1], TensorData::I32(vec![0])).unwrap(),
        },
        &[i64t(&[1], &[0])],
    );
    assert_eq!((got.shape(), got.dtype()), (&[0][..], DType::I32));
    let got = eval_ok(
        Op::Range,
        &[
            Tensor::scalar_f32(1.),
            Tensor::scalar_f32(5.),
            Tensor::scalar_f32(1.5),
        ],
    );
    assert_f32(&got, &[3], &[1., 2.5, 4.], 0.0);
    let got = eval_ok(
        Op::Range,
        &[i32t(&[], &[10]), i32t(&[], &[4]), i32t(&[], &[-3])],
    );
    assert_eq!(got.data(), &TensorData::I32(vec![10, 7]));
    let got = eval_ok(
        Op::Range,
        &[
            Tensor::scalar_i64(0),
            Tensor::scalar_i64(-3),
            Tensor::scalar_i64(1),
        ],
    );
    assert_i64(&got, &[0], &[]);
    assert!(
        eval_err(
            Op::Range,
            &[
                Tensor::scalar_i64(0),
                Tensor::scalar_i64(3),
                Tensor::scalar_i64(0)
            ]
        )
        .contains("delta")
    );
}

#[test]
fn sizes_from_data_that_overflow_are_errors_not_panics() {
    let big = i64::MAX / 2;
    let msg = eval_err(
        Op::Reshape { allowzero: false },
        &[iota(&[2, 3]), i64t(&[3], &[big, big, -1])],
    );
    assert!(msg.contains("cannot reshape"), "{msg}");
    let msg = eval_err(
        Op::ConstantOfShape {
            value: Tensor::scalar_f32(0.),
        },
        &[i64t(&[2], &[1 << 40, 1 << 40])],
    );
    assert!(msg.contains("too large"), "{msg}");
    let msg = eval_err(
        Op::Expand,
        &[iota(&[1]), i64t(&[3], &[1 << 30, 1 << 30, 4])],
    );
    assert!(msg.contains("too large"), "{msg}");
    let msg = eval_err(
        Op::Range,
        &[
            Tensor::scalar_f32(0.),
            Tensor::scalar_f32(1e30),
            Tensor::scalar_f32(1.),
        ],
    );
    assert!(msg.contains("too long"), "{msg}");
}
