//! ReduceMean, ReduceSum and ReduceMax over any set of axes. The kept axes are moved
//! in front of the reduced ones (a copy only when that order is not already
//! contiguous), then each contiguous row of reduced elements collapses to one value.

use crate::exec::shapes;
use crate::ir::ReduceOp;

use super::math::{max, sum};
use super::strided::for_rows;
use super::value::{CpuValue, OpError, OpResult, bail};

pub(crate) fn reduce(
    x: &CpuValue,
    op: ReduceOp,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> OpResult<CpuValue> {
    let Some(plan) =
        shapes::reduce_plan(x.dims(), axes, keepdims, noop_with_empty_axes).map_err(OpError)?
    else {
        return Ok(x.clone());
    };
    let shapes::ReducePlan {
        perm,
        rows,
        row_len: len,
        out_dims,
    } = plan;
    let dtype = x.dtype();
    if dtype.is_float() {
        let out = x.read_f32(|v| {
            let data = v.permuted(&perm).to_contiguous();
            let mut out = vec![0f32; rows];
            match op {
                ReduceOp::Sum => {
                    for_rows(&data, len, &mut out, 1, |row, o| o[0] = row.iter().sum())
                }
                ReduceOp::Mean => for_rows(&data, len, &mut out, 1, |row, o| {
                    o[0] = sum(row) / len as f32
                }),
                ReduceOp::Max => for_rows(&data, len, &mut out, 1, |row, o| o[0] = max(row)),
            }
            Ok(out)
        })?;
        CpuValue::from_f32(out, &out_dims, dtype)
    } else if dtype.is_int() {
        let out = x.read_i64(|v| {
            let data = v.permuted(&perm).to_contiguous();
            let mut out = vec![0i64; rows];
            match op {
                ReduceOp::Sum => for_rows(&data, len, &mut out, 1, |row, o| {
                    o[0] = row.iter().fold(0i64, |s, &a| s.wrapping_add(a))
                }),
                ReduceOp::Mean => for_rows(&data, len, &mut out, 1, |row, o| {
                    let s = row.iter().fold(0i64, |s, &a| s.wrapping_add(a));
                    o[0] = if len == 0 { 0 } else { s / len as i64 }
                }),
                ReduceOp::Max => for_rows(&data, len, &mut out, 1, |row, o| {
                    o[0] = row.iter().copied().max().unwrap_or(i64::MIN)
                }),
            }
            Ok(out)
        })?;
        CpuValue::from_i64(out, &out_dims, dtype)
    } else if op == ReduceOp::Max {
        // The maximum of bools is their disjunction; of none, false.
        let out = x.read_bool(|v| {
            let data = v.permuted(&perm).to_contiguous();
            let mut out = vec![0u8; rows];
            for_rows(&data, len, &mut out, 1, |row, o| {
                o[0] = u8::from(row.iter().any(|&b| b != 0))
            });
            Ok(out)
        })?;
        CpuValue::from_bool(out, &out_dims)
    } else {
        bail!("not defined on {dtype}")
    }
}
