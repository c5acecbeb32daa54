//! The CPU backend: values are candle-core CPU tensors ([`CpuValue`]) and each op
//! family lives in its own file. [`CpuBackend::run_node`] checks the node's input
//! slots, dispatches on its op and turns every failure into an [`ExecError`] naming
//! the node and op. The same dispatch serves constant folding through
//! [`NodeEval`].

mod alloc;
mod conv;
mod elementwise;
mod glora;
mod glora_grad;
mod grad;
mod math;
mod matmul;
mod norm;
pub mod products;
mod reduce;
mod resize;
mod sgemm;
mod shape_ops;
mod simd;
mod strided;
pub(crate) mod value;

use crate::glora::LayerConfig;
use crate::ir::eval::NodeEval;
use crate::ir::{GloraLinearAttrs, GradOp, Node, Op, Tensor};

use super::{Backend, ExecError};
pub use value::CpuValue;
use value::{OpError, OpResult, bail};

/// Computes on the host CPU with candle-core tensors and rayon.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// What the CPU kernels run on this machine, for benches and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuKernels {
    /// The vector level the loops use: `AVX-512`, `AVX2` or `SSE2`.
    pub level: &'static str,
    /// Whether `GLORA_SIMD` lowered the level below what the CPU has.
    pub capped: bool,
    /// Which implementation runs the f32 matrix products.
    pub products: &'static str,
    /// The vector width the products use: the `gemm` crate picks its own kernels
    /// from the CPU's features whatever the cap.
    pub product_bits: usize,
}

/// The level and product kernels chosen at run time ([`simd::SIMD_ENV`] caps them).
pub fn cpu_kernels() -> CpuKernels {
    let ours = sgemm::enabled();
    CpuKernels {
        level: simd::level().name(),
        capped: simd::capped(),
        products: if ours {
            "glora packed 6×16 AVX2+FMA kernel (thin products: the gemm crate)"
        } else {
            "gemm crate (its widest kernels for this CPU)"
        },
        product_bits: if ours {
            simd::Level::Avx2.bits()
        } else {
            simd::detect().bits()
        },
    }
}

pub use simd::SIMD_ENV;

impl Backend for CpuBackend {
    type Value = CpuValue;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, t: &Tensor) -> Result<CpuValue, ExecError> {
        CpuValue::from_host(t).map_err(|e| ExecError::Graph(format!("cpu upload: {}", e.0)))
    }

    fn download(&self, v: &CpuValue) -> Result<Tensor, ExecError> {
        v.to_host()
            .map_err(|e| ExecError::Graph(format!("cpu download: {}", e.0)))
    }

    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&CpuValue>],
    ) -> Result<Vec<CpuValue>, ExecError> {
        alloc::retain_freed_memory();
        run(node, inputs).map_err(|e| ExecError::node(node, e.0))
    }

    fn run_glora_linear(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CpuValue>],
    ) -> Result<CpuValue, ExecError> {
        alloc::retain_freed_memory();
        run_glora(attrs, config, inputs).map_err(|e| ExecError::node(node, e.0))
    }

    fn run_glora_linear_grad(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CpuValue>],
    ) -> Result<Vec<CpuValue>, ExecError> {
        alloc::retain_freed_memory();
        run_glora_grad(attrs, config, inputs, node.outputs.len() == 9)
            .map_err(|e| ExecError::node(node, e.0))
    }
}

/// The eleven forward slots of a GLoRA layer, by role.
fn glora_inputs<'a>(a: &Args<'a>) -> OpResult<glora::GloraInputs<'a>> {
    let names = ["Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"];
    let mut adapters = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        adapters.push(a.req(3 + i, name)?);
    }
    let Ok(adapters) = <[&CpuValue; 8]>::try_from(adapters) else {
        bail!("internal: expected eight adapter inputs");
    };
    Ok(glora::GloraInputs {
        x: a.req(0, "x")?,
        w0: a.req(1, "W0")?,
        b0: a.opt(2),
        adapters,
    })
}

fn run_glora(
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    inputs: &[Option<&CpuValue>],
) -> OpResult<CpuValue> {
    let a = Args { slots: inputs };
    glora::glora_linear(attrs, config, &glora_inputs(&a)?)
}

fn run_glora_grad(
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    inputs: &[Option<&CpuValue>],
    input_grad: bool,
) -> OpResult<Vec<CpuValue>> {
    let a = Args { slots: inputs };
    let dy = a.req(11, "dy")?;
    glora_grad::glora_linear_grad(attrs, config, &glora_inputs(&a)?, dy, a.opt(12), input_grad)
}

impl NodeEval for CpuBackend {
    fn eval(&self, node: &Node, inputs: &[Option<Tensor>]) -> anyhow::Result<Vec<Tensor>> {
        let values: Vec<Option<CpuValue>> = inputs
            .iter()
            .map(|t| t.as_ref().map(|t| self.upload(t)).transpose())
            .collect::<Result<_, _>>()?;
        let refs: Vec<Option<&CpuValue>> = values.iter().map(Option::as_ref).collect();
        let outs = self.run_node(node, &refs)?;
        Ok(outs
            .iter()
            .map(|v| self.download(v))
            .collect::<Result<_, _>>()?)
    }
}

/// The input slots of one node.
struct Args<'a> {
    slots: &'a [Option<&'a CpuValue>],
}

impl<'a> Args<'a> {
    fn req(&self, slot: usize, what: &str) -> OpResult<&'a CpuValue> {
        match self.slots.get(slot).copied().flatten() {
            Some(v) => Ok(v),
            None => bail!("missing input {slot} ({what})"),
        }
    }

    fn opt(&self, slot: usize) -> Option<&'a CpuValue> {
        self.slots.get(slot).copied().flatten()
    }
}

fn run(node: &Node, inputs: &[Option<&CpuValue>]) -> OpResult<Vec<CpuValue>> {
    let a = Args { slots: inputs };
    let outputs = node.outputs.len();
    let one = |r: OpResult<CpuValue>| r.map(|v| vec![v]);
    match &node.op {
        Op::Input => bail!("graph inputs are fed by the session, not computed"),
        Op::Const(t) | Op::Param(t) => one(CpuValue::from_host(t)),
        Op::MatMul => one(matmul::matmul(a.req(0, "A")?, a.req(1, "B")?)),
        Op::Gemm(g) => one(matmul::gemm_op(g, a.req(0, "A")?, a.req(1, "B")?, a.opt(2))),
        Op::Conv(c) => one(conv::conv(c, a.req(0, "X")?, a.req(1, "W")?, a.opt(2))),
        Op::ConvTranspose(c) => one(conv::conv_transpose(
            c,
            a.req(0, "X")?,
            a.req(1, "W")?,
            a.opt(2),
        )),
        Op::Binary(op) => one(elementwise::binary(*op, a.req(0, "A")?, a.req(1, "B")?)),
        Op::Unary(op) => one(elementwise::unary(*op, a.req(0, "X")?)),
        Op::Clip => one(elementwise::clip(a.req(0, "input")?, a.opt(1), a.opt(2))),
        Op::Softmax { axis } => one(norm::softmax(a.req(0, "input")?, *axis)),
        Op::LayerNorm { axis, epsilon } => norm::layer_norm(
            a.req(0, "X")?,
            a.req(1, "Scale")?,
            a.opt(2),
            *axis,
            *epsilon,
            outputs,
        ),
        Op::Gelu { approximate } => one(norm::gelu(a.req(0, "X")?, *approximate)),
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => one(reduce::reduce(
            a.req(0, "data")?,
            *op,
            axes.as_deref(),
            *keepdims,
            *noop_with_empty_axes,
        )),
        Op::Reshape { allowzero } => one(shape_ops::reshape(
            a.req(0, "data")?,
            a.req(1, "shape")?,
            *allowzero,
        )),
        Op::Transpose { perm } => one(shape_ops::transpose(a.req(0, "data")?, perm.as_deref())),
        Op::Concat { axis } => {
            let xs: Vec<&CpuValue> = (0..node.num_inputs)
                .map(|i| a.req(i, "inputs"))
                .collect::<OpResult<_>>()?;
            one(shape_ops::concat(&xs, *axis))
        }
        Op::Split { axis, sizes } => {
            shape_ops::split(a.req(0, "input")?, *axis, sizes.as_deref(), outputs)
        }
        Op::Gather { axis } => one(shape_ops::gather(
            a.req(0, "data")?,
            a.req(1, "indices")?,
            *axis,
        )),
        Op::Slice => one(shape_ops::slice(
            a.req(0, "data")?,
            a.req(1, "starts")?,
            a.req(2, "ends")?,
            a.opt(3),
            a.opt(4),
        )),
        Op::Squeeze { axes } => one(shape_ops::squeeze(a.req(0, "data")?, axes.as_deref())),
        Op::Unsqueeze { axes } => one(shape_ops::unsqueeze(a.req(0, "data")?, axes)),
        Op::Flatten { axis } => one(shape_ops::flatten(a.req(0, "input")?, *axis)),
        Op::Shape { start, end } => one(shape_ops::shape(a.req(0, "data")?, *start, *end)),
        Op::Cast { to } => one(elementwise::cast(a.req(0, "input")?, *to)),
        Op::Where => one(elementwise::where_(
            a.req(0, "condition")?,
            a.req(1, "X")?,
            a.req(2, "Y")?,
        )),
        Op::Expand => one(shape_ops::expand(a.req(0, "input")?, a.req(1, "shape")?)),
        Op::ConstantOfShape { value } => {
            one(shape_ops::constant_of_shape(a.req(0, "input")?, value))
        }
        Op::Identity => one(Ok(a.req(0, "input")?.clone())),
        Op::Range => one(shape_ops::range(
            a.req(0, "start")?,
            a.req(1, "limit")?,
            a.req(2, "delta")?,
        )),
        Op::BatchNorm { epsilon } => {
            if outputs != 1 {
                bail!("training mode (more than one output) is not supported");
            }
            one(norm::batch_norm(
                a.req(0, "X")?,
                a.req(1, "scale")?,
                a.req(2, "B")?,
                a.req(3, "input_mean")?,
                a.req(4, "input_var")?,
                *epsilon,
            ))
        }
        Op::GloraLinear(g) | Op::Grad(GradOp::GloraLinear(g)) => bail!(
            "GLoRA layer '{}' runs only in a session that holds its config",
            g.layer
        ),
        Op::Grad(g) => grad::run(g, &a, outputs),
        Op::Resize(r) => one(resize::resize(
            r,
            a.req(0, "X")?,
            a.opt(1),
            a.opt(2),
            a.opt(3),
        )),
    }
}

/// A possibly negative axis of a rank-`rank` tensor as an index.
pub(crate) fn axis_index(axis: i64, rank: usize) -> OpResult<usize> {
    crate::exec::shapes::axis_index(axis, rank).map_err(OpError)
}

/// `v` with its axes reordered (a view, nothing is copied).
pub(crate) fn permute_value(v: &CpuValue, perm: &[usize]) -> OpResult<CpuValue> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(v.clone());
    }
    let t = v.tensor().permute(perm.to_vec()).map_err(OpError::from)?;
    CpuValue::from_candle(t, v.dtype())
}
