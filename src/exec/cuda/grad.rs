//! The training-only ops ([`GradOp`]) on the GPU, except the GLoRA layer's
//! backward (`glora_grad.rs`): the derivative rules of the unary functions, the
//! Softmax and LayerNorm backward, the scatter-backs of Gather and Slice, the Conv
//! weight gradient and the fused cross-entropy loss and its gradient. [`run`]
//! returns `None` when an op's inputs have no kernel here (non-f32 data, grouped
//! or non-2-D convolutions), so that the backend runs it on the host.

use crate::exec::shapes::check_gather_dy;
use crate::ir::{DType, GeluApprox, GradOp, UnaryGradKind};

use super::Args;
use super::copy::{plan, positions, scatter_window};
use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::layout::{axis_index, sh};
use super::value::CudaValue;
use super::{conv, loss, norm};

/// Indices per output element above which the Gather backward adds atomically
/// instead of looping over every index for every element.
const DETERMINISTIC_GATHER_MAX: usize = 64;

pub(crate) fn unary_grad_code(kind: UnaryGradKind) -> i32 {
    match kind {
        UnaryGradKind::Sqrt => 0,
        UnaryGradKind::Reciprocal => 1,
        UnaryGradKind::Exp => 2,
        UnaryGradKind::Log => 3,
        UnaryGradKind::Abs => 4,
        UnaryGradKind::Erf => 5,
        UnaryGradKind::Tanh => 6,
        UnaryGradKind::Relu => 7,
        UnaryGradKind::Sigmoid => 8,
        UnaryGradKind::Gelu(GeluApprox::None) => 9,
        UnaryGradKind::Gelu(GeluApprox::Tanh) => 10,
    }
}

fn f32s(vs: &[&CudaValue]) -> bool {
    vs.iter().all(|v| v.dtype() == DType::F32)
}

/// Runs `g` when it has a kernel for these inputs.
pub(crate) fn run(
    dev: &Device,
    g: &GradOp,
    a: &Args<'_>,
    outputs: usize,
) -> Result<Option<Vec<CudaValue>>, String> {
    let one = |v: CudaValue| Ok(Some(vec![v]));
    match g {
        GradOp::Unary(kind) => {
            let (x, y, dy) = (a.req(0, "x")?, a.req(1, "y")?, a.req(2, "dy")?);
            if !f32s(&[x, y, dy]) {
                return Ok(None);
            }
            one(unary_grad(dev, *kind, x, y, dy)?)
        }
        GradOp::Softmax { axis } => {
            let (y, dy) = (a.req(0, "y")?, a.req(1, "dy")?);
            if !f32s(&[y, dy]) {
                return Ok(None);
            }
            one(norm::softmax_grad(dev, y, dy, *axis)?)
        }
        GradOp::LayerNorm { axis, epsilon } => {
            let (x, scale, dy) = (a.req(0, "x")?, a.req(1, "scale")?, a.req(2, "dy")?);
            if !f32s(&[x, scale, dy]) {
                return Ok(None);
            }
            norm::layer_norm_grad(dev, x, scale, dy, *axis, *epsilon, outputs).map(Some)
        }
        GradOp::Gather { axis, x_shape } => {
            let (indices, dy) = (a.req(0, "indices")?, a.req(1, "dy")?);
            if !f32s(&[dy]) {
                return Ok(None);
            }
            one(gather_grad(dev, indices, dy, *axis, x_shape)?)
        }
        GradOp::Slice { x_shape } => {
            let dy = a.req(0, "dy")?;
            if !f32s(&[dy]) {
                return Ok(None);
            }
            let p = plan(
                dev,
                x_shape,
                a.req(1, "starts")?,
                a.req(2, "ends")?,
                a.opt(3),
                a.opt(4),
            )?;
            one(scatter_window(dev, dy, x_shape, &p)?)
        }
        GradOp::ConvWeight { attrs, w_shape } => {
            let (x, dy) = (a.req(0, "x")?, a.req(1, "dy")?);
            if attrs.group > 1 || x.rank() != 4 || w_shape.len() != 4 || !f32s(&[x, dy]) {
                return Ok(None);
            }
            one(conv::conv_weight_grad(dev, attrs, x, dy, w_shape)?)
        }
        GradOp::SoftmaxCrossEntropy { label_smoothing } => {
            let (logits, labels) = (a.req(0, "logits")?, a.req(1, "labels")?);
            if !f32s(&[logits]) {
                return Ok(None);
            }
            one(loss::softmax_cross_entropy(
                dev,
                logits,
                labels,
                *label_smoothing,
            )?)
        }
        GradOp::SoftmaxCrossEntropyGrad { label_smoothing } => {
            let (logits, labels, dloss) =
                (a.req(0, "logits")?, a.req(1, "labels")?, a.req(2, "dloss")?);
            if !f32s(&[logits, dloss]) {
                return Ok(None);
            }
            one(loss::softmax_cross_entropy_grad(
                dev,
                logits,
                labels,
                dloss,
                *label_smoothing,
            )?)
        }
        GradOp::GloraLinear(g) => Err(format!(
            "GLoRA layer '{}' runs only in a session that holds its config",
            g.layer
        )),
    }
}

fn unary_grad(
    dev: &Device,
    kind: UnaryGradKind,
    x: &CudaValue,
    y: &CudaValue,
    dy: &CudaValue,
) -> Result<CudaValue, String> {
    for (v, what) in [(y, "y"), (dy, "dy")] {
        if v.dims() != x.dims() {
            return Err(format!(
                "{what} of shape {} does not match x of shape {}",
                sh(v.dims()),
                sh(x.dims())
            ));
        }
    }
    let dx = dev.alloc(DType::F32, x.dims())?;
    let n = dx.numel();
    dev.launch(
        &kernels::UNARY_GRAD,
        Grid::Elems(n),
        &[
            Arg::Ptr(dx.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(y.ptr()),
            Arg::Ptr(dy.ptr()),
            len(n),
            Arg::I32(unary_grad_code(kind)),
        ],
    )?;
    Ok(dx)
}

/// Zeros of shape `x_shape` with the slabs of `dy` added back where the forward
/// Gather took them (repeated indices add up).
fn gather_grad(
    dev: &Device,
    indices: &CudaValue,
    dy: &CudaValue,
    axis: i64,
    x_shape: &[usize],
) -> Result<CudaValue, String> {
    let ax = axis_index(axis, x_shape.len())?;
    let d = x_shape[ax];
    let pos = positions(dev, indices, d, ax)?;
    check_gather_dy(x_shape, ax, indices.dims(), dy.dims())?;
    let outer: usize = x_shape[..ax].iter().product();
    let inner: usize = x_shape[ax + 1..].iter().product();
    let deterministic = pos.len() <= DETERMINISTIC_GATHER_MAX;
    let dx = if deterministic {
        dev.alloc(DType::F32, x_shape)?
    } else {
        dev.zeros(DType::F32, x_shape)?
    };
    if dx.numel() == 0 {
        return Ok(dx);
    }
    let pos_dev = dev.upload_i64(&pos)?;
    let (k, n) = if deterministic {
        (&kernels::GATHER_GRAD, dx.numel())
    } else {
        (&kernels::GATHER_GRAD_ATOMIC, dy.numel())
    };
    dev.launch(
        k,
        Grid::Elems(n),
        &[
            Arg::Ptr(dx.ptr()),
            Arg::Ptr(dy.ptr()),
            Arg::Ptr(pos_dev.ptr()),
            len(outer),
            len(pos.len()),
            len(d),
            len(inner),
        ],
    )?;
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_grad_codes_are_the_ones_the_kernel_documents() {
        let src = crate::exec::cuda::kernel_sources()
            .iter()
            .find(|(n, _)| *n == "elementwise.cu")
            .map(|(_, s)| *s)
            .unwrap();
        let codes = crate::exec::cuda::elementwise::tests::documented_codes(
            src,
            "0 sqrt, 1 reciprocal, 2 exp",
        );
        let kinds = [
            (UnaryGradKind::Sqrt, "sqrt"),
            (UnaryGradKind::Reciprocal, "reciprocal"),
            (UnaryGradKind::Exp, "exp"),
            (UnaryGradKind::Log, "log"),
            (UnaryGradKind::Abs, "abs"),
            (UnaryGradKind::Erf, "erf"),
            (UnaryGradKind::Tanh, "tanh"),
            (UnaryGradKind::Relu, "relu"),
            (UnaryGradKind::Sigmoid, "sigmoid"),
            (UnaryGradKind::Gelu(GeluApprox::None), "gelu (erf)"),
            (UnaryGradKind::Gelu(GeluApprox::Tanh), "gelu (tanh)"),
        ];
        assert_eq!(codes.len(), kinds.len(), "{codes:?}");
        for ((code, name), (kind, want)) in codes.iter().zip(kinds) {
            assert_eq!(name, want);
            assert_eq!(unary_grad_code(kind), *code, "{want}");
        }
    }
}
