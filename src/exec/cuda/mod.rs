//! The CUDA backend: values live in GPU memory ([`CudaValue`]), f32 ops run as
//! our own kernels (`kernels/*.cu`, compiled by NVRTC at first use) and cuBLAS
//! products on one stream per backend, and integer shape work and ops without a
//! kernel run on the CPU backend through `fallback.rs`. cudarc loads the driver,
//! NVRTC and cuBLAS at run time, so the crate builds and runs its CPU paths on
//! machines without CUDA; [`CudaBackend::new`] reports a missing library or device
//! as an error, never a panic. [`CudaBackend::run_node`] dispatches on the op, one
//! file per op family, and turns every failure into an [`ExecError`] naming the
//! node and op.

mod adamw;
mod blas;
mod compile;
mod conv;
mod copy;
mod device;
mod elementwise;
mod fallback;
mod glora;
mod glora_grad;
mod grad;
mod kernels;
mod launch;
mod layout;
mod loss;
mod matmul;
mod memory;
mod norm;
mod pool;
mod reduce;
mod value;

use std::sync::Arc;

use crate::exec::shapes::GLORA_ADAPTER_NAMES;
use crate::glora::LayerConfig;
use crate::ir::{BinaryOp, DType, GloraLinearAttrs, GradOp, Node, Op, Tensor};

use super::{Backend, ExecError};

pub use adamw::{AdamWHyper, AdamWSlot};
pub use compile::{compile_kernel, compile_kernel_with_log, kernel_sources};
pub use device::{CudaError, CudaOptions, probe};
pub use value::CudaValue;

use device::Device;

/// Computes on one NVIDIA GPU. Cloning is cheap and shares the device, its stream,
/// its memory pool and its compiled kernels.
#[derive(Clone)]
pub struct CudaBackend {
    dev: Arc<Device>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({})", self.dev.describe())
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal`. Fails with a one-line error when the driver, NVRTC or
    /// cuBLAS cannot be loaded or the device does not exist.
    pub fn new(ordinal: usize, opts: CudaOptions) -> Result<CudaBackend, CudaError> {
        Ok(CudaBackend {
            dev: Arc::new(Device::new(ordinal, &opts)?),
        })
    }

    /// "NVIDIA H200 (sm_90, 139.8 GiB)".
    pub fn describe(&self) -> String {
        self.dev.describe()
    }

    /// Waits until the GPU has finished everything enqueued so far.
    pub fn synchronize(&self) -> Result<(), ExecError> {
        self.dev
            .bind()
            .and_then(|_| self.dev.synchronize())
            .map_err(ExecError::Graph)
    }

    /// One fused AdamW update over all given tensors (one launch for all of them):
    /// `param -= lr·wd·param`, the moments, and bias correction with each slot's
    /// own step count (already incremented by the caller); exactly
    /// `src/train/optim.rs`'s math.
    pub fn adamw_step(
        &self,
        slots: &mut [AdamWSlot<'_>],
        hyper: &AdamWHyper,
    ) -> Result<(), ExecError> {
        self.dev
            .bind()
            .and_then(|_| adamw::adamw_step(&self.dev, slots, hyper))
            .map_err(|e| ExecError::Graph(format!("AdamW: {e}")))
    }

    /// A value of zeros with the type and shape of `v`.
    pub fn zeros_like(&self, v: &CudaValue) -> Result<CudaValue, ExecError> {
        self.dev
            .bind()
            .and_then(|_| self.dev.zeros(v.dtype(), v.dims()))
            .map_err(|e| ExecError::Graph(format!("zeros: {e}")))
    }

    /// For each value, the index of its first NaN or infinite element (`None` when
    /// all are finite, or for non-f32 values). Waits for the GPU once.
    pub fn first_non_finite(&self, values: &[&CudaValue]) -> Result<Vec<Option<usize>>, ExecError> {
        self.dev
            .bind()
            .and_then(|_| reduce::first_non_finite(&self.dev, values))
            .map_err(|e| ExecError::Graph(format!("checking for non-finite values: {e}")))
    }

    /// Bytes of GPU memory held by live values and by the allocation cache.
    pub fn memory_usage(&self) -> (usize, usize) {
        self.dev.pool.usage()
    }

    /// Frees the cached (unused) GPU memory.
    pub fn release_cached_memory(&self) -> Result<(), ExecError> {
        self.dev
            .bind()
            .and_then(|_| self.dev.pool.release_cached())
            .map_err(ExecError::Graph)
    }

    fn finish<T>(&self, node: &Node, r: Result<T, ExecError>) -> Result<T, ExecError> {
        let v = r?;
        if self.dev.sync_each {
            self.dev
                .synchronize()
                .map_err(|e| ExecError::node(node, e))?;
        }
        Ok(v)
    }
}

impl Backend for CudaBackend {
    type Value = CudaValue;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, t: &Tensor) -> Result<CudaValue, ExecError> {
        self.dev
            .bind()
            .and_then(|_| self.dev.upload(t))
            .map_err(|e| ExecError::Graph(format!("cuda upload: {e}")))
    }

    fn download(&self, v: &CudaValue) -> Result<Tensor, ExecError> {
        self.dev
            .bind()
            .and_then(|_| self.dev.download(v))
            .map_err(|e| ExecError::Graph(format!("cuda download: {e}")))
    }

    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&CudaValue>],
    ) -> Result<Vec<CudaValue>, ExecError> {
        self.dev.bind().map_err(|e| ExecError::node(node, e))?;
        let r = run(&self.dev, node, inputs);
        self.finish(node, r)
    }

    fn run_glora_linear(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CudaValue>],
    ) -> Result<CudaValue, ExecError> {
        self.dev.bind().map_err(|e| ExecError::node(node, e))?;
        let a = Args { slots: inputs };
        let r = glora_inputs(&a)
            .and_then(|ins| glora::glora_linear(&self.dev, attrs, config, &ins))
            .map_err(|e| ExecError::node(node, e));
        self.finish(node, r)
    }

    fn run_glora_linear_grad(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&CudaValue>],
    ) -> Result<Vec<CudaValue>, ExecError> {
        self.dev.bind().map_err(|e| ExecError::node(node, e))?;
        let a = Args { slots: inputs };
        let r = glora_inputs(&a)
            .and_then(|ins| {
                let dy = a.req(11, "dy")?;
                glora_grad::glora_linear_grad(
                    &self.dev,
                    attrs,
                    config,
                    &ins,
                    dy,
                    node.outputs.len() == 9,
                )
            })
            .map_err(|e| ExecError::node(node, e));
        self.finish(node, r)
    }
}

/// The input slots of one node.
pub(crate) struct Args<'a> {
    slots: &'a [Option<&'a CudaValue>],
}

impl<'a> Args<'a> {
    fn req(&self, slot: usize, what: &str) -> Result<&'a CudaValue, String> {
        self.slots
            .get(slot)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input {slot} ({what})"))
    }

    fn opt(&self, slot: usize) -> Option<&'a CudaValue> {
        self.slots.get(slot).copied().flatten()
    }
}

/// The eleven forward slots of a GLoRA layer, by role.
fn glora_inputs<'a>(a: &Args<'a>) -> Result<glora::GloraInputs<'a>, String> {
    let mut adapters = Vec::with_capacity(8);
    for (i, name) in GLORA_ADAPTER_NAMES.iter().enumerate() {
        adapters.push(a.req(3 + i, name)?);
    }
    let adapters: [&CudaValue; 8] = adapters
        .try_into()
        .map_err(|_| "internal: expected eight adapter inputs".to_string())?;
    Ok(glora::GloraInputs {
        x: a.req(0, "x")?,
        w0: a.req(1, "W0")?,
        b0: a.opt(2),
        adapters,
    })
}

fn is_f32(vs: &[&CudaValue]) -> bool {
    vs.iter().all(|v| v.dtype() == DType::F32)
}

/// Computes a node: on a kernel when its inputs have one, on the host otherwise.
fn run(
    dev: &Device,
    node: &Node,
    inputs: &[Option<&CudaValue>],
) -> Result<Vec<CudaValue>, ExecError> {
    match on_gpu(dev, node, inputs) {
        Ok(Some(outs)) => Ok(outs),
        Ok(None) => fallback::run(dev, node, inputs),
        Err(e) => Err(ExecError::node(node, e)),
    }
}

/// The node's outputs from GPU kernels, or `None` when it belongs on the host.
fn on_gpu(
    dev: &Device,
    node: &Node,
    inputs: &[Option<&CudaValue>],
) -> Result<Option<Vec<CudaValue>>, String> {
    let a = Args { slots: inputs };
    let outputs = node.outputs.len();
    let one = |v: CudaValue| Ok(Some(vec![v]));
    match &node.op {
        Op::Input => Err("graph inputs are fed by the session, not computed".into()),
        Op::Const(t) | Op::Param(t) => one(dev.upload(t)?),
        Op::MatMul => {
            let (x, y) = (a.req(0, "A")?, a.req(1, "B")?);
            if !is_f32(&[x, y]) {
                return Ok(None);
            }
            one(matmul::matmul(dev, x, y)?)
        }
        Op::Gemm(g) => {
            let (x, y, c) = (a.req(0, "A")?, a.req(1, "B")?, a.opt(2));
            if !is_f32(&[x, y]) || c.is_some_and(|c| c.dtype() != DType::F32) {
                return Ok(None);
            }
            one(matmul::gemm(dev, g, x, y, c)?)
        }
        Op::Conv(c) => {
            let (x, w, b) = (a.req(0, "X")?, a.req(1, "W")?, a.opt(2));
            if !conv::supported(c, x, w, b) {
                return Ok(None);
            }
            one(conv::conv(dev, c, x, w, b)?)
        }
        Op::Binary(op) => {
            let (x, y) = (a.req(0, "A")?, a.req(1, "B")?);
            if *op == BinaryOp::Equal {
                return Ok(None);
            }
            let exponent_ok = *op == BinaryOp::Pow && matches!(y.dtype(), DType::I64 | DType::I32);
            if x.dtype() != DType::F32 || !(y.dtype() == DType::F32 || exponent_ok) {
                return Ok(None);
            }
            one(elementwise::binary(dev, *op, x, y)?)
        }
        Op::Unary(op) => {
            let x = a.req(0, "X")?;
            if !is_f32(&[x]) {
                return Ok(None);
            }
            one(elementwise::unary(dev, *op, x)?)
        }
        Op::Clip => {
            let (x, lo, hi) = (a.req(0, "input")?, a.opt(1), a.opt(2));
            if !is_f32(&[x])
                || [lo, hi]
                    .into_iter()
                    .flatten()
                    .any(|b| b.dtype() != DType::F32)
            {
                return Ok(None);
            }
            one(elementwise::clip(dev, x, lo, hi)?)
        }
        Op::Softmax { axis } => {
            let x = a.req(0, "input")?;
            if !is_f32(&[x]) {
                return Ok(None);
            }
            one(norm::softmax(dev, x, *axis)?)
        }
        Op::LayerNorm { axis, epsilon } => {
            let (x, scale, bias) = (a.req(0, "X")?, a.req(1, "Scale")?, a.opt(2));
            if !is_f32(&[x, scale]) || bias.is_some_and(|b| b.dtype() != DType::F32) {
                return Ok(None);
            }
            norm::layer_norm(dev, x, scale, bias, *axis, *epsilon, outputs).map(Some)
        }
        Op::Gelu { approximate } => {
            let x = a.req(0, "X")?;
            if !is_f32(&[x]) {
                return Ok(None);
            }
            one(elementwise::gelu(dev, x, *approximate)?)
        }
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = a.req(0, "data")?;
            if !is_f32(&[x]) {
                return Ok(None);
            }
            one(reduce::reduce(
                dev,
                x,
                *op,
                axes.as_deref(),
                *keepdims,
                *noop_with_empty_axes,
            )?)
        }
        Op::Reshape { allowzero } => {
            let x = a.req(0, "data")?;
            one(copy::reshape(dev, x, a.req(1, "shape")?, *allowzero)?)
        }
        Op::Flatten { axis } => one(copy::flatten(a.req(0, "input")?, *axis)?),
        Op::Squeeze { axes } => one(copy::squeeze(a.req(0, "data")?, axes.as_deref())?),
        Op::Unsqueeze { axes } => one(copy::unsqueeze(a.req(0, "data")?, axes)?),
        Op::Identity => one(a.req(0, "input")?.clone()),
        Op::Transpose { perm } => {
            let x = a.req(0, "data")?;
            if !copy::movable(x.dtype()) {
                return Ok(None);
            }
            one(copy::transpose(dev, x, perm.as_deref())?)
        }
        Op::Concat { axis } => {
            let xs: Vec<&CudaValue> = (0..node.num_inputs)
                .map(|i| a.req(i, "inputs"))
                .collect::<Result<_, _>>()?;
            if !xs.iter().all(|x| copy::movable(x.dtype())) {
                return Ok(None);
            }
            one(copy::concat(dev, &xs, *axis)?)
        }
        Op::Split { axis, sizes } => {
            let x = a.req(0, "input")?;
            if !copy::movable(x.dtype()) {
                return Ok(None);
            }
            copy::split(dev, x, *axis, sizes.as_deref(), outputs).map(Some)
        }
        Op::Gather { axis } => {
            let x = a.req(0, "data")?;
            if !copy::movable(x.dtype()) {
                return Ok(None);
            }
            one(copy::gather(dev, x, a.req(1, "indices")?, *axis)?)
        }
        Op::Slice => {
            let x = a.req(0, "data")?;
            if !copy::movable(x.dtype()) {
                return Ok(None);
            }
            one(copy::slice(
                dev,
                x,
                a.req(1, "starts")?,
                a.req(2, "ends")?,
                a.opt(3),
                a.opt(4),
            )?)
        }
        Op::Expand => {
            let x = a.req(0, "input")?;
            if !copy::movable(x.dtype()) {
                return Ok(None);
            }
            one(copy::expand(dev, x, a.req(1, "shape")?)?)
        }
        Op::Where => {
            let (c, x, y) = (a.req(0, "condition")?, a.req(1, "X")?, a.req(2, "Y")?);
            if c.dtype() != DType::Bool || !copy::movable(x.dtype()) || x.dtype() != y.dtype() {
                return Ok(None);
            }
            one(elementwise::where_(dev, c, x, y)?)
        }
        Op::Cast { to } => {
            let x = a.req(0, "input")?;
            if !elementwise::cast_supported(x.dtype(), *to) {
                return Ok(None);
            }
            one(elementwise::cast(dev, x, *to)?)
        }
        Op::Shape { start, end } => {
            one(dev.upload(&shape_of(a.req(0, "data")?.dims(), *start, *end))?)
        }
        Op::GloraLinear(g) | Op::Grad(GradOp::GloraLinear(g)) => Err(format!(
            "GLoRA layer '{}' runs only in a session that holds its config",
            g.layer
        )),
        Op::Grad(g) => grad::run(dev, g, &a, outputs),
        Op::ConvTranspose(_)
        | Op::ConstantOfShape { .. }
        | Op::Range
        | Op::BatchNorm { .. }
        | Op::Resize(_) => Ok(None),
    }
}

/// The Shape op needs only the dims, never the data.
fn shape_of(dims: &[usize], start: i64, end: Option<i64>) -> Tensor {
    let r = dims.len() as i64;
    let clampi = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
    let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
    let dims: Vec<i64> = if s < e {
        dims[s..e].iter().map(|&d| d as i64).collect()
    } else {
        Vec::new()
    };
    Tensor::vec_i64(dims)
}

#[cfg(test)]
mod tests;
