//! Elementwise f32 ops on the GPU: Add, Sub, Mul, Div and Pow with numpy
//! broadcasting, the unary functions, Clip, GELU, Where (branches of any movable
//! type), and Cast between f32 and the integer and bool types. Operands are read
//! through broadcast strides over merged axes, so no broadcast copy is made.

use crate::ir::{BinaryOp, DType, GeluApprox, UnaryOp};

use super::device::Device;
use super::kernels::{self, WHERE, by_size};
use super::launch::{Arg, Grid, Kernel, len};
use super::layout::{as_i64, broadcast_shape, broadcast_strides, collapse, dims_array, sh};
use super::value::CudaValue;

/// The kernel's code of a binary op (Equal is not an f32 op).
pub(crate) fn binary_code(op: BinaryOp) -> Option<i32> {
    match op {
        BinaryOp::Add => Some(0),
        BinaryOp::Sub => Some(1),
        BinaryOp::Mul => Some(2),
        BinaryOp::Div => Some(3),
        BinaryOp::Pow => Some(4),
        BinaryOp::Equal => None,
    }
}

pub(crate) fn unary_code(op: UnaryOp) -> i32 {
    match op {
        UnaryOp::Sqrt => 0,
        UnaryOp::Reciprocal => 1,
        UnaryOp::Neg => 2,
        UnaryOp::Abs => 3,
        UnaryOp::Exp => 4,
        UnaryOp::Log => 5,
        UnaryOp::Erf => 6,
        UnaryOp::Tanh => 7,
        UnaryOp::Relu => 8,
        UnaryOp::Sigmoid => 9,
        UnaryOp::Sin => 10,
        UnaryOp::Cos => 11,
    }
}

/// `a op b` for f32 operands (a Pow exponent may be an integer tensor).
pub(crate) fn binary(
    dev: &Device,
    op: BinaryOp,
    a: &CudaValue,
    b: &CudaValue,
) -> Result<CudaValue, String> {
    let code = binary_code(op).ok_or_else(|| "internal: Equal is not an f32 kernel".to_string())?;
    let widened;
    let b = if op == BinaryOp::Pow && b.dtype().is_int() {
        widened = cast(dev, b, DType::F32)?;
        &widened
    } else {
        b
    };
    let dims = broadcast_shape(a.dims(), b.dims())
        .ok_or_else(|| format!("cannot broadcast {} with {}", sh(a.dims()), sh(b.dims())))?;
    let out = dev.alloc(DType::F32, &dims)?;
    let n = out.numel();
    if a.dims() == dims && b.dims() == dims {
        dev.launch(
            &kernels::BINARY_SAME,
            Grid::Elems(n),
            &[
                Arg::Ptr(out.ptr()),
                Arg::Ptr(a.ptr()),
                Arg::Ptr(b.ptr()),
                len(n),
                Arg::I32(code),
            ],
        )?;
        return Ok(out);
    }
    let (sa, sb) = match (
        broadcast_strides(a.dims(), &dims),
        broadcast_strides(b.dims(), &dims),
    ) {
        (Some(sa), Some(sb)) => (sa, sb),
        _ => {
            return Err(format!(
                "cannot broadcast {} with {}",
                sh(a.dims()),
                sh(b.dims())
            ));
        }
    };
    let (cd, cs) = collapse(&dims, &[&sa, &sb]);
    dev.launch(
        &kernels::BINARY,
        Grid::Elems(n),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(a.ptr()),
            Arg::Ptr(b.ptr()),
            len(n),
            Arg::I32(cd.len() as i32),
            Arg::Dims(dims_array(&as_i64(&cd))?),
            Arg::Dims(dims_array(&cs[0])?),
            Arg::Dims(dims_array(&cs[1])?),
            Arg::I32(code),
        ],
    )?;
    Ok(out)
}

/// A new f32 value shaped like `x` from one elementwise kernel whose arguments are
/// `out, x, n` followed by `extra`.
fn map_like(dev: &Device, k: &Kernel, x: &CudaValue, extra: &[Arg]) -> Result<CudaValue, String> {
    let out = dev.alloc(DType::F32, x.dims())?;
    let n = out.numel();
    let mut args = vec![Arg::Ptr(out.ptr()), Arg::Ptr(x.ptr()), len(n)];
    args.extend_from_slice(extra);
    dev.launch(k, Grid::Elems(n), &args)?;
    Ok(out)
}

pub(crate) fn unary(dev: &Device, op: UnaryOp, x: &CudaValue) -> Result<CudaValue, String> {
    map_like(dev, &kernels::UNARY, x, &[Arg::I32(unary_code(op))])
}

/// The single element of an optional bound, or `None` when the slot is empty.
fn bound(dev: &Device, v: Option<&CudaValue>, what: &str) -> Result<Option<f32>, String> {
    let Some(v) = v else { return Ok(None) };
    match v.numel() {
        0 => Ok(None),
        1 => Ok(dev.host_f64(v)?.first().map(|&x| x as f32)),
        n => Err(format!("{what} must be a scalar, got {n} elements")),
    }
}

pub(crate) fn clip(
    dev: &Device,
    x: &CudaValue,
    min: Option<&CudaValue>,
    max: Option<&CudaValue>,
) -> Result<CudaValue, String> {
    let lo = bound(dev, min, "min")?.unwrap_or(f32::NEG_INFINITY);
    let hi = bound(dev, max, "max")?.unwrap_or(f32::INFINITY);
    map_like(dev, &kernels::CLIP, x, &[Arg::F32(lo), Arg::F32(hi)])
}

pub(crate) fn gelu(dev: &Device, x: &CudaValue, approx: GeluApprox) -> Result<CudaValue, String> {
    let code = match approx {
        GeluApprox::None => 0,
        GeluApprox::Tanh => 1,
    };
    map_like(dev, &kernels::GELU, x, &[Arg::I32(code)])
}

/// Whether a Cast has a kernel: between f32 and i64, i32 or bool.
pub(crate) fn cast_supported(from: DType, to: DType) -> bool {
    let other = |d: DType| matches!(d, DType::I64 | DType::I32 | DType::Bool);
    from == to || (from == DType::F32 && other(to)) || (to == DType::F32 && other(from))
}

pub(crate) fn cast(dev: &Device, x: &CudaValue, to: DType) -> Result<CudaValue, String> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let k = match (x.dtype(), to) {
        (DType::F32, DType::I64) => &kernels::CAST_F32_TO_I64,
        (DType::F32, DType::I32) => &kernels::CAST_F32_TO_I32,
        (DType::F32, DType::Bool) => &kernels::CAST_F32_TO_BOOL,
        (DType::I64, DType::F32) => &kernels::CAST_I64_TO_F32,
        (DType::I32, DType::F32) => &kernels::CAST_I32_TO_F32,
        (DType::Bool, DType::F32) => &kernels::CAST_BOOL_TO_F32,
        (from, to) => return Err(format!("internal: no cast kernel from {from} to {to}")),
    };
    let out = dev.alloc(to, x.dims())?;
    let n = out.numel();
    dev.launch(
        k,
        Grid::Elems(n),
        &[Arg::Ptr(out.ptr()), Arg::Ptr(x.ptr()), len(n)],
    )?;
    Ok(out)
}

pub(crate) fn where_(
    dev: &Device,
    cond: &CudaValue,
    a: &CudaValue,
    b: &CudaValue,
) -> Result<CudaValue, String> {
    if cond.dtype() != DType::Bool {
        return Err(format!("condition must be bool, got {}", cond.dtype()));
    }
    if a.dtype() != b.dtype() {
        return Err(format!(
            "branch types differ: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let fail = || {
        format!(
            "cannot broadcast {}, {} and {}",
            sh(cond.dims()),
            sh(a.dims()),
            sh(b.dims())
        )
    };
    let dims = broadcast_shape(cond.dims(), a.dims())
        .and_then(|d| broadcast_shape(&d, b.dims()))
        .ok_or_else(fail)?;
    let strides = [cond, a, b]
        .iter()
        .map(|v| broadcast_strides(v.dims(), &dims).ok_or_else(fail))
        .collect::<Result<Vec<_>, _>>()?;
    let (cd, cs) = collapse(&dims, &[&strides[0], &strides[1], &strides[2]]);
    let out = dev.alloc(a.dtype(), &dims)?;
    let n = out.numel();
    dev.launch(
        by_size(WHERE, a.dtype().size_of())?,
        Grid::Elems(n),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(cond.ptr()),
            Arg::Ptr(a.ptr()),
            Arg::Ptr(b.ptr()),
            len(n),
            Arg::I32(cd.len() as i32),
            Arg::Dims(dims_array(&as_i64(&cd))?),
            Arg::Dims(dims_array(&cs[0])?),
            Arg::Dims(dims_array(&cs[1])?),
            Arg::Dims(dims_array(&cs[2])?),
        ],
    )?;
    Ok(out)
}

/// Fills an f32 value with `v`.
pub(crate) fn fill(dev: &Device, out: &CudaValue, v: f32) -> Result<(), String> {
    let n = out.numel();
    dev.launch(
        &kernels::FILL,
        Grid::Elems(n),
        &[Arg::Ptr(out.ptr()), len(n), Arg::F32(v)],
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `N name` pairs of the comment that documents a kernel's codes.
    pub(crate) fn documented_codes(src: &str, first: &str) -> Vec<(i32, String)> {
        let at = src.find(first).expect("the kernel documents its codes");
        let line = src[at..].lines().next().unwrap_or("");
        let mut text = line.to_string();
        // A list may go on over the next comment line.
        if let Some(next) = src[at..].lines().nth(1)
            && next.trim_start().starts_with("// ")
            && next.trim_start()[3..].starts_with(|c: char| c.is_ascii_digit())
        {
            text.push_str(", ");
            text.push_str(&next.trim_start()[3..]);
        }
        let text = text.split('.').next().unwrap_or("");
        text.split(',')
            .filter_map(|part| {
                let part = part.trim();
                let (n, name) = part.split_once(' ')?;
                Some((n.parse().ok()?, name.trim().to_string()))
            })
            .collect()
    }

    fn source(file: &str) -> &'static str {
        crate::exec::cuda::kernel_sources()
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, s)| *s)
            .unwrap()
    }

    #[test]
    fn op_codes_are_the_ones_the_kernels_document() {
        let src = source("elementwise.cu");
        let binary = documented_codes(src, "0 add,");
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Pow,
        ];
        assert_eq!(binary.len(), ops.len());
        for ((code, name), op) in binary.iter().zip(ops) {
            assert_eq!(binary_code(op), Some(*code));
            assert_eq!(format!("{op:?}").to_lowercase(), *name);
        }
        assert_eq!(binary_code(BinaryOp::Equal), None);
        let unary = documented_codes(src, "0 sqrt, 1 reciprocal, 2 neg");
        let ops = UnaryOp::ALL;
        assert_eq!(unary.len(), ops.len());
        for ((code, name), op) in unary.iter().zip(ops) {
            assert_eq!(unary_code(op), *code);
            assert_eq!(format!("{op:?}").to_lowercase(), *name);
        }
    }

    #[test]
    fn casts_run_on_the_gpu_only_to_and_from_f32() {
        assert!(cast_supported(DType::F32, DType::I64));
        assert!(cast_supported(DType::Bool, DType::F32));
        assert!(cast_supported(DType::I64, DType::I64));
        assert!(!cast_supported(DType::I64, DType::I32));
        assert!(!cast_supported(DType::F32, DType::F16));
    }
}
