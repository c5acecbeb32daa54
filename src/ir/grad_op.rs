//! The operations that only training graphs hold: the loss and the backward rules
//! that have no cheap spelling in forward ops. The autodiff pass emits them beside
//! ordinary ops; executors run them; the exporter refuses them (a training graph is
//! never written as ONNX). Inputs are numbered slots as for [`super::Op`]; each
//! variant documents its slots and outputs.

use super::{ConvAttrs, GeluApprox, GloraLinearAttrs};

/// Which elementwise function a [`GradOp::Unary`] differentiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryGradKind {
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Abs,
    Erf,
    Tanh,
    Relu,
    Sigmoid,
    Gelu(GeluApprox),
}

impl UnaryGradKind {
    /// Every kind, each GELU approximation once, in declaration order.
    pub const ALL: [UnaryGradKind; 11] = [
        UnaryGradKind::Sqrt,
        UnaryGradKind::Reciprocal,
        UnaryGradKind::Exp,
        UnaryGradKind::Log,
        UnaryGradKind::Abs,
        UnaryGradKind::Erf,
        UnaryGradKind::Tanh,
        UnaryGradKind::Relu,
        UnaryGradKind::Sigmoid,
        UnaryGradKind::Gelu(GeluApprox::None),
        UnaryGradKind::Gelu(GeluApprox::Tanh),
    ];
}

/// A backward or loss operation.
#[derive(Clone, Debug, PartialEq)]
pub enum GradOp {
    /// `x`, `y` (the forward output `f(x)`), `dy` → `dx = f'(x)·dy`. Rules read
    /// whichever of `x` and `y` is cheaper; all three have the same shape.
    Unary(UnaryGradKind),
    /// `y` (the softmax output), `dy` → `dx = y⊙(dy − Σ_axis dy⊙y)`.
    Softmax { axis: i64 },
    /// `x`, `scale`, `dy` → `dx`, `dscale`, `dbias` of LayerNormalization over axes
    /// `axis..rank`; `dscale` and `dbias` have the shape of `scale`.
    LayerNorm { axis: i64, epsilon: f32 },
    /// `indices`, `dy` → `dx` of the shape `x_shape`: zeros with `dy` scattered back
    /// (added where indices repeat) along `axis`.
    Gather { axis: i64, x_shape: Vec<usize> },
    /// `dy`, `starts`, `ends`, `axes?`, `steps?` (the forward Slice's inputs) → `dx`
    /// of the shape `x_shape`: zeros with `dy` written into the sliced positions.
    Slice { x_shape: Vec<usize> },
    /// `x`, `dy` → `dw` of a Conv with these attributes: shape `w_shape`
    /// (`[M, C/group, k…]`).
    ConvWeight {
        attrs: ConvAttrs,
        w_shape: Vec<usize>,
    },
    /// `logits` `[N, K]`, `labels` (i64 `[N]`) → scalar mean over the batch of the
    /// softmax cross-entropy, targets smoothed by `label_smoothing`.
    SoftmaxCrossEntropy { label_smoothing: f32 },
    /// `logits`, `labels`, `dloss` (scalar) → `dlogits`.
    SoftmaxCrossEntropyGrad { label_smoothing: f32 },
    /// The eleven inputs of the forward GloraLinear, then `dy` and, optionally, the
    /// forward's output `y` (which spares the A-scale gradient a full product) →
    /// `dAd`, `dAu`, `dBd`, `dBu`, `dCd`, `dCu`, `dD`, `dE` and, when the node has a
    /// ninth output, `dx`.
    /// The gradients follow the session's run-time config of the layer (weight
    /// sharing: a LoRA of rank r writes the first r columns of the down factor and
    /// rows of the up factor, a vector its first column, a constant its `[0, 0]`
    /// element; the rest is zero).
    GloraLinear(GloraLinearAttrs),
}

impl GradOp {
    pub fn name(&self) -> &'static str {
        match self {
            GradOp::Unary(_) => "UnaryGrad",
            GradOp::Softmax { .. } => "SoftmaxGrad",
            GradOp::LayerNorm { .. } => "LayerNormalizationGrad",
            GradOp::Gather { .. } => "GatherGrad",
            GradOp::Slice { .. } => "SliceGrad",
            GradOp::ConvWeight { .. } => "ConvWeightGrad",
            GradOp::SoftmaxCrossEntropy { .. } => "SoftmaxCrossEntropy",
            GradOp::SoftmaxCrossEntropyGrad { .. } => "SoftmaxCrossEntropyGrad",
            GradOp::GloraLinear(_) => "GloraLinearGrad",
        }
    }

    /// Number of input slots.
    pub fn num_inputs(&self) -> usize {
        match self {
            GradOp::Unary(_) => 3,
            GradOp::Softmax { .. } => 2,
            GradOp::LayerNorm { .. } => 3,
            GradOp::Gather { .. } => 2,
            GradOp::Slice { .. } => 5,
            GradOp::ConvWeight { .. } => 2,
            GradOp::SoftmaxCrossEntropy { .. } => 2,
            GradOp::SoftmaxCrossEntropyGrad { .. } => 3,
            GradOp::GloraLinear(_) => super::GLORA_LINEAR_INPUTS + 2,
        }
    }

    /// Whether input `slot` must be connected.
    pub fn input_required(&self, slot: usize) -> bool {
        match self {
            GradOp::Slice { .. } => slot < 3,
            GradOp::GloraLinear(_) => slot != 2 && slot != super::GLORA_LINEAR_INPUTS + 1,
            _ => true,
        }
    }
}
