//! The weight gradient of an N-d Conv (NC… layout, groups, strides, dilations,
//! explicit or automatic padding): from the forward input `x` `[N, C, in…]` and the
//! output gradient `dy` `[N, M, out…]`, `dw` `[M, C/group, k…]`. Batches of images
//! are unfolded into one column matrix per group (im2col, images side by side), and
//! `dw_g += dy_g · colsᵀ` is one matrix product per batch and group, batches added
//! in order so that the sum does not depend on threading.

use rayon::prelude::*;

use crate::exec::cpu::matmul::{MatRef, gemm_into};
use crate::exec::cpu::strided::PAR_MIN_ELEMS;
use crate::exec::cpu::value::{CpuValue, OpResult, bail, sh};
use crate::ir::{AutoPad, ConvAttrs};

use super::float_dtype;

/// Most column-matrix elements unfolded at once; more images are split into batches.
const COLS_BUDGET: usize = 1 << 23;

/// Where each kernel tap of each output position reads, per spatial axis.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pad_begin: Vec<usize>,
    out: Vec<usize>,
}

fn axis_values(v: &[usize], n: usize, what: &str) -> OpResult<Vec<usize>> {
    if v.is_empty() {
        return Ok(vec![1; n]);
    }
    if v.len() != n || v.contains(&0) {
        bail!("{what} {v:?} must hold {n} positive entries");
    }
    Ok(v.to_vec())
}

/// Padding before and after one axis.
fn axis_padding(
    attrs: &ConvAttrs,
    i: usize,
    n: usize,
    input: usize,
    stride: usize,
    extent: usize,
) -> OpResult<(usize, usize)> {
    Ok(match attrs.auto_pad {
        AutoPad::Valid => (0, 0),
        AutoPad::NotSet if attrs.pads.is_empty() => (0, 0),
        AutoPad::NotSet if attrs.pads.len() == 2 * n => (attrs.pads[i], attrs.pads[n + i]),
        AutoPad::NotSet => bail!("pads {:?} must hold {} entries", attrs.pads, 2 * n),
        AutoPad::SameUpper | AutoPad::SameLower => {
            // The output keeps ceil(input / stride) positions; the odd pixel of
            // padding goes last for SAME_UPPER and first for SAME_LOWER.
            let out = input.div_ceil(stride).max(1);
            let total = ((out - 1) * stride + extent).saturating_sub(input);
            let half = total / 2;
            if attrs.auto_pad == AutoPad::SameUpper {
                (half, total - half)
            } else {
                (total - half, half)
            }
        }
    })
}

fn taps(attrs: &ConvAttrs, input: &[usize], kernel: &[usize]) -> OpResult<Taps> {
    let n = input.len();
    if kernel.contains(&0) {
        bail!("w_shape has an empty kernel {}", sh(kernel));
    }
    if !attrs.kernel_shape.is_empty() && attrs.kernel_shape != kernel {
        bail!(
            "kernel_shape {} differs from w_shape's kernel {}",
            sh(&attrs.kernel_shape),
            sh(kernel)
        );
    }
    let strides = axis_values(&attrs.strides, n, "strides")?;
    let dilations = axis_values(&attrs.dilations, n, "dilations")?;
    let mut pad_begin = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let extent = (kernel[i] - 1) * dilations[i] + 1;
        let (pb, pe) = axis_padding(attrs, i, n, input[i], strides[i], extent)?;
        let padded = input[i] + pb + pe;
        if padded < extent {
            bail!("kernel extent {extent} on spatial axis {i} exceeds the padded input {padded}");
        }
        pad_begin.push(pb);
        out.push((padded - extent) / strides[i] + 1);
    }
    Ok(Taps {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pad_begin,
        out,
    })
}

fn unravel_into(mut flat: usize, dims: &[usize], idx: &mut [usize]) {
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i];
        flat /= dims[i];
    }
}

/// Writes one row of the column matrix for one image: the values that kernel tap
/// `tap` of one input channel `plane` meets at every output position (0 in the
/// padding).
fn unfold_row(plane: &[f32], in_dims: &[usize], t: &Taps, tap: &[usize], dst: &mut [f32]) {
    let last = in_dims.len() - 1;
    let (in_last, out_last) = (in_dims[last], t.out[last]);
    let shift = (tap[last] * t.dilations[last]) as i64 - t.pad_begin[last] as i64;
    let stride = t.strides[last] as i64;
    let mut pos = vec![0usize; last];
    for (line, seg) in dst.chunks_exact_mut(out_last).enumerate() {
        unravel_into(line, &t.out[..last], &mut pos);
        // Offset of the input line this output line reads, unless it is padding.
        let mut base = Some(0usize);
        for a in 0..last {
            let p =
                (pos[a] * t.strides[a] + tap[a] * t.dilations[a]) as i64 - t.pad_begin[a] as i64;
            base = match base {
                Some(b) if (0..in_dims[a] as i64).contains(&p) => Some(b * in_dims[a] + p as usize),
                _ => None,
            };
        }
        let Some(base) = base else {
            seg.fill(0.0);
            continue;
        };
        let src = &plane[base * in_last..(base + 1) * in_last];
        for (j, v) in seg.iter_mut().enumerate() {
            let p = j as i64 * stride + shift;
            *v = if (0..in_last as i64).contains(&p) {
                src[p as usize]
            } else {
                0.0
            };
        }
    }
}

/// The shapes of one weight gradient.
struct Layout<'a> {
    n: usize,
    c: usize,
    m: usize,
    groups: usize,
    in_dims: &'a [usize],
    taps: Taps,
}

impl Layout<'_> {
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn mg(&self) -> usize {
        self.m / self.groups
    }
    fn ksize(&self) -> usize {
        self.taps.kernel.iter().product()
    }
    fn in_plane(&self) -> usize {
        self.in_dims.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.taps.out.iter().product()
    }
}

fn layout<'a>(
    attrs: &ConvAttrs,
    x: &'a [usize],
    dy: &[usize],
    w: &[usize],
) -> OpResult<Layout<'a>> {
    if x.len() < 3 {
        bail!("x must be N×C×spatial, got shape {}", sh(x));
    }
    if w.len() != x.len() {
        bail!("w_shape {} does not match x of shape {}", sh(w), sh(x));
    }
    let (n, c, m) = (x[0], x[1], w[0]);
    let groups = attrs.group.max(1);
    if !c.is_multiple_of(groups) || !m.is_multiple_of(groups) || w[1] * groups != c {
        bail!(
            "w_shape {} does not fit {c} input channels in {groups} groups",
            sh(w)
        );
    }
    let taps = taps(attrs, &x[2..], &w[2..])?;
    let mut want = vec![n, m];
    want.extend(&taps.out);
    if dy != want {
        bail!(
            "dy of shape {} does not match the Conv output {}",
            sh(dy),
            sh(&want)
        );
    }
    Ok(Layout {
        n,
        c,
        m,
        groups,
        in_dims: &x[2..],
        taps,
    })
}

/// Adds the contribution of images `first..first + count` to `dw`.
fn accumulate_batch(
    l: &Layout<'_>,
    xs: &[f32],
    ds: &[f32],
    (first, count): (usize, usize),
    scratch: &mut (Vec<f32>, Vec<f32>),
    dw: &mut [f32],
) -> OpResult<()> {
    let (cg, mg, ksize) = (l.cg(), l.mg(), l.ksize());
    let (in_plane, out_plane) = (l.in_plane(), l.out_plane());
    let rows = cg * ksize;
    let width = count * out_plane;
    let (cols, dyg) = scratch;
    cols.resize(rows * width, 0.0);
    dyg.resize(mg * width, 0.0);
    for grp in 0..l.groups {
        // cols[r, (img, pos)]: row r is (channel, tap), images side by side.
        let fill = |(r, row): (usize, &mut [f32])| {
            let (ch, tap_flat) = (r / ksize, r % ksize);
            let mut tap = vec![0usize; l.taps.kernel.len()];
            unravel_into(tap_flat, &l.taps.kernel, &mut tap);
            for (i, dst) in row.chunks_exact_mut(out_plane).enumerate() {
                let at = ((first + i) * l.c + grp * cg + ch) * in_plane;
                unfold_row(&xs[at..at + in_plane], l.in_dims, &l.taps, &tap, dst);
            }
        };
        if cols.len() >= PAR_MIN_ELEMS {
            cols.par_chunks_mut(width).enumerate().for_each(fill);
        } else {
            cols.chunks_mut(width).enumerate().for_each(fill);
        }
        // dyg[o, (img, pos)]: the group's output channels, images side by side.
        for (o, row) in dyg.chunks_exact_mut(width).enumerate() {
            for (i, dst) in row.chunks_exact_mut(out_plane).enumerate() {
                let at = ((first + i) * l.m + grp * mg + o) * out_plane;
                dst.copy_from_slice(&ds[at..at + out_plane]);
            }
        }
        let dst = &mut dw[grp * mg * rows..(grp + 1) * mg * rows];
        gemm_into(
            dst,
            (mg, rows, width),
            MatRef::row_major(dyg, width),
            MatRef {
                data: cols,
                offset: 0,
                rs: 1,
                cs: width as isize,
            },
            1.0,
            (first > 0).then_some(1.0),
            true,
        )?;
    }
    Ok(())
}

pub(super) fn conv_weight_grad(
    attrs: &ConvAttrs,
    x: &CpuValue,
    dy: &CpuValue,
    w_shape: &[usize],
) -> OpResult<CpuValue> {
    conv_weight_grad_in_batches(attrs, x, dy, w_shape, COLS_BUDGET)
}

/// The weight gradient with at most `cols_budget` column-matrix elements unfolded
/// at once (at least one image).
fn conv_weight_grad_in_batches(
    attrs: &ConvAttrs,
    x: &CpuValue,
    dy: &CpuValue,
    w_shape: &[usize],
    cols_budget: usize,
) -> OpResult<CpuValue> {
    let dtype = float_dtype(dy, "dy")?;
    float_dtype(x, "x")?;
    let l = layout(attrs, x.dims(), dy.dims(), w_shape)?;
    let mut dw = vec![0f32; w_shape.iter().product()];
    let per_image = l.cg() * l.ksize() * l.out_plane();
    if l.n == 0 || dw.is_empty() || per_image == 0 {
        return CpuValue::from_f32(dw, w_shape, dtype);
    }
    let batch = (cols_budget / per_image).clamp(1, l.n);
    x.read_f32(|xv| {
        dy.read_f32(|dv| {
            let (xs, ds) = (xv.to_contiguous(), dv.to_contiguous());
            let mut scratch = (Vec::new(), Vec::new());
            let mut first = 0;
            while first < l.n {
                let count = batch.min(l.n - first);
                accumulate_batch(&l, &xs, &ds, (first, count), &mut scratch, &mut dw)?;
                first += count;
            }
            Ok(())
        })
    })?;
    CpuValue::from_f32(dw, w_shape, dtype)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::testing::*;
    use super::conv_weight_grad_in_batches;
    use crate::exec::cpu::conv;
    use crate::ir::{AutoPad, ConvAttrs, GradOp, Tensor};

    /// Padding before each spatial axis and the output size, from the ONNX Conv
    /// definition.
    fn geometry64(a: &ConvAttrs, input: &[usize], kernel: &[usize]) -> (Vec<i64>, Vec<usize>) {
        let n = input.len();
        let get = |v: &[usize], i: usize| if v.is_empty() { 1 } else { v[i] };
        let mut begin = Vec::new();
        let mut out = Vec::new();
        for i in 0..n {
            let (s, d) = (get(&a.strides, i), get(&a.dilations, i));
            let extent = (kernel[i] - 1) * d + 1;
            let (pb, pe) = match a.auto_pad {
                AutoPad::NotSet if a.pads.is_empty() => (0, 0),
                AutoPad::NotSet => (a.pads[i], a.pads[n + i]),
                AutoPad::Valid => (0, 0),
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = input[i].div_ceil(s);
                    let total = ((o - 1) * s + extent).saturating_sub(input[i]);
                    if a.auto_pad == AutoPad::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    }
                }
            };
            begin.push(pb as i64);
            out.push((input[i] + pb + pe - extent) / s + 1);
        }
        (begin, out)
    }

    /// Conv in f64 by its definition; returns the output and its dims.
    fn conv64(
        a: &ConvAttrs,
        x: &[f64],
        xd: &[usize],
        w: &[f64],
        wd: &[usize],
    ) -> (Vec<f64>, Vec<usize>) {
        let (begin, out) = geometry64(a, &xd[2..], &wd[2..]);
        let g = a.group.max(1);
        let (n, c, m) = (xd[0], xd[1], wd[0]);
        let (cg, mg) = (c / g, m / g);
        let get = |v: &[usize], i: usize| if v.is_empty() { 1 } else { v[i] };
        let mut yd = vec![n, m];
        yd.extend(&out);
        let ny: usize = yd.iter().product();
        let kd = &wd[2..];
        let nk: usize = kd.iter().product();
        let y = (0..ny)
            .map(|f| {
                let yi = unravel(f, &yd);
                let (img, oc) = (yi[0], yi[1]);
                let grp = oc / mg;
                let mut acc = 0.0;
                for ci in 0..cg {
                    for kf in 0..nk {
                        let k = unravel(kf, kd);
                        let mut xi = vec![img, grp * cg + ci];
                        let mut inside = true;
                        for s in 0..k.len() {
                            let p = (yi[2 + s] * get(&a.strides, s) + k[s] * get(&a.dilations, s))
                                as i64
                                - begin[s];
                            inside &= p >= 0 && p < xd[2 + s] as i64;
                            xi.push(p.max(0) as usize);
                        }
                        if inside {
                            let mut wi = vec![oc, ci];
                            wi.extend(&k);
                            acc += x[ravel(&xi, xd)] * w[ravel(&wi, wd)];
                        }
                    }
                }
                acc
            })
            .collect();
        (y, yd)
    }

    fn check_conv(
        attrs: &ConvAttrs,
        xd: &[usize],
        wd: &[usize],
        budget: Option<usize>,
        rng: &mut StdRng,
    ) {
        let x = random_vec(rng, xd.iter().product());
        let w = random_vec(rng, wd.iter().product());
        let (y, yd) = conv64(attrs, &x, xd, &w, wd);
        let dy = random_vec(rng, y.len());
        let (xv, dyv) = (f32_value(xd, &x), f32_value(&yd, &dy));
        let dw = match budget {
            None => run_one(
                &GradOp::ConvWeight {
                    attrs: attrs.clone(),
                    w_shape: wd.to_vec(),
                },
                &[Some(&xv), Some(&dyv)],
            ),
            Some(b) => conv_weight_grad_in_batches(attrs, &xv, &dyv, wd, b)
                .unwrap()
                .to_host()
                .unwrap(),
        };
        assert_eq!(dw.shape(), wd);
        let dw = dw.to_f32_vec();
        let what = format!("conv x {xd:?} w {wd:?} {attrs:?}");
        let want = numeric_gradient(|v| dot64(&dy, &conv64(attrs, &x, xd, v, wd).0), &w);
        assert_close(&dw, &want, 1e-5, &what);
        let dw64: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
        let lhs = dot64(&dy, &y);
        let tol = 1e-5 * dot64(&dy, &dy).sqrt() * dot64(&y, &y).sqrt();
        assert!((lhs - dot64(&dw64, &w)).abs() <= tol, "{what}: adjoint");
        let fwd = conv::conv(attrs, &xv, &f32_value(wd, &w), None).unwrap();
        assert_eq!(fwd.dims(), &yd[..], "{what}: backend output shape");
        let fwd = fwd.to_f64_vec().unwrap();
        assert!(
            (dot64(&dy, &fwd) - dot64(&dw64, &w)).abs() <= tol,
            "{what}: backend adjoint"
        );
    }

    fn attrs(strides: &[usize], pads: &[usize], dilations: &[usize], group: usize) -> ConvAttrs {
        ConvAttrs {
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: dilations.to_vec(),
            group,
            ..ConvAttrs::default()
        }
    }

    #[test]
    fn conv_weight_grad_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(61);
        // 1-D, group 2, stride, uneven padding, dilation.
        check_conv(
            &attrs(&[2], &[1, 2], &[2], 2),
            &[2, 4, 9],
            &[6, 2, 3],
            None,
            &mut rng,
        );
        // 2-D with per-axis strides, pads and dilations.
        check_conv(
            &attrs(&[2, 1], &[1, 0, 2, 1], &[1, 2], 1),
            &[2, 3, 7, 6],
            &[4, 3, 3, 2],
            None,
            &mut rng,
        );
        // 2-D, group 2, stride 2 and symmetric padding.
        check_conv(
            &attrs(&[2, 2], &[1, 1, 1, 1], &[], 2),
            &[2, 4, 5, 6],
            &[6, 2, 3, 3],
            None,
            &mut rng,
        );
        // 3-D, group 2.
        check_conv(
            &attrs(&[1, 2, 1], &[1, 0, 1, 0, 1, 1], &[], 2),
            &[1, 2, 4, 5, 3],
            &[2, 1, 2, 3, 2],
            None,
            &mut rng,
        );
        // Pointwise.
        check_conv(
            &attrs(&[], &[], &[], 1),
            &[2, 3, 4, 3],
            &[5, 3, 1, 1],
            None,
            &mut rng,
        );
        // Patch embedding in miniature: kernel = stride, no padding.
        check_conv(
            &attrs(&[4, 4], &[], &[], 1),
            &[2, 3, 8, 12],
            &[5, 3, 4, 4],
            None,
            &mut rng,
        );
    }

    #[test]
    fn conv_weight_grad_resolves_automatic_padding() {
        let mut rng = StdRng::seed_from_u64(62);
        for auto_pad in [AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid] {
            let a = ConvAttrs {
                strides: vec![2, 1],
                auto_pad,
                kernel_shape: vec![3, 2],
                ..ConvAttrs::default()
            };
            check_conv(&a, &[1, 2, 6, 5], &[3, 2, 3, 2], None, &mut rng);
            let b = ConvAttrs {
                auto_pad,
                group: 2,
                ..ConvAttrs::default()
            };
            check_conv(&b, &[2, 4, 5], &[4, 2, 2], None, &mut rng);
        }
    }

    #[test]
    fn images_split_into_batches_add_up_in_order() {
        let mut rng = StdRng::seed_from_u64(63);
        // A budget of one element puts every image in a batch of its own.
        check_conv(
            &attrs(&[1, 2], &[1, 1, 0, 1], &[2, 1], 2),
            &[5, 4, 6, 5],
            &[4, 2, 2, 3],
            Some(1),
            &mut rng,
        );
        check_conv(
            &attrs(&[2], &[], &[], 1),
            &[3, 2, 9],
            &[3, 2, 3],
            Some(20),
            &mut rng,
        );
    }

    fn patch_embedding(threads: usize, x: &[f64], dy: &[f64]) -> (Tensor, f64) {
        let a = attrs(&[16, 16], &[], &[], 1);
        let xv = f32_value(&[8, 3, 224, 224], x);
        let dyv = f32_value(&[8, 384, 14, 14], dy);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let op = GradOp::ConvWeight {
                attrs: a,
                w_shape: vec![384, 3, 16, 16],
            };
            let start = Instant::now();
            let dw = run_one(&op, &[Some(&xv), Some(&dyv)]);
            (dw, start.elapsed().as_secs_f64())
        })
    }

    #[test]
    fn vit_patch_embedding_weight_gradient() {
        let mut rng = StdRng::seed_from_u64(64);
        let x = random_vec(&mut rng, 8 * 3 * 224 * 224);
        let dy = random_vec(&mut rng, 8 * 384 * 14 * 14);
        let (dw, secs) = patch_embedding(rayon::current_num_threads(), &x, &dy);
        eprintln!("ViT patch embedding weight gradient: {:.1} ms", secs * 1e3);
        assert_eq!(dw.shape(), &[384, 3, 16, 16]);
        let got = dw.to_f32_vec();
        // Spot checks: dw[m, c, i, j] = Σ_{n, p, q} dy[n, m, p, q]·x[n, c, 16p + i, 16q + j].
        for _ in 0..40 {
            let (m, c, i, j) = (
                rng.random_range(0..384),
                rng.random_range(0..3),
                rng.random_range(0..16),
                rng.random_range(0..16),
            );
            let mut want = 0.0;
            for n in 0..8 {
                for p in 0..14 {
                    for q in 0..14 {
                        want += dy[((n * 384 + m) * 14 + p) * 14 + q]
                            * x[((n * 3 + c) * 224 + 16 * p + i) * 224 + 16 * q + j];
                    }
                }
            }
            let g = got[((m * 3 + c) * 16 + i) * 16 + j] as f64;
            assert!(
                (g - want).abs() <= 1e-4 * (want.abs() + 10.0),
                "dw[{m},{c},{i},{j}] = {g}, want {want}"
            );
        }
        let (single, _) = patch_embedding(1, &x, &dy);
        let (three, _) = patch_embedding(3, &x, &dy);
        let bits =
            |t: &Tensor| -> Vec<u32> { t.to_f32_vec().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(&single), bits(&dw), "1 thread");
        assert_eq!(bits(&three), bits(&dw), "3 threads");
    }

    #[test]
    fn conv_weight_grad_rejects_bad_shapes() {
        let x = f32_value(&[1, 4, 5], &[1.0; 20]);
        let dy = f32_value(&[1, 2, 3], &[1.0; 6]);
        let op = |w_shape: Vec<usize>, group| GradOp::ConvWeight {
            attrs: ConvAttrs {
                group,
                ..ConvAttrs::default()
            },
            w_shape,
        };
        let e = run_err(
            &op(vec![2, 4, 3], 1),
            &[Some(&x), Some(&f32_value(&[1, 2, 4], &[1.0; 8]))],
            1,
        );
        assert!(
            e.contains("dy of shape [1,2,4] does not match the Conv output [1,2,3]"),
            "{e}"
        );
        let e = run_err(&op(vec![2, 4, 3], 2), &[Some(&x), Some(&dy)], 1);
        assert!(
            e.contains("does not fit 4 input channels in 2 groups"),
            "{e}"
        );
        let e = run_err(&op(vec![3, 2, 3], 2), &[Some(&x), Some(&dy)], 1);
        assert!(e.contains("groups"), "{e}");
        let e = run_err(&op(vec![2, 4, 7], 1), &[Some(&x), Some(&dy)], 1);
        assert!(e.contains("exceeds the padded input"), "{e}");
        let e = run_err(&op(vec![2, 4], 1), &[Some(&x), Some(&dy)], 1);
        assert!(e.contains("w_shape [2,4] does not match x"), "{e}");
        let flat = f32_value(&[4, 5], &[1.0; 20]);
        let e = run_err(&op(vec![2, 4], 1), &[Some(&flat), Some(&dy)], 1);
        assert!(e.contains("x must be N×C×spatial"), "{e}");
    }
}
