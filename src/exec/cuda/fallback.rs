//! Ops the GPU backend hands to the CPU backend: integer and bool shape work
//! (Shape arithmetic, Range, ConstantOfShape, Equal, casts between integer types,
//! …) and ops without a kernel here (Resize, BatchNorm, ConvTranspose, grouped
//! Conv, f16/bf16 arithmetic). The inputs come down (from their host mirrors when
//! they have one, which shape tensors usually do), the CPU backend's `run_node`
//! computes the node, and the outputs go up again, keeping host mirrors so that the
//! next shape op needs no download.

use crate::exec::{Backend, CpuBackend, CpuValue, ExecError};
use crate::ir::Node;

use super::device::Device;
use super::value::CudaValue;

pub(crate) fn run(
    dev: &Device,
    node: &Node,
    inputs: &[Option<&CudaValue>],
) -> Result<Vec<CudaValue>, ExecError> {
    let cpu = CpuBackend;
    let on_host: Vec<Option<CpuValue>> = inputs
        .iter()
        .enumerate()
        .map(|(slot, v)| {
            v.map(|v| {
                let t = dev
                    .download(v)
                    .map_err(|e| ExecError::node(node, format!("reading input {slot}: {e}")))?;
                cpu.upload(&t)
            })
            .transpose()
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<Option<&CpuValue>> = on_host.iter().map(Option::as_ref).collect();
    let outs = cpu.run_node(node, &refs)?;
    outs.iter()
        .map(|o| {
            let t = cpu.download(o)?;
            dev.upload(&t)
                .map_err(|e| ExecError::node(node, format!("uploading the result: {e}")))
        })
        .collect()
}
