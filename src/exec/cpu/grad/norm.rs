//! Backward of the fused row kernels: Softmax (`dx = y⊙(dy − Σ_axis dy⊙y)`) and
//! LayerNormalization (`dx`, `dscale`, `dbias` from `x`, `scale`, `dy`, with the
//! mean and inverse deviation recomputed from `x` as the forward does). Rows run in
//! parallel; the parameter gradients are summed over fixed chunks of rows and then
//! chunk by chunk in order, so results do not depend on thread count or timing.

use rayon::prelude::*;

use crate::exec::cpu::axis_index;
use crate::exec::cpu::math::{sum, sum_sq_dev};
use crate::exec::cpu::simd::multiversion;
use crate::exec::cpu::strided::{PAR_MIN_ELEMS, map1};
use crate::exec::cpu::value::{CpuValue, OpError, OpResult, bail, sh};

use super::{dot, float_dtype, same_shape};

/// Elements of work one parallel task gets at least.
const TASK_ELEMS: usize = 1 << 14;
/// Most chunks the rows of a LayerNorm are cut into: bounds the partial sums kept.
const MAX_ROW_CHUNKS: usize = 64;

multiversion! {
    /// One softmax row: `dx = y·(dy − Σ dy·y)`.
    fn softmax_grad_row<>(y: &[f32], dy: &[f32], dx: &mut [f32]) where [] {
        let s = dot(y, dy);
        for ((o, &a), &d) in dx.iter_mut().zip(y).zip(dy) {
            *o = a * (d - s);
        }
    }
}

multiversion! {
    /// One `len × inner` block of a softmax over a non-last axis: the sums run down
    /// the columns, `inner` of them at once.
    fn softmax_grad_block<>(y: &[f32], dy: &[f32], dx: &mut [f32], sums: &mut [f32]) where [] {
        let inner = sums.len();
        sums.fill(0.0);
        for (yr, dr) in y.chunks_exact(inner).zip(dy.chunks_exact(inner)) {
            for ((s, &a), &d) in sums.iter_mut().zip(yr).zip(dr) {
                *s += a * d;
            }
        }
        for ((or, yr), dr) in dx.chunks_exact_mut(inner).zip(y.chunks_exact(inner)).zip(dy.chunks_exact(inner)) {
            for (((o, &a), &d), &s) in or.iter_mut().zip(yr).zip(dr).zip(sums.iter()) {
                *o = a * (d - s);
            }
        }
    }
}

pub(super) fn softmax_grad(y: &CpuValue, dy: &CpuValue, axis: i64) -> OpResult<CpuValue> {
    let dtype = float_dtype(dy, "dy")?;
    float_dtype(y, "y")?;
    same_shape(y, "y", dy, "dy")?;
    let dims = dy.dims().to_vec();
    let ax = axis_index(axis, dims.len())?;
    let len = dims[ax];
    let inner: usize = dims[ax + 1..].iter().product();
    let block = len * inner;
    let out = y.read_f32(|yv| {
        dy.read_f32(|dv| {
            let (ys, ds) = (yv.to_contiguous(), dv.to_contiguous());
            let mut dx = vec![0f32; ys.len()];
            if block == 0 {
                return Ok(dx);
            }
            let min_blocks = (TASK_ELEMS / block).max(1);
            let parallel = ys.len() >= PAR_MIN_ELEMS;
            if inner == 1 {
                let row = |((o, a), d): ((&mut [f32], &[f32]), &[f32])| softmax_grad_row(a, d, o);
                if parallel {
                    dx.par_chunks_mut(len)
                        .zip(ys.par_chunks(len))
                        .zip(ds.par_chunks(len))
                        .with_min_len(min_blocks)
                        .for_each(row);
                } else {
                    dx.chunks_mut(len)
                        .zip(ys.chunks(len))
                        .zip(ds.chunks(len))
                        .for_each(row);
                }
            } else if parallel {
                dx.par_chunks_mut(block)
                    .zip(ys.par_chunks(block))
                    .zip(ds.par_chunks(block))
                    .with_min_len(min_blocks)
                    .for_each_init(
                        || vec![0f32; inner],
                        |sums, ((o, a), d)| softmax_grad_block(a, d, o, sums),
                    );
            } else {
                let mut sums = vec![0f32; inner];
                for ((o, a), d) in dx
                    .chunks_mut(block)
                    .zip(ys.chunks(block))
                    .zip(ds.chunks(block))
                {
                    softmax_grad_block(a, d, o, &mut sums);
                }
            }
            Ok(dx)
        })
    })?;
    CpuValue::from_f32(out, &dims, dtype)
}

multiversion! {
    /// One LayerNorm row. With `x̂ = (x − mean)·inv` and `g = dy·gamma`:
    /// `dx = inv·(g − mean(g) − x̂·mean(g·x̂))`; adds `dy·x̂` to `dgamma` and `dy`
    /// to `dbeta`.
    fn layer_norm_grad_row<>(
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        epsilon: f32,
    ) where [] {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let inv = 1.0 / (sum_sq_dev(x, mean) / n + epsilon).sqrt();
        for ((o, &d), &g) in dx.iter_mut().zip(dy).zip(gamma) {
            *o = d * g;
        }
        let g_mean = sum(dx) / n;
        // Σ g·x̂ = inv·Σ g·(x − mean), with eight accumulators as in `dot`.
        let mut acc = [0f32; 8];
        let gc = dx.chunks_exact(8);
        let xc = x.chunks_exact(8);
        let (gr, xr) = (gc.remainder(), xc.remainder());
        for (g8, x8) in gc.zip(xc) {
            for i in 0..8 {
                acc[i] += g8[i] * (x8[i] - mean);
            }
        }
        let mut gx = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (&g, &a) in gr.iter().zip(xr) {
            gx += g * (a - mean);
        }
        let gx_mean = gx * inv / n;
        for ((((o, &a), &d), dg), db) in dx.iter_mut().zip(x).zip(dy).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
            let xhat = (a - mean) * inv;
            *dg += d * xhat;
            *db += d;
            *o = inv * (*o - g_mean - xhat * gx_mean);
        }
    }
}

/// A per-feature parameter broadcast to the normalised dims, row-major.
fn broadcast_param(p: &CpuValue, dims: &[usize], what: &str) -> OpResult<Vec<f32>> {
    p.read_f32(|v| {
        let b = v.broadcast_to(dims).map_err(|_| {
            OpError(format!(
                "{what} of shape {} does not broadcast to the normalised shape {}",
                sh(p.dims()),
                sh(dims)
            ))
        })?;
        Ok(map1(dims, &b, |x| x))
    })
}

/// `full` (row-major over `full_dims`) summed down to `target` dims, which
/// broadcast to `full_dims` (numpy rules); each output sums its inputs in row-major
/// order.
fn sum_to_shape(full: &[f32], full_dims: &[usize], target: &[usize]) -> Vec<f32> {
    if full_dims == target {
        return full.to_vec();
    }
    let lead = full_dims.len() - target.len();
    let tstrides = super::contiguous_strides(target);
    let mut out = vec![0f32; target.iter().product()];
    let mut idx = vec![0usize; full_dims.len()];
    for &v in full {
        let mut t = 0;
        for (a, &i) in idx.iter().enumerate().skip(lead) {
            if target[a - lead] != 1 {
                t += i * tstrides[a - lead];
            }
        }
        out[t] += v;
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < full_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Rows per chunk of the parameter-gradient sums: a function of the shape only.
fn rows_per_chunk(rows: usize, len: usize) -> usize {
    (TASK_ELEMS / len.max(1))
        .max(rows.div_ceil(MAX_ROW_CHUNKS))
        .max(1)
}

/// The three gradients of one chunk of rows: `dx` in place, and the chunk's sums of
/// `dy·x̂` and `dy`.
fn layer_norm_chunk(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    dx: &mut [f32],
    epsilon: f32,
) -> (Vec<f32>, Vec<f32>) {
    let len = gamma.len();
    let mut dgamma = vec![0f32; len];
    let mut dbeta = vec![0f32; len];
    for ((xr, dr), or) in x.chunks(len).zip(dy.chunks(len)).zip(dx.chunks_mut(len)) {
        layer_norm_grad_row(xr, dr, gamma, or, &mut dgamma, &mut dbeta, epsilon);
    }
    (dgamma, dbeta)
}

pub(super) fn layer_norm_grad(
    x: &CpuValue,
    scale: &CpuValue,
    dy: &CpuValue,
    axis: i64,
    epsilon: f32,
    outputs: usize,
) -> OpResult<Vec<CpuValue>> {
    if !(1..=3).contains(&outputs) {
        bail!("expects 1 to 3 outputs (dx, dscale, dbias), the node has {outputs}");
    }
    let dtype = float_dtype(dy, "dy")?;
    float_dtype(x, "x")?;
    let scale_dtype = float_dtype(scale, "scale")?;
    same_shape(x, "x", dy, "dy")?;
    let dims = x.dims().to_vec();
    let ax = axis_index(axis, dims.len())?;
    let norm_dims = &dims[ax..];
    let len: usize = norm_dims.iter().product();
    let rows: usize = dims[..ax].iter().product();
    let gamma = broadcast_param(scale, norm_dims, "scale")?;
    let mut dgamma = vec![0f32; len];
    let mut dbeta = vec![0f32; len];
    let dx = x.read_f32(|xv| {
        dy.read_f32(|dv| {
            let (xs, ds) = (xv.to_contiguous(), dv.to_contiguous());
            let mut dx = vec![0f32; xs.len()];
            if len == 0 || rows == 0 {
                return Ok(dx);
            }
            let step = rows_per_chunk(rows, len) * len;
            let chunk = |((o, a), d): ((&mut [f32], &[f32]), &[f32])| {
                layer_norm_chunk(a, d, &gamma, o, epsilon)
            };
            let partials: Vec<(Vec<f32>, Vec<f32>)> = if xs.len() >= PAR_MIN_ELEMS {
                dx.par_chunks_mut(step)
                    .zip(xs.par_chunks(step))
                    .zip(ds.par_chunks(step))
                    .map(chunk)
                    .collect()
            } else {
                dx.chunks_mut(step)
                    .zip(xs.chunks(step))
                    .zip(ds.chunks(step))
                    .map(chunk)
                    .collect()
            };
            for (pg, pb) in &partials {
                for ((g, b), (&a, &c)) in dgamma
                    .iter_mut()
                    .zip(dbeta.iter_mut())
                    .zip(pg.iter().zip(pb))
                {
                    *g += a;
                    *b += c;
                }
            }
            Ok(dx)
        })
    })?;
    let mut out = vec![CpuValue::from_f32(dx, &dims, dtype)?];
    let sdims = scale.dims();
    if outputs > 1 {
        let ds = sum_to_shape(&dgamma, norm_dims, sdims);
        out.push(CpuValue::from_f32(ds, sdims, scale_dtype)?);
    }
    if outputs > 2 {
        let db = sum_to_shape(&dbeta, norm_dims, sdims);
        out.push(CpuValue::from_f32(db, sdims, scale_dtype)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::testing::*;
    use crate::exec::cpu::permute_value;
    use crate::ir::{GradOp, Tensor};

    fn softmax64(v: &[f64]) -> Vec<f64> {
        let m = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let e: Vec<f64> = v.iter().map(|&x| (x - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// Flat positions of every line of `dims` along axis `ax`.
    fn lines(dims: &[usize], ax: usize) -> Vec<Vec<usize>> {
        let n: usize = dims.iter().product();
        (0..n)
            .filter(|&f| unravel(f, dims)[ax] == 0)
            .map(|f| {
                let mut idx = unravel(f, dims);
                (0..dims[ax])
                    .map(|j| {
                        idx[ax] = j;
                        ravel(&idx, dims)
                    })
                    .collect()
            })
            .collect()
    }

    /// y = softmax along the axis and dx by finite differences of ⟨dy, softmax(x)⟩,
    /// one line at a time (lines do not interact).
    fn softmax_case(dims: &[usize], axis: i64, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let n: usize = dims.iter().product();
        let ax = if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        } as usize;
        let x: Vec<f64> = random_vec(rng, n).iter().map(|v| v * 2.0).collect();
        let dy = random_vec(rng, n);
        let mut y = vec![0.0; n];
        let mut dx = vec![0.0; n];
        for line in lines(dims, ax) {
            let xl: Vec<f64> = line.iter().map(|&i| x[i]).collect();
            let dl: Vec<f64> = line.iter().map(|&i| dy[i]).collect();
            let g = numeric_gradient(|v| dot64(&dl, &softmax64(v)), &xl);
            for ((&i, s), gi) in line.iter().zip(softmax64(&xl)).zip(g) {
                y[i] = s as f32 as f64;
                dx[i] = gi;
            }
        }
        (y, dy, dx)
    }

    fn check_softmax(dims: &[usize], axis: i64, rng: &mut StdRng) {
        let (y, dy, want) = softmax_case(dims, axis, rng);
        let got = run_one(
            &GradOp::Softmax { axis },
            &[Some(&f32_value(dims, &y)), Some(&f32_value(dims, &dy))],
        );
        assert_eq!(got.shape(), dims);
        let ax = if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        } as usize;
        if dims[ax] == 1 {
            // A softmax over one element is constant 1: its gradient vanishes.
            assert!(
                got.to_f32_vec().iter().all(|&v| v == 0.0),
                "{dims:?} axis {axis}"
            );
            return;
        }
        assert_close(
            &got.to_f32_vec(),
            &want,
            1e-4,
            &format!("softmax {dims:?} axis {axis}"),
        );
    }

    #[test]
    fn softmax_grad_matches_finite_differences_on_every_axis() {
        let mut rng = StdRng::seed_from_u64(21);
        check_softmax(&[3, 5], -1, &mut rng);
        check_softmax(&[3, 5], 0, &mut rng);
        check_softmax(&[2, 4, 3], 1, &mut rng);
        check_softmax(&[2, 4, 3], -3, &mut rng);
        check_softmax(&[7], 0, &mut rng);
        for _ in 0..6 {
            let rank = rng.random_range(1..5);
            let dims = random_dims(&mut rng, rank, 1, 6);
            let axis = rng.random_range(-(rank as i64)..rank as i64);
            check_softmax(&dims, axis, &mut rng);
        }
    }

    #[test]
    fn softmax_grad_of_large_tensors_runs_in_parallel() {
        let mut rng = StdRng::seed_from_u64(22);
        check_softmax(&[64, 600], 1, &mut rng);
        check_softmax(&[40, 30, 30], -2, &mut rng);
    }

    #[test]
    fn softmax_grad_reads_strided_views() {
        let mut rng = StdRng::seed_from_u64(23);
        // The kernel sees y and dy as transposes of [5, 3] buffers; the reference
        // works on the [3, 5] logical layout.
        let (y, dy, want) = softmax_case(&[3, 5], 1, &mut rng);
        let transpose =
            |v: &[f64]| -> Vec<f64> { (0..15).map(|k| v[(k % 3) * 5 + k / 3]).collect() };
        let yv = permute_value(&f32_value(&[5, 3], &transpose(&y)), &[1, 0]).unwrap();
        let dv = permute_value(&f32_value(&[5, 3], &transpose(&dy)), &[1, 0]).unwrap();
        let got = run_one(&GradOp::Softmax { axis: 1 }, &[Some(&yv), Some(&dv)]);
        assert_close(&got.to_f32_vec(), &want, 1e-4, "softmax over views");
    }

    #[test]
    fn softmax_grad_rejects_bad_axes_and_shapes() {
        let a = f32_value(&[2, 3], &[0.5; 6]);
        let b = f32_value(&[3, 2], &[0.5; 6]);
        let e = run_err(&GradOp::Softmax { axis: 2 }, &[Some(&a), Some(&a)], 1);
        assert!(e.contains("out of range"), "{e}");
        let e = run_err(&GradOp::Softmax { axis: 1 }, &[Some(&a), Some(&b)], 1);
        assert!(e.contains("dy of shape [3,2]"), "{e}");
    }

    /// LayerNorm in f64 over rows of `len` with full-length gamma and beta.
    fn layer_norm64(x: &[f64], len: usize, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        x.chunks(len)
            .flat_map(|r| {
                let mean = r.iter().sum::<f64>() / len as f64;
                let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64;
                let inv = 1.0 / (var + eps).sqrt();
                r.iter()
                    .zip(gamma.iter().zip(beta))
                    .map(move |(v, (g, b))| (v - mean) * inv * g + b)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A parameter of shape `sdims` broadcast (numpy rules) to `norm_dims`.
    fn expand(p: &[f64], sdims: &[usize], norm_dims: &[usize]) -> Vec<f64> {
        let lead = norm_dims.len() - sdims.len();
        let n: usize = norm_dims.iter().product();
        (0..n)
            .map(|f| {
                let idx = unravel(f, norm_dims);
                let sidx: Vec<usize> = sdims
                    .iter()
                    .enumerate()
                    .map(|(a, &d)| if d == 1 { 0 } else { idx[lead + a] })
                    .collect();
                p[ravel(&sidx, sdims)]
            })
            .collect()
    }

    fn check_layer_norm(dims: &[usize], axis: i64, sdims: &[usize], rng: &mut StdRng) {
        const EPS: f64 = 1e-5;
        let ax = if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        } as usize;
        let norm_dims = &dims[ax..];
        let len: usize = norm_dims.iter().product();
        let n: usize = dims.iter().product();
        let ns: usize = sdims.iter().product();
        let x = random_vec(rng, n);
        let dy = random_vec(rng, n);
        let scale = random_vec(rng, ns);
        let bias = random_vec(rng, ns);
        let loss = |x: &[f64], s: &[f64], b: &[f64]| {
            let y = layer_norm64(
                x,
                len,
                &expand(s, sdims, norm_dims),
                &expand(b, sdims, norm_dims),
                EPS,
            );
            dot64(&dy, &y)
        };
        let mut want_dx = Vec::with_capacity(n);
        let gamma = expand(&scale, sdims, norm_dims);
        let beta = expand(&bias, sdims, norm_dims);
        for (xr, dr) in x.chunks(len).zip(dy.chunks(len)) {
            want_dx.extend(numeric_gradient(
                |v| dot64(dr, &layer_norm64(v, len, &gamma, &beta, EPS)),
                xr,
            ));
        }
        let want_ds = numeric_gradient(|s| loss(&x, s, &bias), &scale);
        let want_db = numeric_gradient(|b| loss(&x, &scale, b), &bias);
        let outs = run_all(
            &GradOp::LayerNorm {
                axis,
                epsilon: EPS as f32,
            },
            &[
                Some(&f32_value(dims, &x)),
                Some(&f32_value(sdims, &scale)),
                Some(&f32_value(dims, &dy)),
            ],
            3,
        );
        let what = format!("layer norm {dims:?} axis {axis} scale {sdims:?}");
        assert_eq!(outs.len(), 3);
        assert_eq!(outs[0].shape(), dims);
        assert_eq!(outs[1].shape(), sdims);
        assert_eq!(outs[2].shape(), sdims);
        assert_close(&outs[0].to_f32_vec(), &want_dx, 1e-3, &format!("{what} dx"));
        assert_close(
            &outs[1].to_f32_vec(),
            &want_ds,
            1e-4,
            &format!("{what} dscale"),
        );
        assert_close(
            &outs[2].to_f32_vec(),
            &want_db,
            1e-4,
            &format!("{what} dbias"),
        );
    }

    #[test]
    fn layer_norm_grad_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(31);
        check_layer_norm(&[2, 3, 8], -1, &[8], &mut rng);
        check_layer_norm(&[3, 4, 5], 1, &[4, 5], &mut rng);
        check_layer_norm(&[2, 3, 4, 5], 2, &[5], &mut rng);
        check_layer_norm(&[2, 3, 4], -2, &[1, 4], &mut rng);
        check_layer_norm(&[5, 7], 0, &[5, 7], &mut rng);
        for _ in 0..4 {
            let rank = rng.random_range(2..5);
            // Rows of two or fewer elements normalise to ±1 and leave only a
            // cancelled remainder of the gradient; start at 3.
            let dims = random_dims(&mut rng, rank, 3, 6);
            let axis = rng.random_range(1..rank as i64);
            let sdims = dims[axis as usize..].to_vec();
            check_layer_norm(&dims, axis - rank as i64, &sdims, &mut rng);
        }
    }

    #[test]
    fn layer_norm_grad_of_many_rows_runs_in_parallel() {
        let mut rng = StdRng::seed_from_u64(32);
        check_layer_norm(&[300, 128], -1, &[128], &mut rng);
    }

    fn layer_norm_outputs(rows: usize, len: usize, threads: usize) -> Vec<Tensor> {
        let mut rng = StdRng::seed_from_u64(33);
        let x = random_vec(&mut rng, rows * len);
        let dy = random_vec(&mut rng, rows * len);
        let s = random_vec(&mut rng, len);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            run_all(
                &GradOp::LayerNorm {
                    axis: 1,
                    epsilon: 1e-6,
                },
                &[
                    Some(&f32_value(&[rows, len], &x)),
                    Some(&f32_value(&[len], &s)),
                    Some(&f32_value(&[rows, len], &dy)),
                ],
                3,
            )
        })
    }

    #[test]
    fn layer_norm_parameter_gradients_do_not_depend_on_thread_count() {
        let one = layer_norm_outputs(1576, 384, 1);
        for threads in [2, 5] {
            let many = layer_norm_outputs(1576, 384, threads);
            for (a, b) in one.iter().zip(&many) {
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
                };
                assert_eq!(bits(a), bits(b), "{threads} threads");
            }
        }
    }

    #[test]
    fn layer_norm_grad_returns_what_the_node_asks_for() {
        let x = f32_value(&[2, 4], &[1.0, 2.0, 4.0, 8.0, -1.0, 0.0, 1.0, 3.0]);
        let s = f32_value(&[4], &[1.0; 4]);
        let op = GradOp::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        };
        assert_eq!(run_all(&op, &[Some(&x), Some(&s), Some(&x)], 1).len(), 1);
        assert_eq!(run_all(&op, &[Some(&x), Some(&s), Some(&x)], 2).len(), 2);
        let e = run_err(&op, &[Some(&x), Some(&s), Some(&x)], 4);
        assert!(e.contains("outputs"), "{e}");
        let bad = f32_value(&[3], &[1.0; 3]);
        let e = run_err(&op, &[Some(&x), Some(&bad), Some(&x)], 3);
        assert!(e.contains("scale of shape [3]"), "{e}");
        let dy = f32_value(&[4, 2], &[1.0; 8]);
        let e = run_err(&op, &[Some(&x), Some(&s), Some(&dy)], 3);
        assert!(e.contains("dy of shape [4,2]"), "{e}");
    }
}
