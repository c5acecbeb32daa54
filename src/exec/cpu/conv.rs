//! N-dimensional Conv and ConvTranspose (NC… layout) with groups, strides,
//! dilations, explicit or automatic padding, and for ConvTranspose output padding
//! and an explicit output shape. Conv unfolds each image and group into a column
//! matrix (im2col) and multiplies it by the group's filters; ConvTranspose multiplies
//! the transposed filters by the input and scatters the columns back (col2im).
//! Computation is in f32 through the matmul kernel.

use rayon::prelude::*;

use crate::exec::shapes;
use crate::ir::{AutoPad, ConvAttrs};

use super::matmul::{MatRef, gemm_into};
use super::strided::PAR_MIN_ELEMS;
use super::value::{CpuValue, OpError, OpResult, bail, sh};

/// The resolved geometry of one convolution.
#[derive(Debug, Clone, PartialEq)]
struct Geometry {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    /// Padding before each spatial axis; negative for ConvTranspose outputs that
    /// grow past the natural size.
    pad_begin: Vec<i64>,
    out: Vec<usize>,
}

fn per_axis(v: &[usize], n: usize, default: usize, what: &str) -> OpResult<Vec<usize>> {
    shapes::conv_axis_values(v, n, default, what).map_err(OpError)
}

/// The spatial taps of the weight `w` (`[M, C/group, k...]`), checked against the
/// attributes.
fn kernel_of(attrs: &ConvAttrs, w: &[usize]) -> OpResult<Vec<usize>> {
    let k = &w[2..];
    shapes::check_conv_kernel(attrs, k).map_err(OpError)?;
    Ok(k.to_vec())
}

fn conv_geometry(attrs: &ConvAttrs, input: &[usize], w: &[usize]) -> OpResult<Geometry> {
    let g = shapes::conv_geometry(attrs, input, &w[2..]).map_err(OpError)?;
    Ok(Geometry {
        kernel: g.kernel,
        strides: g.strides,
        dilations: g.dilations,
        pad_begin: g.pads.iter().map(|&p| p as i64).collect(),
        out: g.out,
    })
}

fn conv_transpose_geometry(attrs: &ConvAttrs, input: &[usize], w: &[usize]) -> OpResult<Geometry> {
    let n = input.len();
    let kernel = kernel_of(attrs, w)?;
    let strides = per_axis(&attrs.strides, n, 1, "strides")?;
    let dilations = per_axis(&attrs.dilations, n, 1, "dilations")?;
    let out_pad = per_axis(&attrs.output_padding, n, 0, "output_padding")?;
    let explicit_out: Option<Vec<usize>> = match attrs.output_shape.len() {
        0 => None,
        l if l == n => Some(attrs.output_shape.clone()),
        l if l == n + 2 => Some(attrs.output_shape[2..].to_vec()),
        _ => bail!(
            "output_shape {:?} does not match {n} spatial axes",
            attrs.output_shape
        ),
    };
    let mut pad_begin = vec![0i64; n];
    let mut out = vec![0usize; n];
    for i in 0..n {
        let natural = (strides[i] * input[i].saturating_sub(1)
            + out_pad[i]
            + (kernel[i] - 1) * dilations[i]
            + 1) as i64;
        let target = match (&explicit_out, attrs.auto_pad) {
            (Some(o), _) => Some(o[i] as i64),
            (None, AutoPad::SameUpper | AutoPad::SameLower) => Some((input[i] * strides[i]) as i64),
            _ => None,
        };
        match target {
            Some(t) => {
                // The total padding is split with floor division, the larger half
                // going last except for SAME_UPPER.
                let total = natural - t;
                let half = total.div_euclid(2);
                pad_begin[i] = if attrs.auto_pad == AutoPad::SameUpper {
                    half
                } else {
                    total - half
                };
                out[i] = t as usize;
            }
            None => {
                let (pb, pe) = match attrs.auto_pad {
                    AutoPad::Valid => (0, 0),
                    _ if attrs.pads.is_empty() => (0, 0),
                    _ if attrs.pads.len() == 2 * n => {
                        (attrs.pads[i] as i64, attrs.pads[i + n] as i64)
                    }
                    _ => bail!(
                        "pads {:?} has {} entries for {n} spatial axes",
                        attrs.pads,
                        attrs.pads.len()
                    ),
                };
                let o = natural - pb - pe;
                if o <= 0 {
                    bail!("padding leaves no output on spatial axis {i}");
                }
                pad_begin[i] = pb;
                out[i] = o as usize;
            }
        }
    }
    Ok(Geometry {
        kernel,
        strides,
        dilations,
        pad_begin,
        out,
    })
}

/// Checks the channel layout and returns (group, channels per group in x, output
/// channels per group).
fn groups(
    attrs: &ConvAttrs,
    c_in: usize,
    c_w0: usize,
    c_w1: usize,
    transpose: bool,
) -> OpResult<(usize, usize, usize)> {
    let g = attrs.group.max(1);
    if !c_in.is_multiple_of(g) {
        bail!("{c_in} input channels do not split into {g} groups");
    }
    let cg = c_in / g;
    if transpose {
        if c_w0 != c_in {
            bail!("weight has {c_w0} input channels, the input {c_in}");
        }
        Ok((g, cg, c_w1))
    } else {
        if c_w1 != cg {
            bail!(
                "weight expects {c_w1} channels per group, the input has {cg} ({c_in} in {g} groups)"
            );
        }
        if !c_w0.is_multiple_of(g) {
            bail!("{c_w0} output channels do not split into {g} groups");
        }
        Ok((g, cg, c_w0 / g))
    }
}

fn check_operands(x: &CpuValue, w: &CpuValue, b: Option<&CpuValue>) -> OpResult<()> {
    if x.rank() < 3 {
        bail!("input must be N×C×spatial, got shape {}", sh(x.dims()));
    }
    if w.rank() != x.rank() {
        bail!(
            "weight of shape {} does not match input of shape {}",
            sh(w.dims()),
            sh(x.dims())
        );
    }
    if !x.dtype().is_float() || w.dtype() != x.dtype() || b.is_some_and(|b| b.dtype() != x.dtype())
    {
        bail!("operands must share one float type");
    }
    Ok(())
}

fn bias_vector(b: Option<&CpuValue>, m: usize) -> OpResult<Option<Vec<f32>>> {
    let Some(b) = b else { return Ok(None) };
    if b.dims() != [m] {
        bail!("bias must have shape [{m}], got {}", sh(b.dims()));
    }
    Ok(Some(
        b.to_f64_vec()?.into_iter().map(|v| v as f32).collect(),
    ))
}

/// The indices `j < count` for which `start + j·step` lies in `[0, len)`, as the
/// range `(first, end)`.
fn valid_span(start: i64, step: usize, count: usize, len: usize) -> (usize, usize) {
    let step = step as i64;
    let lo = if start >= 0 {
        0
    } else {
        (-start + step - 1) / step
    };
    let hi = if start >= len as i64 {
        0
    } else {
        ((len as i64 - 1 - start) / step + 1).max(0)
    };
    let hi = (hi as usize).min(count);
    ((lo as usize).min(hi), hi)
}

fn row_major_index(mut flat: usize, dims: &[usize], idx: &mut [usize]) {
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i];
        flat /= dims[i];
    }
}

/// Offset of the line at leading indices `idx` mapped through `i·s + k·d − pad`,
/// or `None` when it falls in the padding.
fn line_offset(idx: &[usize], k: &[usize], geo: &Geometry, target: &[usize]) -> Option<usize> {
    let mut base = 0usize;
    for a in 0..idx.len() {
        let p = (idx[a] * geo.strides[a] + k[a] * geo.dilations[a]) as i64 - geo.pad_begin[a];
        if p < 0 || p >= target[a] as i64 {
            return None;
        }
        base = base * target[a] + p as usize;
    }
    Some(base)
}

/// Whether `tasks` independent pieces of work should each run single-threaded
/// across the pool rather than one after another with inner parallelism.
fn spread(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks > 1 && (tasks >= 2 * threads || tasks.is_multiple_of(threads))
}

/// Runs `task` on each `task_len`-long piece of `out` (one image and group each,
/// with a reusable scratch buffer): spread across the pool when there are enough
/// pieces, otherwise one after another with parallelism inside each.
fn run_tasks<E: Send>(
    out: &mut [f32],
    task_len: usize,
    task: impl Fn(usize, &mut [f32], &mut Vec<f32>, bool) -> Result<(), E> + Sync,
) -> Result<(), E> {
    if spread(out.len() / task_len) {
        out.par_chunks_mut(task_len)
            .enumerate()
            .try_for_each_init(Vec::new, |cols, (t, dst)| task(t, dst, cols, false))
    } else {
        let mut cols = Vec::new();
        out.chunks_mut(task_len)
            .enumerate()
            .try_for_each(|(t, dst)| task(t, dst, &mut cols, true))
    }
}

pub(crate) fn conv(
    attrs: &ConvAttrs,
    x: &CpuValue,
    w: &CpuValue,
    b: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    check_operands(x, w, b)?;
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (n, c) = (xd[0], xd[1]);
    let (g, cg, mg) = groups(attrs, c, wd[0], wd[1], false)?;
    let geo = conv_geometry(attrs, &xd[2..], &wd)?;
    let m = mg * g;
    let bias = bias_vector(b, m)?;
    let in_plane: usize = xd[2..].iter().product();
    let out_plane: usize = geo.out.iter().product();
    let ksize: usize = geo.kernel.iter().product();
    let rows = cg * ksize;
    let mut out = vec![0f32; n * m * out_plane];
    let pointwise = ksize == 1
        && geo.strides.iter().all(|&s| s == 1)
        && geo.pad_begin.iter().all(|&p| p == 0)
        && geo.out == xd[2..];
    let task_len = mg * out_plane;
    if task_len == 0 {
        let mut dims = vec![n, m];
        dims.extend(&geo.out);
        return CpuValue::from_f32(out, &dims, x.dtype());
    }
    x.read_f32(|xv| {
        w.read_f32(|wv| {
            let xs = xv.to_contiguous();
            let ws = wv.to_contiguous();
            // One image and group: unfold its patches, start from the bias and add
            // the filters' product.
            let task = |t: usize, dst: &mut [f32], cols: &mut Vec<f32>, parallel: bool| {
                let (img, grp) = (t / g, t % g);
                let x_off = (img * c + grp * cg) * in_plane;
                let xg = &xs[x_off..x_off + cg * in_plane];
                let rhs = if pointwise {
                    xg
                } else {
                    cols.resize(rows * out_plane, 0.0);
                    im2col(xg, &xd[2..], &geo, cg, cols, parallel);
                    &cols[..]
                };
                if let Some(bias) = &bias {
                    for (i, row) in dst.chunks_mut(out_plane).enumerate() {
                        row.fill(bias[grp * mg + i]);
                    }
                }
                gemm_into(
                    dst,
                    (mg, out_plane, rows),
                    MatRef::row_major(&ws[grp * mg * rows..(grp + 1) * mg * rows], rows),
                    MatRef::row_major(rhs, out_plane),
                    1.0,
                    bias.as_ref().map(|_| 1.0),
                    parallel,
                )
            };
            run_tasks(&mut out, task_len, task)
        })
    })?;
    let mut dims = vec![n, m];
    dims.extend(&geo.out);
    CpuValue::from_f32(out, &dims, x.dtype())
}

/// Fills `cols` (`cg·ksize` rows by `prod(out)` columns) with the input patches of
/// one image and group; positions in the padding read 0.
fn im2col(
    x: &[f32],
    in_dims: &[usize],
    geo: &Geometry,
    cg: usize,
    cols: &mut [f32],
    parallel: bool,
) {
    let nd = in_dims.len();
    let ksize: usize = geo.kernel.iter().product();
    let in_plane: usize = in_dims.iter().product();
    let out_plane: usize = geo.out.iter().product();
    let last = nd - 1;
    let (in_last, out_last) = (in_dims[last], geo.out[last]);
    let outer_out: usize = geo.out[..last].iter().product();
    let fill_row = |r: usize, row: &mut [f32]| {
        let ch = r / ksize;
        let mut k = vec![0usize; nd];
        row_major_index(r % ksize, &geo.kernel, &mut k);
        let plane = &x[ch * in_plane..(ch + 1) * in_plane];
        let mut o = vec![0usize; last];
        let start = (k[last] * geo.dilations[last]) as i64 - geo.pad_begin[last];
        let step = geo.strides[last];
        let (lo, hi) = valid_span(start, step, out_last, in_last);
        for oi in 0..outer_out {
            row_major_index(oi, &geo.out[..last], &mut o);
            let seg = &mut row[oi * out_last..(oi + 1) * out_last];
            let Some(base) = line_offset(&o, &k[..last], geo, &in_dims[..last]) else {
                seg.fill(0.0);
                continue;
            };
            let line = &plane[base * in_last..(base + 1) * in_last];
            seg[..lo].fill(0.0);
            seg[hi..].fill(0.0);
            for (j, v) in seg[lo..hi].iter_mut().enumerate() {
                *v = line[(start + ((lo + j) * step) as i64) as usize];
            }
        }
    };
    let cols = &mut cols[..cg * ksize * out_plane];
    if out_plane == 0 {
        return;
    }
    if parallel && cols.len() >= PAR_MIN_ELEMS {
        cols.par_chunks_mut(out_plane)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    } else {
        cols.chunks_mut(out_plane)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    }
}

pub(crate) fn conv_transpose(
    attrs: &ConvAttrs,
    x: &CpuValue,
    w: &CpuValue,
    b: Option<&CpuValue>,
) -> OpResult<CpuValue> {
    check_operands(x, w, b)?;
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (n, c) = (xd[0], xd[1]);
    let (g, cg, mg) = groups(attrs, c, wd[0], wd[1], true)?;
    let geo = conv_transpose_geometry(attrs, &xd[2..], &wd)?;
    let m = mg * g;
    let bias = bias_vector(b, m)?;
    let in_plane: usize = xd[2..].iter().product();
    let out_plane: usize = geo.out.iter().product();
    let ksize: usize = geo.kernel.iter().product();
    let rows = mg * ksize;
    let mut out = vec![0f32; n * m * out_plane];
    let task_len = mg * out_plane;
    if task_len > 0 {
        x.read_f32(|xv| {
            w.read_f32(|wv| {
                let xs = xv.to_contiguous();
                let ws = wv.to_contiguous();
                // One image and group: cols = W_gᵀ · x_g (W_g is cg × rows row-major,
                // read transposed), then every column entry lands on its output pixel.
                let task = |t: usize, dst: &mut [f32], cols: &mut Vec<f32>, parallel: bool| {
                    let (img, grp) = (t / g, t % g);
                    let x_off = (img * c + grp * cg) * in_plane;
                    let wg = &ws[grp * cg * rows..(grp + 1) * cg * rows];
                    cols.resize(rows * in_plane, 0.0);
                    gemm_into(
                        cols,
                        (rows, in_plane, cg),
                        MatRef {
                            data: wg,
                            offset: 0,
                            rs: 1,
                            cs: rows as isize,
                        },
                        MatRef::row_major(&xs[x_off..x_off + cg * in_plane], in_plane),
                        1.0,
                        None,
                        parallel,
                    )?;
                    if let Some(bias) = &bias {
                        for (i, plane) in dst.chunks_mut(out_plane).enumerate() {
                            plane.fill(bias[grp * mg + i]);
                        }
                    }
                    col2im(cols, &xd[2..], &geo, dst, parallel);
                    Ok(())
                };
                run_tasks(&mut out, task_len, task)
            })
        })?;
    }
    let mut dims = vec![n, m];
    dims.extend(&geo.out);
    CpuValue::from_f32(out, &dims, x.dtype())
}

/// Adds each column entry of `cols` (`mg·ksize` rows by `prod(in)` columns) to the
/// output position it lands on; `out` holds the group's `mg` output planes.
fn col2im(cols: &[f32], in_dims: &[usize], geo: &Geometry, out: &mut [f32], parallel: bool) {
    let nd = in_dims.len();
    let last = nd - 1;
    let ksize: usize = geo.kernel.iter().product();
    let in_plane: usize = in_dims.iter().product();
    let out_plane: usize = geo.out.iter().product();
    let (in_last, out_last) = (in_dims[last], geo.out[last]);
    let outer_in: usize = in_dims[..last].iter().product();
    if out_plane == 0 || in_plane == 0 {
        return;
    }
    let channel = |ch: usize, plane: &mut [f32]| {
        let mut k = vec![0usize; nd];
        let mut i = vec![0usize; last];
        for kk in 0..ksize {
            row_major_index(kk, &geo.kernel, &mut k);
            let row = &cols[(ch * ksize + kk) * in_plane..(ch * ksize + kk + 1) * in_plane];
            let start = (k[last] * geo.dilations[last]) as i64 - geo.pad_begin[last];
            let step = geo.strides[last];
            let (lo, hi) = valid_span(start, step, in_last, out_last);
            for oi in 0..outer_in {
                row_major_index(oi, &in_dims[..last], &mut i);
                let Some(base) = line_offset(&i, &k[..last], geo, &geo.out[..last]) else {
                    continue;
                };
                let line = &mut plane[base * out_last..(base + 1) * out_last];
                let src = &row[oi * in_last..(oi + 1) * in_last];
                for (j, &v) in src[lo..hi].iter().enumerate() {
                    line[(start + ((lo + j) * step) as i64) as usize] += v;
                }
            }
        }
    };
    if parallel && out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(out_plane)
            .enumerate()
            .for_each(|(ch, p)| channel(ch, p));
    } else {
        out.chunks_mut(out_plane)
            .enumerate()
            .for_each(|(ch, p)| channel(ch, p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_splits_the_odd_pixel_by_mode() {
        let attrs = |auto_pad| ConvAttrs {
            strides: vec![2],
            auto_pad,
            ..ConvAttrs::default()
        };
        // in 5, k 3, s 2: out 3, total pad (3-1)·2 + 3 − 5 = 2 → 1/1.
        let g = conv_geometry(&attrs(AutoPad::SameUpper), &[5], &[1, 1, 3]).unwrap();
        assert_eq!((g.pad_begin.clone(), g.out.clone()), (vec![1], vec![3]));
        // in 6, k 4, s 2: out 3, total pad 4 + 4 − 6 = 2; in 6, k 3: total 1.
        let g = conv_geometry(&attrs(AutoPad::SameUpper), &[6], &[1, 1, 3]).unwrap();
        assert_eq!((g.pad_begin.clone(), g.out.clone()), (vec![0], vec![3]));
        let g = conv_geometry(&attrs(AutoPad::SameLower), &[6], &[1, 1, 3]).unwrap();
        assert_eq!((g.pad_begin.clone(), g.out.clone()), (vec![1], vec![3]));
    }

    #[test]
    fn conv_transpose_output_shape_sets_the_padding() {
        let attrs = ConvAttrs {
            strides: vec![3],
            output_shape: vec![10],
            ..ConvAttrs::default()
        };
        // natural size 3·(3−1) + 3 = 9; one more requested: padding −1, all at the end.
        let g = conv_transpose_geometry(&attrs, &[3], &[1, 2, 3]).unwrap();
        assert_eq!((g.pad_begin, g.out), (vec![0], vec![10]));
    }
}
