//! The operations of the IR. Each variant is opset-independent: the ONNX importer
//! normalises attributes that moved between opsets (axes of Reduce/Squeeze/Unsqueeze,
//! the sizes of Split) into the variant, and the exporter writes them back at the
//! opset it targets. Inputs are edges into numbered slots; the slot list of each
//! variant is documented on it (`?` marks an optional slot that may have no edge).

use std::fmt;

use super::{DType, GradOp, Tensor};

/// Elementwise binary operations with numpy-style broadcasting: inputs `a`, `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Output is bool.
    Equal,
}

/// Elementwise unary operations: input `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Exp,
    Log,
    Erf,
    Tanh,
    Relu,
    Sigmoid,
    Sin,
    Cos,
}

impl UnaryOp {
    /// Every unary op, in declaration order.
    pub const ALL: [UnaryOp; 12] = [
        UnaryOp::Sqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Erf,
        UnaryOp::Tanh,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ];
}

/// Reductions over `axes`: input `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Mean,
    Sum,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    /// `0.5·x·(1 + erf(x/√2))`
    None,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Attributes of Conv and ConvTranspose. Empty vectors mean the ONNX default for the
/// input's spatial rank (strides and dilations 1, pads 0); `pads` is
/// `[begin_0, .., begin_n, end_0, .., end_n]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConvAttrs {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub group: usize,
    pub auto_pad: AutoPad,
    /// ConvTranspose only.
    pub output_padding: Vec<usize>,
    /// ConvTranspose only: explicit spatial output shape.
    pub output_shape: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Default for GemmAttrs {
    fn default() -> Self {
        GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    /// `(y + 0.5) / scale`, defined by Resize-11 only.
    TfHalfPixelForNn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Attributes of Resize (opset 11–19 semantics; `axes`, `antialias` and
/// `keep_aspect_ratio_policy` come from opset 18).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub aspect: AspectPolicy,
}

impl Default for ResizeAttrs {
    fn default() -> Self {
        ResizeAttrs {
            mode: ResizeMode::Nearest,
            coord: CoordTransform::HalfPixel,
            nearest: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            aspect: AspectPolicy::Stretch,
        }
    }
}

/// How the frozen weight W0 of a GLoRA layer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// `[d_in, d_out]`, as `MatMul(x, W)` reads it.
    InOut,
    /// `[d_out, d_in]`, as `Gemm(x, W, transB=1)` reads it (the PyTorch layout).
    OutIn,
}

/// Attributes of a GLoRA-adapted linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GloraLinearAttrs {
    /// The layer's name, the key of its run-time config and of its adapter tensors.
    pub layer: String,
    pub d_in: usize,
    pub d_out: usize,
    /// The rank the adapter factors are stored at (the largest rank any option reads).
    pub rank: usize,
    pub layout: WeightLayout,
    pub has_bias: bool,
}

/// Number of input slots of [`Op::GloraLinear`].
pub const GLORA_LINEAR_INPUTS: usize = 11;

/// One operation of the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; its type is the node's single output type. No inputs.
    Input,
    /// A frozen tensor (weights, constants). No inputs.
    Const(Tensor),
    /// A trainable tensor. No inputs.
    Param(Tensor),
    /// `a`, `b`: numpy matmul semantics (batched, broadcasting leading dims, 1-D promotion).
    MatMul,
    /// `a`, `b`, `c?`: `alpha·A'·B' + beta·C` with A', B' optionally transposed.
    Gemm(GemmAttrs),
    /// `x`, `w`, `b?`: N-d convolution, NC… layout.
    Conv(ConvAttrs),
    /// `x`, `w`, `b?`: transposed convolution, weight `[C_in, C_out/group, k…]`.
    ConvTranspose(ConvAttrs),
    Binary(BinaryOp),
    Unary(UnaryOp),
    /// `x`, `min?`, `max?` (scalars).
    Clip,
    /// `x`: softmax along `axis` (opset-13 semantics).
    Softmax {
        axis: i64,
    },
    /// `x`, `scale`, `bias?`: normalise over axes `axis..rank`. Outputs: `y`, `mean?`,
    /// `inv_std_dev?` (the last two with the reduced axes kept as size 1).
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// `x`: GELU, produced by fusion of its Erf (or tanh) decomposition.
    Gelu {
        approximate: GeluApprox,
    },
    /// `x`: reduce over `axes` (None: all axes, unless `noop_with_empty_axes`).
    Reduce {
        op: ReduceOp,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// `x`, `shape` (i64; 0 copies the input dim unless `allowzero`, -1 is inferred).
    Reshape {
        allowzero: bool,
    },
    /// `x`: permute axes (None: reverse them).
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// `x0`, `x1`, …: concatenate along `axis`.
    Concat {
        axis: i64,
    },
    /// `x`: split along `axis` into one piece per output; `sizes` None means equal
    /// pieces (the last one smaller when the size does not divide).
    Split {
        axis: i64,
        sizes: Option<Vec<usize>>,
    },
    /// `x`, `indices` (i64/i32, negative counts from the end).
    Gather {
        axis: i64,
    },
    /// `x`, `starts`, `ends`, `axes?`, `steps?` (opset ≥ 10 form).
    Slice,
    /// `x`: remove size-1 axes (None: all of them).
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    /// `x`: insert size-1 axes at `axes` (positions in the output).
    Unsqueeze {
        axes: Vec<i64>,
    },
    /// `x`: to 2-D `[prod(dims[..axis]), prod(dims[axis..])]`.
    Flatten {
        axis: i64,
    },
    /// `x`: its shape as a 1-D i64 tensor, sliced by `start..end`.
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// `x`: convert to `to`.
    Cast {
        to: DType,
    },
    /// `cond`, `a`, `b`: elementwise select with broadcasting.
    Where,
    /// `x`, `shape`: broadcast to `shape` (numpy rules, both ways).
    Expand,
    /// `shape`: a tensor of that shape filled with `value` (a one-element tensor).
    ConstantOfShape {
        value: Tensor,
    },
    /// `x`
    Identity,
    /// `start`, `limit`, `delta` (scalars).
    Range,
    /// `x`, `scale`, `bias`, `mean`, `var`: inference-mode batch normalisation over axis 1.
    BatchNorm {
        epsilon: f32,
    },
    /// `x`, `roi?`, `scales?`, `sizes?`.
    Resize(ResizeAttrs),
    /// `x`, `w0`, `b0?`, `ad`, `au`, `bd`, `bu`, `cd`, `cu`, `d`, `e`: a linear layer
    /// with a GLoRA adapter, `y = x·(W0 + W0⊙A + B)ᵀ + b0 + b0⊙D + E + W0·C`. W0 and
    /// b0 are the frozen base weights; the other eight are the adapter tensors. Which
    /// option each term takes is run-time state of the executor, not an attribute.
    GloraLinear(GloraLinearAttrs),
    /// A loss or backward operation of a training graph (see [`GradOp`]).
    Grad(GradOp),
}

impl Op {
    /// The ONNX-style name of the operation, used in dumps, histograms and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Const(_) => "Const",
            Op::Param(_) => "Param",
            Op::MatMul => "MatMul",
            Op::Gemm(_) => "Gemm",
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
                BinaryOp::Equal => "Equal",
            },
            Op::Unary(u) => match u {
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Neg => "Neg",
                UnaryOp::Abs => "Abs",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Erf => "Erf",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Relu => "Relu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Sin => "Sin",
                UnaryOp::Cos => "Cos",
            },
            Op::Clip => "Clip",
            Op::Softmax { .. } => "Softmax",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Gelu { .. } => "Gelu",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Max => "ReduceMax",
            },
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Gather { .. } => "Gather",
            Op::Slice => "Slice",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Flatten { .. } => "Flatten",
            Op::Shape { .. } => "Shape",
            Op::Cast { .. } => "Cast",
            Op::Where => "Where",
            Op::Expand => "Expand",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Identity => "Identity",
            Op::Range => "Range",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Resize(_) => "Resize",
            Op::GloraLinear(_) => "GloraLinear",
            Op::Grad(g) => g.name(),
        }
    }

    /// Nodes that hold a tensor rather than compute one.
    pub fn is_weight(&self) -> bool {
        matches!(self, Op::Const(_) | Op::Param(_))
    }

    /// The tensor held by a `Const` or `Param` node.
    pub fn weight(&self) -> Option<&Tensor> {
        match self {
            Op::Const(t) | Op::Param(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::UnaryOp;

    /// The match has no wildcard, so a new variant fails to compile until it has a
    /// position, and the list must hold it there.
    #[test]
    fn unary_all_lists_every_variant_once_in_order() {
        let position = |op: UnaryOp| match op {
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
        };
        for (i, op) in UnaryOp::ALL.into_iter().enumerate() {
            assert_eq!(position(op), i, "{op:?}");
        }
    }
}
