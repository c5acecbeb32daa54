//! ReduceSum, ReduceMean and ReduceMax over chosen, negative, all and no axes.

use super::*;
use crate::ir::ReduceOp;

fn reduce(op: ReduceOp, axes: Option<Vec<i64>>, keepdims: bool, x: Tensor) -> Tensor {
    eval_ok(
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes: false,
        },
        &[x],
    )
}

fn m23() -> Tensor {
    f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.])
}

#[test]
fn sum_mean_and_max_over_one_axis() {
    assert_f32(
        &reduce(ReduceOp::Sum, Some(vec![1]), true, m23()),
        &[2, 1],
        &[6., 15.],
        0.0,
    );
    assert_f32(
        &reduce(ReduceOp::Mean, Some(vec![0]), false, m23()),
        &[3],
        &[2.5, 3.5, 4.5],
        0.0,
    );
    assert_f32(
        &reduce(ReduceOp::Max, Some(vec![-1]), false, m23()),
        &[2],
        &[3., 6.],
        0.0,
    );
}

#[test]
fn all_axes_when_none_are_given() {
    assert_f32(
        &reduce(ReduceOp::Max, None, true, m23()),
        &[1, 1],
        &[6.],
        0.0,
    );
    assert_f32(&reduce(ReduceOp::Sum, None, false, m23()), &[], &[21.], 0.0);
    assert_f32(
        &reduce(ReduceOp::Mean, Some(vec![]), false, m23()),
        &[],
        &[3.5],
        0.0,
    );
}

#[test]
fn empty_axes_with_noop_returns_the_input() {
    let op = Op::Reduce {
        op: ReduceOp::Sum,
        axes: None,
        keepdims: true,
        noop_with_empty_axes: true,
    };
    assert_f32(
        &eval_ok(op, &[m23()]),
        &[2, 3],
        &[1., 2., 3., 4., 5., 6.],
        0.0,
    );
}

#[test]
fn inner_and_split_axes_of_a_3d_tensor() {
    // x[i,j,k] = 100i + 10j + k over [2,3,2].
    let v: Vec<f32> = (0..12)
        .map(|f| (100 * (f / 6) + 10 * ((f / 2) % 3) + f % 2) as f32)
        .collect();
    let x = f32t(&[2, 3, 2], &v);
    // Sum over j: 3·100i + 30 + 3k.
    assert_f32(
        &reduce(ReduceOp::Sum, Some(vec![1]), false, x.clone()),
        &[2, 2],
        &[30., 33., 330., 333.],
        0.0,
    );
    // Max over i and k (axes 0 and -1): 100 + 10j + 1.
    assert_f32(
        &reduce(ReduceOp::Max, Some(vec![0, -1]), true, x.clone()),
        &[1, 3, 1],
        &[101., 111., 121.],
        0.0,
    );
    assert!(
        eval_err(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: Some(vec![1, -2]),
                keepdims: true,
                noop_with_empty_axes: false
            },
            &[x]
        )
        .contains("repeat")
    );
}

#[test]
fn integer_sums_and_nan_propagation() {
    let got = reduce(
        ReduceOp::Sum,
        Some(vec![0]),
        false,
        i64t(&[2, 2], &[1, 2, 3, 4]),
    );
    assert_i64(&got, &[2], &[4, 6]);
    let got = reduce(ReduceOp::Max, None, false, f32t(&[3], &[1., f32::NAN, 2.]));
    assert!(got.as_f32().unwrap()[0].is_nan());
}

#[test]
fn max_of_bools_is_any() {
    let x = boolt(&[2, 3], &[false, true, false, false, false, false]);
    let got = reduce(ReduceOp::Max, Some(vec![1]), false, x.clone());
    assert_bool(&got, &[2], &[true, false]);
    let got = reduce(ReduceOp::Max, Some(vec![1]), true, boolt(&[2, 0], &[]));
    assert_bool(&got, &[2, 1], &[false, false]);
    assert!(
        eval_err(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: None,
                keepdims: false,
                noop_with_empty_axes: false
            },
            &[x]
        )
        .contains("not defined on bool")
    );
}
