//! Scatter-backs of the indexing ops: the gradient of Gather adds each `dy` slab to
//! the row of `x` its index picked (repeated indices accumulate), and the gradient of
//! Slice writes `dy` into the positions the forward Slice read (ONNX clamping,
//! negative indices and steps), zeros elsewhere. Both produce a fresh `x`-shaped
//! tensor from the incoming gradient and the forward's integer inputs.

use crate::exec::cpu::shape_ops::{gather_positions, slice_plan};

use rayon::prelude::*;

use crate::exec::cpu::axis_index;
use crate::exec::cpu::strided::PAR_MIN_ELEMS;
use crate::exec::cpu::value::{CpuValue, OpError, OpResult, bail, sh};
use crate::exec::shapes::check_gather_dy;

use super::{contiguous_strides, float_dtype};

/// The forward Slice's integer inputs.
pub(super) struct SliceArgs<'a> {
    pub starts: &'a CpuValue,
    pub ends: &'a CpuValue,
    pub axes: Option<&'a CpuValue>,
    pub steps: Option<&'a CpuValue>,
}

pub(super) fn gather_grad(
    indices: &CpuValue,
    dy: &CpuValue,
    axis: i64,
    x_shape: &[usize],
) -> OpResult<CpuValue> {
    let dtype = float_dtype(dy, "dy")?;
    let ax = axis_index(axis, x_shape.len())?;
    let d = x_shape[ax];
    let pos = gather_positions(indices, d, ax)?;
    check_gather_dy(x_shape, ax, indices.dims(), dy.dims()).map_err(OpError)?;
    let outer: usize = x_shape[..ax].iter().product();
    let inner: usize = x_shape[ax + 1..].iter().product();
    let (in_block, out_block) = (pos.len() * inner, d * inner);
    let mut dx = vec![0f32; outer * out_block];
    if inner > 0 && out_block > 0 {
        dy.read_f32(|dv| {
            let ds = dv.to_contiguous();
            // Within one outer block the slabs are added in index order, so repeated
            // indices always sum the same way.
            let block = |(o, src): (&mut [f32], &[f32])| {
                for (&p, slab) in pos.iter().zip(src.chunks_exact(inner)) {
                    for (t, &v) in o[p * inner..(p + 1) * inner].iter_mut().zip(slab) {
                        *t += v;
                    }
                }
            };
            if dx.len() + ds.len() >= PAR_MIN_ELEMS && outer > 1 {
                dx.par_chunks_mut(out_block)
                    .zip(ds.par_chunks(in_block.max(1)))
                    .for_each(block);
            } else {
                dx.chunks_mut(out_block)
                    .zip(ds.chunks(in_block.max(1)))
                    .for_each(block);
            }
            Ok(())
        })?;
    }
    CpuValue::from_f32(dx, x_shape, dtype)
}

pub(super) fn slice_grad(
    dy: &CpuValue,
    args: &SliceArgs<'_>,
    x_shape: &[usize],
) -> OpResult<CpuValue> {
    let dtype = float_dtype(dy, "dy")?;
    let plan = slice_plan(x_shape, args.starts, args.ends, args.axes, args.steps)?;
    let lens: Vec<usize> = plan.iter().map(|p| p.len).collect();
    if dy.dims() != lens {
        bail!(
            "dy of shape {} does not match the Slice output {} of x {}",
            sh(dy.dims()),
            sh(&lens),
            sh(x_shape)
        );
    }
    let mut dx = vec![0f32; x_shape.iter().product()];
    if lens.contains(&0) {
        return CpuValue::from_f32(dx, x_shape, dtype);
    }
    let strides = contiguous_strides(x_shape);
    // Where element 0 of dy lands and how far each dy axis moves in dx.
    let base: i64 = plan
        .iter()
        .zip(&strides)
        .map(|(p, &s)| p.start * s as i64)
        .sum();
    let steps: Vec<i64> = plan
        .iter()
        .zip(&strides)
        .map(|(p, &s)| p.step * s as i64)
        .collect();
    dy.read_f32(|dv| {
        let ds = dv.to_contiguous();
        let r = lens.len();
        if r == 0 {
            dx.copy_from_slice(&ds);
            return Ok(());
        }
        let (inner, inner_step) = (lens[r - 1], steps[r - 1]);
        let mut idx = vec![0usize; r - 1];
        for row in ds.chunks_exact(inner) {
            let at: i64 = base
                + idx
                    .iter()
                    .zip(&steps)
                    .map(|(&i, &s)| i as i64 * s)
                    .sum::<i64>();
            for (j, &v) in row.iter().enumerate() {
                dx[(at + j as i64 * inner_step) as usize] = v;
            }
            for a in (0..r - 1).rev() {
                idx[a] += 1;
                if idx[a] < lens[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        Ok(())
    })?;
    CpuValue::from_f32(dx, x_shape, dtype)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::testing::*;
    use crate::exec::cpu::shape_ops;
    use crate::exec::cpu::value::CpuValue;
    use crate::ir::GradOp;

    /// Gather in f64 with already normalised positions.
    fn gather64(x: &[f64], x_shape: &[usize], ax: usize, pos: &[usize], n_idx: usize) -> Vec<f64> {
        let outer: usize = x_shape[..ax].iter().product();
        let inner: usize = x_shape[ax + 1..].iter().product();
        let d = x_shape[ax];
        let mut out = Vec::new();
        for o in 0..outer {
            for &p in &pos[..n_idx] {
                for i in 0..inner {
                    out.push(x[(o * d + p) * inner + i]);
                }
            }
        }
        out
    }

    /// Checks one Gather backward against finite differences of the f64 forward and
    /// the adjoint identity with both that forward and the backend's Gather.
    fn check_gather(
        x_shape: &[usize],
        axis: i64,
        idx_dims: &[usize],
        idx: &[i64],
        rng: &mut StdRng,
    ) {
        let r = x_shape.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis } as usize;
        let d = x_shape[ax] as i64;
        let pos: Vec<usize> = idx
            .iter()
            .map(|&i| if i < 0 { i + d } else { i } as usize)
            .collect();
        let nx: usize = x_shape.iter().product();
        let x = random_vec(rng, nx);
        let y = gather64(&x, x_shape, ax, &pos, idx.len());
        let dy = random_vec(rng, y.len());
        let mut y_dims = x_shape[..ax].to_vec();
        y_dims.extend(idx_dims);
        y_dims.extend(&x_shape[ax + 1..]);
        let indices = i64_value(idx_dims, idx);
        let op = GradOp::Gather {
            axis,
            x_shape: x_shape.to_vec(),
        };
        let dx = run_one(&op, &[Some(&indices), Some(&f32_value(&y_dims, &dy))]);
        assert_eq!(dx.shape(), x_shape);
        let dx = dx.to_f32_vec();
        let what = format!("gather {x_shape:?} axis {axis} indices {idx:?}");
        if dy.is_empty() {
            assert!(dx.iter().all(|&v| v == 0.0), "{what}");
            return;
        }
        if nx * dy.len() < 1 << 22 {
            let want = numeric_gradient(
                |v| dot64(&dy, &gather64(v, x_shape, ax, &pos, idx.len())),
                &x,
            );
            assert_close(&dx, &want, 1e-5, &what);
        }
        let dx64: Vec<f64> = dx.iter().map(|&v| v as f64).collect();
        let lhs = dot64(&dy, &y);
        assert!(
            (lhs - dot64(&dx64, &x)).abs() <= 1e-5 * lhs.abs().max(1.0),
            "{what}: adjoint"
        );
        let fwd = shape_ops::gather(&f32_value(x_shape, &x), &indices, axis).unwrap();
        let fwd: Vec<f64> = fwd.to_f64_vec().unwrap();
        assert!(
            (dot64(&dy, &fwd) - dot64(&dx64, &x)).abs() <= 1e-5 * lhs.abs().max(1.0),
            "{what}: backend adjoint"
        );
    }

    #[test]
    fn gather_grad_scatters_and_adds_repeated_indices() {
        let mut rng = StdRng::seed_from_u64(41);
        check_gather(&[5, 3], 0, &[4], &[1, -1, 1, 0], &mut rng);
        check_gather(&[2, 6, 3], 1, &[2, 3], &[0, 5, -6, 2, 2, -1], &mut rng);
        check_gather(&[3, 4, 2], -1, &[3], &[1, 1, -2], &mut rng);
        check_gather(&[4, 5], -1, &[], &[-2], &mut rng);
        check_gather(&[2, 3, 4], 1, &[0], &[], &mut rng);
        for _ in 0..5 {
            let rank = rng.random_range(1..4);
            let x_shape = random_dims(&mut rng, rank, 1, 5);
            let axis = rng.random_range(-(rank as i64)..rank as i64);
            let ax = if axis < 0 { axis + rank as i64 } else { axis } as usize;
            let d = x_shape[ax] as i64;
            let idx_rank = rng.random_range(0..3);
            let idx_dims = random_dims(&mut rng, idx_rank, 1, 4);
            let n: usize = idx_dims.iter().product();
            let idx: Vec<i64> = (0..n).map(|_| rng.random_range(-d..d)).collect();
            check_gather(&x_shape, axis, &idx_dims, &idx, &mut rng);
        }
    }

    #[test]
    fn gather_grad_by_hand() {
        // x [3], indices [2, 2, -3]: dx = [dy2, 0, dy0 + dy1].
        let op = GradOp::Gather {
            axis: 0,
            x_shape: vec![3],
        };
        let dx = run_one(
            &op,
            &[
                Some(&i32_value(&[3], &[2, 2, -3])),
                Some(&f32_value(&[3], &[1.0, 10.0, 100.0])),
            ],
        );
        assert_eq!(dx.to_f32_vec(), vec![100.0, 0.0, 11.0]);
    }

    #[test]
    fn gather_grad_of_large_tensors_runs_in_parallel() {
        let mut rng = StdRng::seed_from_u64(42);
        let idx: Vec<i64> = (0..70).map(|_| rng.random_range(-50..50)).collect();
        check_gather(&[64, 50, 20], 1, &[70], &idx, &mut rng);
    }

    #[test]
    fn gather_grad_rejects_bad_inputs() {
        let op = GradOp::Gather {
            axis: 0,
            x_shape: vec![3, 2],
        };
        let dy = f32_value(&[2, 2], &[1.0; 4]);
        let e = run_err(&op, &[Some(&i64_value(&[2], &[0, 3])), Some(&dy)], 1);
        assert!(
            e.contains("index 3 is out of range for axis 0 of size 3"),
            "{e}"
        );
        let e = run_err(&op, &[Some(&i64_value(&[2], &[0, -4])), Some(&dy)], 1);
        assert!(e.contains("index -4"), "{e}");
        let e = run_err(&op, &[Some(&i64_value(&[3], &[0, 1, 2])), Some(&dy)], 1);
        assert!(
            e.contains("dy of shape [2,2] does not match the Gather output [3,2]"),
            "{e}"
        );
        let e = run_err(&op, &[Some(&f32_value(&[2], &[0.0, 1.0])), Some(&dy)], 1);
        assert!(e.contains("indices must be integers"), "{e}");
        let far = GradOp::Gather {
            axis: 2,
            x_shape: vec![3, 2],
        };
        let e = run_err(&far, &[Some(&i64_value(&[2], &[0, 1])), Some(&dy)], 1);
        assert!(e.contains("axis 2 is out of range"), "{e}");
    }

    /// The positions an ONNX Slice reads on an axis of size `d`, by walking from the
    /// clamped start towards the clamped end.
    fn positions(d: i64, start: i64, end: i64, step: i64) -> Vec<usize> {
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(start), norm(end));
        let mut out = Vec::new();
        if step > 0 {
            let mut i = s.clamp(0, d);
            while i < e.clamp(0, d) {
                out.push(i as usize);
                i += step;
            }
        } else {
            let mut i = s.clamp(0, d - 1);
            while i > e.clamp(-1, d - 1) {
                out.push(i as usize);
                i += step;
            }
        }
        out
    }

    #[test]
    fn slice_positions_follow_the_onnx_examples() {
        // Worked by hand from the ONNX Slice definition.
        assert_eq!(positions(5, -1, -100, -2), vec![4, 2, 0]);
        assert_eq!(positions(5, 1, i64::MAX, 2), vec![1, 3]);
        assert_eq!(positions(5, -100, 3, 1), vec![0, 1, 2]);
        assert_eq!(positions(5, 10, 0, -1), vec![4, 3, 2, 1]);
        assert_eq!(positions(5, 3, 3, 1), Vec::<usize>::new());
        assert_eq!(positions(5, i64::MAX, i64::MIN, -3), vec![4, 1]);
    }

    /// Slice in f64: the cartesian product of the per-axis positions.
    fn slice64(x: &[f64], x_shape: &[usize], pos: &[Vec<usize>]) -> Vec<f64> {
        let dims: Vec<usize> = pos.iter().map(Vec::len).collect();
        let n: usize = dims.iter().product();
        (0..n)
            .map(|f| {
                let idx = unravel(f, &dims);
                let src: Vec<usize> = idx.iter().zip(pos).map(|(&i, p)| p[i]).collect();
                x[ravel(&src, x_shape)]
            })
            .collect()
    }

    struct SliceCase<'a> {
        x_shape: &'a [usize],
        starts: &'a [i64],
        ends: &'a [i64],
        axes: Option<&'a [i64]>,
        steps: Option<&'a [i64]>,
    }

    fn check_slice(c: &SliceCase<'_>, rng: &mut StdRng) {
        let r = c.x_shape.len();
        let mut pos: Vec<Vec<usize>> = c.x_shape.iter().map(|&d| (0..d).collect()).collect();
        for i in 0..c.starts.len() {
            let a = c.axes.map_or(i as i64, |a| a[i]);
            let a = if a < 0 { a + r as i64 } else { a } as usize;
            let step = c.steps.map_or(1, |s| s[i]);
            pos[a] = positions(c.x_shape[a] as i64, c.starts[i], c.ends[i], step);
        }
        let y_dims: Vec<usize> = pos.iter().map(Vec::len).collect();
        let nx: usize = c.x_shape.iter().product();
        let x = random_vec(rng, nx);
        let y = slice64(&x, c.x_shape, &pos);
        let dy = random_vec(rng, y.len());
        let vec_value = |v: &[i64]| i64_value(&[v.len()], v);
        let (starts, ends) = (vec_value(c.starts), vec_value(c.ends));
        let axes = c.axes.map(vec_value);
        let steps = c.steps.map(vec_value);
        let dy_value = f32_value(&y_dims, &dy);
        let op = GradOp::Slice {
            x_shape: c.x_shape.to_vec(),
        };
        let dx = run_one(
            &op,
            &[
                Some(&dy_value),
                Some(&starts),
                Some(&ends),
                axes.as_ref(),
                steps.as_ref(),
            ],
        );
        assert_eq!(dx.shape(), c.x_shape);
        let dx = dx.to_f32_vec();
        let what = format!(
            "slice {:?} starts {:?} ends {:?} axes {:?} steps {:?}",
            c.x_shape, c.starts, c.ends, c.axes, c.steps
        );
        let want = numeric_gradient(|v| dot64(&dy, &slice64(v, c.x_shape, &pos)), &x);
        assert_close(&dx, &want, 1e-5, &what);
        let dx64: Vec<f64> = dx.iter().map(|&v| v as f64).collect();
        let lhs = dot64(&dy, &y);
        assert!(
            (lhs - dot64(&dx64, &x)).abs() <= 1e-6 * lhs.abs().max(1.0),
            "{what}: adjoint"
        );
        let fwd = shape_ops::slice(
            &f32_value(c.x_shape, &x),
            &starts,
            &ends,
            axes.as_ref(),
            steps.as_ref(),
        )
        .unwrap();
        assert_eq!(fwd.dims(), &y_dims[..], "{what}: backend forward shape");
        let fwd = CpuValue::to_f64_vec(&fwd).unwrap();
        assert!(
            (dot64(&dy, &fwd) - dot64(&dx64, &x)).abs() <= 1e-6 * lhs.abs().max(1.0),
            "{what}: backend adjoint"
        );
    }

    #[test]
    fn slice_grad_writes_dy_where_the_slice_read() {
        let mut rng = StdRng::seed_from_u64(51);
        let cases = [
            SliceCase {
                x_shape: &[4, 5, 6],
                starts: &[1, -1],
                ends: &[i64::MAX, -100],
                axes: Some(&[2, -3]),
                steps: Some(&[2, -1]),
            },
            SliceCase {
                x_shape: &[5, 3],
                starts: &[-100, 0],
                ends: &[3, 2],
                axes: None,
                steps: None,
            },
            SliceCase {
                x_shape: &[7, 2],
                starts: &[i64::MAX],
                ends: &[i64::MIN],
                axes: Some(&[0]),
                steps: Some(&[-3]),
            },
            SliceCase {
                x_shape: &[3, 4, 5],
                starts: &[-2, 10],
                ends: &[-1, 0],
                axes: Some(&[-1, 1]),
                steps: Some(&[1, -2]),
            },
            SliceCase {
                x_shape: &[6],
                starts: &[4],
                ends: &[1],
                axes: None,
                steps: Some(&[-1]),
            },
            SliceCase {
                x_shape: &[2, 8, 3],
                starts: &[0],
                ends: &[1],
                axes: Some(&[1]),
                steps: None,
            },
        ];
        for c in &cases {
            check_slice(c, &mut rng);
        }
    }

    #[test]
    fn empty_slices_give_zero_gradients() {
        let op = GradOp::Slice {
            x_shape: vec![3, 4],
        };
        let dy = f32_value(&[3, 0], &[]);
        let starts = i64_value(&[1], &[2]);
        let ends = i64_value(&[1], &[2]);
        let axes = i64_value(&[1], &[1]);
        let dx = run_one(
            &op,
            &[Some(&dy), Some(&starts), Some(&ends), Some(&axes), None],
        );
        assert_eq!(dx.shape(), &[3, 4]);
        assert!(dx.to_f32_vec().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn slice_grad_rejects_bad_inputs() {
        let op = GradOp::Slice {
            x_shape: vec![4, 5],
        };
        let v = |d: &[i64]| i64_value(&[d.len()], d);
        let dy = f32_value(&[2, 5], &[1.0; 10]);
        let e = run_err(
            &op,
            &[
                Some(&dy),
                Some(&v(&[0])),
                Some(&v(&[4])),
                None,
                Some(&v(&[0])),
            ],
            1,
        );
        assert!(e.contains("step cannot be 0"), "{e}");
        let e = run_err(
            &op,
            &[Some(&dy), Some(&v(&[0])), Some(&v(&[3])), None, None],
            1,
        );
        assert!(
            e.contains("dy of shape [2,5] does not match the Slice output [3,5]"),
            "{e}"
        );
        let e = run_err(
            &op,
            &[
                Some(&dy),
                Some(&v(&[0, 0])),
                Some(&v(&[2, 5])),
                Some(&v(&[0, -2])),
                None,
            ],
            1,
        );
        assert!(e.contains("repeat"), "{e}");
        let e = run_err(
            &op,
            &[Some(&dy), Some(&v(&[0])), Some(&v(&[2, 5])), None, None],
            1,
        );
        assert!(e.contains("1 starts but 2 ends"), "{e}");
        let e = run_err(
            &op,
            &[
                Some(&dy),
                Some(&f32_value(&[1], &[0.0])),
                Some(&v(&[2])),
                None,
                None,
            ],
            1,
        );
        assert!(e.contains("starts must be an integer tensor"), "{e}");
        let e = run_err(
            &op,
            &[
                Some(&dy),
                Some(&v(&[0])),
                Some(&v(&[2])),
                Some(&v(&[2])),
                None,
            ],
            1,
        );
        assert!(e.contains("axis 2 is out of range"), "{e}");
    }
}
