//! 2-D convolution with one group (any stride, padding and dilation) and its
//! weight gradient, as im2col plus cuBLAS. The forward unfolds a chunk of images to
//! columns `[img, C·kh·kw, oh·ow]` and multiplies the filters `[M, C·kh·kw]` by each
//! image's columns in one strided-batched product, starting from the bias. The
//! weight gradient unfolds to `[C·kh·kw, img, oh·ow]`, lays `dy` out as
//! `[M, img, oh·ow]` and adds one product per chunk of images. Chunks bound the
//! column buffer; other convolutions run on the host.

use crate::ir::{ConvAttrs, DType};

use super::blas::Mat;
use super::copy::read_into;
use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::layout::sh;
use super::value::CudaValue;
use crate::exec::shapes::{Conv2d, conv2d_geometry};

/// Most column-buffer elements unfolded at once (1 GiB of f32).
const COLS_BUDGET: usize = 1 << 28;

/// Whether a Conv has a GPU kernel: f32, 2-D, one group.
pub(crate) fn supported(
    attrs: &ConvAttrs,
    x: &CudaValue,
    w: &CudaValue,
    b: Option<&CudaValue>,
) -> bool {
    attrs.group <= 1
        && x.rank() == 4
        && w.rank() == 4
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32)
}

/// Images per chunk so that one chunk's columns fit the budget.
pub(crate) fn images_per_chunk(images: usize, cols_per_image: usize) -> usize {
    (COLS_BUDGET / cols_per_image.max(1)).clamp(1, images.max(1))
}

/// Unfolds `count` images starting at image `first` of `x` into `cols`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    dev: &Device,
    cols: &CudaValue,
    x: &CudaValue,
    first: usize,
    count: usize,
    geo: &Conv2d,
    layout: i32,
) -> Result<(), String> {
    let [_, c, h, w] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let x_at = x.ptr() + (first * c * h * w * 4) as u64;
    let n = count * c * geo.kernel[0] * geo.kernel[1] * geo.out[0] * geo.out[1];
    dev.launch(
        &kernels::IM2COL,
        Grid::Elems(n),
        &[
            Arg::Ptr(cols.ptr()),
            Arg::Ptr(x_at),
            len(count),
            len(c),
            len(h),
            len(w),
            len(geo.kernel[0]),
            len(geo.kernel[1]),
            len(geo.strides[0]),
            len(geo.strides[1]),
            len(geo.pads[0]),
            len(geo.pads[1]),
            len(geo.dilations[0]),
            len(geo.dilations[1]),
            len(geo.out[0]),
            len(geo.out[1]),
            Arg::I32(layout),
        ],
    )
}

pub(crate) fn conv(
    dev: &Device,
    attrs: &ConvAttrs,
    x: &CudaValue,
    w: &CudaValue,
    b: Option<&CudaValue>,
) -> Result<CudaValue, String> {
    let (xd, wd) = (x.dims(), w.dims());
    let (images, c) = (xd[0], xd[1]);
    if wd[1] != c {
        return Err(format!(
            "weight expects {} channels per group, the input has {c} ({c} in 1 group)",
            wd[1]
        ));
    }
    let m = wd[0];
    let geo = conv2d_geometry(attrs, [xd[2], xd[3]], [wd[2], wd[3]])?;
    if let Some(b) = b
        && b.dims() != [m]
    {
        return Err(format!("bias must have shape [{m}], got {}", sh(b.dims())));
    }
    let ck = c * wd[2] * wd[3];
    let p = geo.out[0] * geo.out[1];
    let out = dev.alloc(DType::F32, &[images, m, geo.out[0], geo.out[1]])?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let beta = match b {
        Some(b) => {
            read_into(dev, &out, b, &[images, m, p], &[0, 1, 0], 0)?;
            1.0
        }
        None => 0.0,
    };
    let chunk = images_per_chunk(images, ck * p);
    let cols = dev.alloc(DType::F32, &[chunk * ck * p])?;
    let mut first = 0;
    while first < images {
        let count = chunk.min(images - first);
        im2col(dev, &cols, x, first, count, &geo, 0)?;
        let c_at = out.ptr() + (first * m * p * 4) as u64;
        dev.gemm(
            (m, p, ck),
            1.0,
            Mat::rows(w.ptr(), ck).stride(0),
            Mat::rows(cols.ptr(), p).stride(ck * p),
            beta,
            Mat::rows(c_at, p).stride(m * p),
            count,
        )?;
        first += count;
    }
    Ok(out)
}

/// The weight gradient `dw` `[M, C, kh, kw]` of a 2-D, one-group Conv from its
/// input `x` and output gradient `dy`.
pub(crate) fn conv_weight_grad(
    dev: &Device,
    attrs: &ConvAttrs,
    x: &CudaValue,
    dy: &CudaValue,
    w_shape: &[usize],
) -> Result<CudaValue, String> {
    let xd = x.dims();
    if w_shape.len() != 4 || w_shape[1] != xd[1] {
        return Err(format!(
            "w_shape {} does not fit the input {}",
            sh(w_shape),
            sh(xd)
        ));
    }
    let (images, c, m) = (xd[0], xd[1], w_shape[0]);
    let geo = conv2d_geometry(attrs, [xd[2], xd[3]], [w_shape[2], w_shape[3]])?;
    let want = [images, m, geo.out[0], geo.out[1]];
    if dy.dims() != want {
        return Err(format!(
            "dy of shape {} does not match the Conv output {}",
            sh(dy.dims()),
            sh(&want)
        ));
    }
    let ck = c * w_shape[2] * w_shape[3];
    let p = geo.out[0] * geo.out[1];
    let dw = dev.zeros(DType::F32, w_shape)?;
    if images == 0 || p == 0 || m == 0 || ck == 0 {
        return Ok(dw);
    }
    let chunk = images_per_chunk(images, ck * p);
    let cols = dev.alloc(DType::F32, &[chunk * ck * p])?;
    let dy_chunk = dev.alloc(DType::F32, &[m * chunk * p])?;
    let mut first = 0;
    while first < images {
        let count = chunk.min(images - first);
        im2col(dev, &cols, x, first, count, &geo, 1)?;
        // dy[first.., m, p] as [m, img, p].
        read_into(
            dev,
            &dy_chunk,
            dy,
            &[m, count, p],
            &[p as i64, (m * p) as i64, 1],
            (first * m * p) as i64,
        )?;
        dev.gemm(
            (m, ck, count * p),
            1.0,
            Mat::rows(dy_chunk.ptr(), count * p),
            Mat::rows(cols.ptr(), count * p).t(),
            if first == 0 { 0.0 } else { 1.0 },
            Mat::rows(dw.ptr(), ck),
            1,
        )?;
        first += count;
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_chunks_respect_the_column_budget() {
        assert_eq!(images_per_chunk(64, 768 * 256), 64);
        assert_eq!(images_per_chunk(64, COLS_BUDGET / 3), 3);
        assert_eq!(images_per_chunk(64, COLS_BUDGET * 2), 1);
        assert_eq!(images_per_chunk(0, 10), 1);
    }
}
