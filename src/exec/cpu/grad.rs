//! CPU kernels of the training-only operations ([`GradOp`]) other than the GLoRA
//! layer's backward (in `glora_grad.rs`): elementwise derivative rules, the softmax
//! and LayerNormalization backward, scatter-backs of Gather and Slice, the weight
//! gradient of Conv, and the fused softmax cross-entropy and its gradient. The
//! backend's dispatch hands [`run`] the node's input slots; each family lives in a
//! submodule and returns new values (float results in the dtype of the incoming
//! gradient, computed in f32).

mod conv_weight;
mod cross_entropy;
mod norm;
mod scatter;
#[cfg(test)]
mod testing;
mod unary;

use crate::ir::{DType, GradOp};

use super::Args;
use super::value::{CpuValue, OpResult, bail, sh};

pub(super) fn run(g: &GradOp, a: &Args<'_>, outputs: usize) -> OpResult<Vec<CpuValue>> {
    let one = |r: OpResult<CpuValue>| r.map(|v| vec![v]);
    match g {
        GradOp::Unary(kind) => one(unary::unary_grad(
            *kind,
            a.req(0, "x")?,
            a.req(1, "y")?,
            a.req(2, "dy")?,
        )),
        GradOp::Softmax { axis } => one(norm::softmax_grad(a.req(0, "y")?, a.req(1, "dy")?, *axis)),
        GradOp::LayerNorm { axis, epsilon } => norm::layer_norm_grad(
            a.req(0, "x")?,
            a.req(1, "scale")?,
            a.req(2, "dy")?,
            *axis,
            *epsilon,
            outputs,
        ),
        GradOp::Gather { axis, x_shape } => one(scatter::gather_grad(
            a.req(0, "indices")?,
            a.req(1, "dy")?,
            *axis,
            x_shape,
        )),
        GradOp::Slice { x_shape } => one(scatter::slice_grad(
            a.req(0, "dy")?,
            &scatter::SliceArgs {
                starts: a.req(1, "starts")?,
                ends: a.req(2, "ends")?,
                axes: a.opt(3),
                steps: a.opt(4),
            },
            x_shape,
        )),
        GradOp::ConvWeight { attrs, w_shape } => one(conv_weight::conv_weight_grad(
            attrs,
            a.req(0, "x")?,
            a.req(1, "dy")?,
            w_shape,
        )),
        GradOp::SoftmaxCrossEntropy { label_smoothing } => {
            one(cross_entropy::softmax_cross_entropy(
                a.req(0, "logits")?,
                a.req(1, "labels")?,
                *label_smoothing,
            ))
        }
        GradOp::SoftmaxCrossEntropyGrad { label_smoothing } => {
            one(cross_entropy::softmax_cross_entropy_grad(
                a.req(0, "logits")?,
                a.req(1, "labels")?,
                a.req(2, "dloss")?,
                *label_smoothing,
            ))
        }
        GradOp::GloraLinear(g) => bail!(
            "GLoRA layer '{}' runs only in a session that holds its config",
            g.layer
        ),
    }
}

/// The dtype of a float input, or an error naming it.
fn float_dtype(v: &CpuValue, what: &str) -> OpResult<DType> {
    let d = v.dtype();
    if !d.is_float() {
        bail!("{what} must be a float tensor, got {d}");
    }
    Ok(d)
}

/// An error unless `b` has exactly the shape of `a`.
fn same_shape(a: &CpuValue, what_a: &str, b: &CpuValue, what_b: &str) -> OpResult<()> {
    if a.dims() != b.dims() {
        bail!(
            "{what_b} of shape {} does not match {what_a} of shape {}",
            sh(b.dims()),
            sh(a.dims())
        );
    }
    Ok(())
}

/// Σ a·b with eight independent accumulators, so the loop vectorises; the
/// summation order depends only on the length.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Row-major strides of `dims`.
fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}
