//! Multi-head attention pieces the encoder families share: the additive bias that
//! hides padding tokens from every query, and scaled dot-product attention over
//! projected queries, keys and values. The projections themselves stay in each
//! family's file, because their module names differ (`self.query`, `q_lin`,
//! `attention.query`).

use super::builder::Scope;
use crate::ir::{BinaryOp, DType, Op, Port, Tensor};

/// `[batch, seq]` integer mask (1 = token, 0 = padding) → `[batch, 1, 1, seq]` f32
/// bias: 0 where attended, the lowest f32 where masked, as transformers adds it.
pub fn padding_bias(s: &mut Scope<'_, '_>, mask: Port) -> Port {
    let m = s.cast(mask, DType::F32);
    let one = s.constant("one", Tensor::scalar_f32(1.0));
    let hidden = s.binary(BinaryOp::Sub, one, m);
    let lowest = s.constant("lowest", Tensor::scalar_f32(f32::MIN));
    let bias = s.mul(hidden, lowest);
    s.unsqueeze(bias, &[1, 2])
}

/// Scaled dot-product attention of `q`, `k`, `v` `[batch, seq, heads·head_dim]` with
/// an optional additive `bias` broadcast to `[batch, heads, seq, seq]`; returns the
/// heads merged back to `[batch, seq, heads·head_dim]`.
pub fn multi_head(
    s: &mut Scope<'_, '_>,
    q: Port,
    k: Port,
    v: Port,
    heads: usize,
    head_dim: usize,
    bias: Option<Port>,
) -> Port {
    let split = [0, 0, heads as i64, head_dim as i64];
    let q = s.reshape(q, &split);
    let q = s.transpose(q, &[0, 2, 1, 3]);
    let k = s.reshape(k, &split);
    let kt = s.transpose(k, &[0, 2, 3, 1]);
    let v = s.reshape(v, &split);
    let v = s.transpose(v, &[0, 2, 1, 3]);
    let scores = s.op("MatMul", Op::MatMul, &[q, kt]);
    let scale = s.constant("scale", Tensor::scalar_f32((head_dim as f32).sqrt()));
    let mut scores = s.binary(BinaryOp::Div, scores, scale);
    if let Some(b) = bias {
        scores = s.add(scores, b);
    }
    let weights = s.op("Softmax", Op::Softmax { axis: -1 }, &[scores]);
    let mixed = s.op("MatMul", Op::MatMul, &[weights, v]);
    let merged = s.transpose(mixed, &[0, 2, 1, 3]);
    s.reshape(merged, &[0, 0, (heads * head_dim) as i64])
}
