//! Conv and ConvTranspose against hand-worked outputs and a direct-summation
//! reference written here (one loop per output element, 1-D to 3-D).

use super::*;
use crate::ir::{AutoPad, ConvAttrs};

/// Direct convolution for any spatial rank; `pads` are begin pads then end pads.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    xd: &[usize],
    w: &[f32],
    wd: &[usize],
    bias: Option<&[f32]>,
    strides: &[usize],
    dil: &[usize],
    pads: &[usize],
    group: usize,
) -> (Vec<f32>, Vec<usize>) {
    let sp = xd.len() - 2;
    let (n, c, m) = (xd[0], xd[1], wd[0]);
    let cg = c / group;
    let mg = m / group;
    let out: Vec<usize> = (0..sp)
        .map(|i| {
            (xd[i + 2] + pads[i] + pads[i + sp] - ((wd[i + 2] - 1) * dil[i] + 1)) / strides[i] + 1
        })
        .collect();
    let out_plane: usize = out.iter().product();
    let k_plane: usize = wd[2..].iter().product();
    let in_plane: usize = xd[2..].iter().product();
    let mut y = vec![0f32; n * m * out_plane];
    let unflat = |mut f: usize, dims: &[usize]| {
        let mut v = vec![0usize; dims.len()];
        for i in (0..dims.len()).rev() {
            v[i] = f % dims[i];
            f /= dims[i];
        }
        v
    };
    for b in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            for o in 0..out_plane {
                let oi = unflat(o, &out);
                let mut s = bias.map_or(0.0, |bb| bb[oc] as f64);
                for ic in 0..cg {
                    for kf in 0..k_plane {
                        let ki = unflat(kf, &wd[2..]);
                        let mut flat = 0usize;
                        let mut inside = true;
                        for a in 0..sp {
                            let p = (oi[a] * strides[a] + ki[a] * dil[a]) as i64 - pads[a] as i64;
                            if p < 0 || p >= xd[a + 2] as i64 {
                                inside = false;
                            }
                            flat = flat * xd[a + 2] + p.max(0) as usize;
                        }
                        if inside {
                            let xv = x[(b * c + g * cg + ic) * in_plane + flat];
                            let wv = w[(oc * cg + ic) * k_plane + kf];
                            s += xv as f64 * wv as f64;
                        }
                    }
                }
                y[(b * m + oc) * out_plane + o] = s as f32;
            }
        }
    }
    let mut dims = vec![n, m];
    dims.extend(out);
    (y, dims)
}

fn conv(attrs: ConvAttrs, x: Tensor, w: Tensor, b: Option<Tensor>) -> anyhow::Result<Tensor> {
    Ok(eval_opt(Op::Conv(attrs), &[Some(x), Some(w), b], 1)?.remove(0))
}

#[test]
fn sums_of_two_by_two_windows() {
    let x = f32t(&[1, 1, 3, 3], &[0., 1., 2., 3., 4., 5., 6., 7., 8.]);
    let w = f32t(&[1, 1, 2, 2], &[1.; 4]);
    let got = conv(ConvAttrs::default(), x, w, None).unwrap();
    assert_f32(&got, &[1, 1, 2, 2], &[8., 12., 20., 24.], 0.0);
}

#[allow(clippy::too_many_arguments)]
fn check_against_naive(
    xd: &[usize],
    wd: &[usize],
    strides: &[usize],
    dil: &[usize],
    pads: &[usize],
    group: usize,
    with_bias: bool,
    seed: u64,
) {
    let x = noise(xd.iter().product(), seed);
    let w = noise(wd.iter().product(), seed + 1);
    let b = noise(wd[0], seed + 2);
    let attrs = ConvAttrs {
        strides: strides.to_vec(),
        dilations: dil.to_vec(),
        pads: pads.to_vec(),
        group,
        ..ConvAttrs::default()
    };
    let got = conv(
        attrs,
        f32t(xd, &x),
        f32t(wd, &w),
        with_bias.then(|| f32t(&[wd[0]], &b)),
    )
    .unwrap();
    let (want, dims) = naive_conv(
        &x,
        xd,
        &w,
        wd,
        with_bias.then_some(&b[..]),
        strides,
        dil,
        pads,
        group,
    );
    assert_f32(&got, &dims, &want, 1e-5);
}

#[test]
fn matches_direct_summation_in_one_to_three_dimensions() {
    check_against_naive(&[2, 3, 11], &[4, 3, 3], &[2], &[1], &[1, 2], 1, true, 10);
    check_against_naive(
        &[2, 4, 7, 6],
        &[6, 2, 3, 2],
        &[1, 2],
        &[2, 1],
        &[1, 0, 2, 1],
        2,
        true,
        20,
    );
    check_against_naive(
        &[1, 2, 5, 4, 6],
        &[3, 2, 2, 3, 2],
        &[2, 1, 2],
        &[1, 1, 2],
        &[0, 1, 1, 1, 0, 0],
        1,
        false,
        30,
    );
    // Depthwise, and a 1×1 pointwise convolution.
    check_against_naive(
        &[1, 4, 6, 6],
        &[4, 1, 3, 3],
        &[1, 1],
        &[1, 1],
        &[1, 1, 1, 1],
        4,
        true,
        40,
    );
    check_against_naive(
        &[2, 5, 4, 3],
        &[7, 5, 1, 1],
        &[1, 1],
        &[1, 1],
        &[0, 0, 0, 0],
        1,
        true,
        50,
    );
    // Patch embedding: kernel and stride 4 over 8×8.
    check_against_naive(
        &[2, 3, 8, 8],
        &[5, 3, 4, 4],
        &[4, 4],
        &[1, 1],
        &[0, 0, 0, 0],
        1,
        true,
        60,
    );
}

#[test]
fn auto_pad_same_keeps_the_size_and_pads_like_explicit_pads() {
    let x = noise(2 * 6 * 5, 70);
    let w = noise(3 * 2 * 3 * 2, 71);
    let xd = [1, 2, 6, 5];
    let wd = [3, 2, 3, 2];
    for (mode, pads) in [
        (AutoPad::SameUpper, [1, 0, 1, 1]),
        (AutoPad::SameLower, [1, 1, 1, 0]),
    ] {
        let attrs = ConvAttrs {
            auto_pad: mode,
            ..ConvAttrs::default()
        };
        let got = conv(attrs, f32t(&xd, &x), f32t(&wd, &w), None).unwrap();
        let (want, dims) = naive_conv(&x, &xd, &w, &wd, None, &[1, 1], &[1, 1], &pads, 1);
        assert_eq!(dims, vec![1, 3, 6, 5]);
        assert_f32(&got, &dims, &want, 1e-5);
    }
}

#[test]
fn bad_channel_counts_are_errors() {
    let msg = conv(
        ConvAttrs::default(),
        f32t(&[1, 3, 4, 4], &[0.; 48]),
        f32t(&[2, 2, 3, 3], &[0.; 36]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("channels"), "{msg}");
    let msg = conv(
        ConvAttrs::default(),
        f32t(&[1, 1, 2, 2], &[0.; 4]),
        f32t(&[1, 1, 3, 3], &[0.; 9]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("exceeds the padded input"), "{msg}");
}

/// Direct transposed convolution: every input element scatters `x·w` onto the
/// output positions `i·s − pad + k·d`.
#[allow(clippy::too_many_arguments)]
fn naive_conv_transpose(
    x: &[f32],
    xd: &[usize],
    w: &[f32],
    wd: &[usize],
    strides: &[usize],
    dil: &[usize],
    pad_begin: &[i64],
    out: &[usize],
    group: usize,
) -> Vec<f32> {
    let sp = xd.len() - 2;
    let (n, c) = (xd[0], xd[1]);
    let cg = c / group;
    let mg = wd[1];
    let m = mg * group;
    let in_plane: usize = xd[2..].iter().product();
    let k_plane: usize = wd[2..].iter().product();
    let out_plane: usize = out.iter().product();
    let mut y = vec![0f64; n * m * out_plane];
    let unflat = |mut f: usize, dims: &[usize]| {
        let mut v = vec![0usize; dims.len()];
        for i in (0..dims.len()).rev() {
            v[i] = f % dims[i];
            f /= dims[i];
        }
        v
    };
    for b in 0..n {
        for ic in 0..c {
            let g = ic / cg;
            for i in 0..in_plane {
                let ii = unflat(i, &xd[2..]);
                for ocg in 0..mg {
                    for kf in 0..k_plane {
                        let ki = unflat(kf, &wd[2..]);
                        let mut flat = 0usize;
                        let mut inside = true;
                        for a in 0..sp {
                            let p = (ii[a] * strides[a] + ki[a] * dil[a]) as i64 - pad_begin[a];
                            if p < 0 || p >= out[a] as i64 {
                                inside = false;
                            }
                            flat = flat * out[a] + p.max(0) as usize;
                        }
                        if inside {
                            let oc = g * mg + ocg;
                            y[(b * m + oc) * out_plane + flat] += x[(b * c + ic) * in_plane + i]
                                as f64
                                * w[(ic * mg + ocg) * k_plane + kf] as f64;
                        }
                    }
                }
            }
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

fn conv_t(attrs: ConvAttrs, x: Tensor, w: Tensor, b: Option<Tensor>) -> anyhow::Result<Tensor> {
    Ok(eval_opt(Op::ConvTranspose(attrs), &[Some(x), Some(w), b], 1)?.remove(0))
}

#[test]
fn transposed_conv_scatters_each_input() {
    // x = [1, 2], kernel [1, 1, 1], stride 2: [1,1,1,0,0] + [0,0,2,2,2].
    let attrs = ConvAttrs {
        strides: vec![2],
        ..ConvAttrs::default()
    };
    let got = conv_t(
        attrs,
        f32t(&[1, 1, 2], &[1., 2.]),
        f32t(&[1, 1, 3], &[1., 1., 1.]),
        None,
    )
    .unwrap();
    assert_f32(&got, &[1, 1, 5], &[1., 1., 3., 2., 2.], 0.0);
}

#[test]
fn transposed_conv_matches_direct_scatter() {
    // 2-D with groups, strides, dilations, pads and output padding, plus bias.
    let xd = [2, 4, 3, 4];
    let wd = [4, 3, 3, 2];
    let x = noise(xd.iter().product(), 80);
    let w = noise(wd.iter().product(), 81);
    let b = noise(6, 82);
    let attrs = ConvAttrs {
        strides: vec![2, 3],
        dilations: vec![1, 2],
        pads: vec![1, 0, 0, 2],
        output_padding: vec![1, 0],
        group: 2,
        ..ConvAttrs::default()
    };
    // out = s·(in−1) + op + (k−1)·d + 1 − pads: 2·2+1+3−1 = 7, 3·3+0+3−2 = 10.
    let out = [7, 10];
    let got = conv_t(attrs, f32t(&xd, &x), f32t(&wd, &w), Some(f32t(&[6], &b))).unwrap();
    let mut want = naive_conv_transpose(&x, &xd, &w, &wd, &[2, 3], &[1, 2], &[1, 0], &out, 2);
    for (i, v) in want.iter_mut().enumerate() {
        *v += b[(i / 70) % 6];
    }
    assert_f32(&got, &[2, 6, 7, 10], &want, 1e-5);
}

#[test]
fn transposed_conv_output_shape_and_same_padding() {
    let xd = [1, 1, 3, 3];
    let wd = [1, 2, 3, 3];
    let x = noise(9, 90);
    let w = noise(18, 91);
    // Natural size 3·2+3 = 9 on H, 2·2+3 = 7 on W; asking for 10×8 pads at the end.
    let attrs = ConvAttrs {
        strides: vec![3, 2],
        output_shape: vec![10, 8],
        ..ConvAttrs::default()
    };
    let got = conv_t(attrs, f32t(&xd, &x), f32t(&wd, &w), None).unwrap();
    let want = naive_conv_transpose(&x, &xd, &w, &wd, &[3, 2], &[1, 1], &[0, 0], &[10, 8], 1);
    assert_f32(&got, &[1, 2, 10, 8], &want, 1e-5);
    // SAME_UPPER: output in·stride = 6×6 from a natural 7×7; the one pixel of
    // padding goes at the end.
    let attrs = ConvAttrs {
        strides: vec![2, 2],
        auto_pad: AutoPad::SameUpper,
        ..ConvAttrs::default()
    };
    let got = conv_t(attrs, f32t(&xd, &x), f32t(&wd, &w), None).unwrap();
    let want = naive_conv_transpose(&x, &xd, &w, &wd, &[2, 2], &[1, 1], &[0, 0], &[6, 6], 1);
    assert_f32(&got, &[1, 2, 6, 6], &want, 1e-5);
}

#[test]
fn empty_kernels_are_errors() {
    let msg = conv(
        ConvAttrs::default(),
        f32t(&[1, 1, 3], &[0.; 3]),
        f32t(&[1, 1, 0], &[]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("empty kernel"), "{msg}");
}
