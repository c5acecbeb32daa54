//! The forward of a GLoRA-adapted linear layer on the GPU, for the config the
//! session holds for it (glora-spec §6): `W' = W0 + W0⊙A + B` is composed in one
//! elementwise pass from whatever the A and B options read (nothing is composed
//! when both are `none`, so W0 is used as it is), the bias
//! `b0 + b0⊙D + E + W0·C` is one small kernel (one warp per output), and the layer
//! is then one cuBLAS product that starts from the bias. Inputs are the node's
//! eleven slots (x, W0, b0?, Ad, Au, Bd, Bu, Cd, Cu, D, E); the output is
//! `[..., d_out]`.

use crate::exec::shapes::{GloraOperands, check_glora_operands};
use crate::glora::{AbOption, COption, DeOption, LayerConfig};
use crate::ir::{DType, GloraLinearAttrs, WeightLayout};

use super::blas::Mat;
use super::copy::read_into;
use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::value::CudaValue;

/// The eleven input values of a GLoRA layer, by role.
pub(crate) struct GloraInputs<'a> {
    pub x: &'a CudaValue,
    pub w0: &'a CudaValue,
    pub b0: Option<&'a CudaValue>,
    /// Ad, Au, Bd, Bu, Cd, Cu, D, E.
    pub adapters: [&'a CudaValue; 8],
}

impl GloraInputs<'_> {
    pub fn ad(&self) -> &CudaValue {
        self.adapters[0]
    }
    pub fn au(&self) -> &CudaValue {
        self.adapters[1]
    }
    pub fn bd(&self) -> &CudaValue {
        self.adapters[2]
    }
    pub fn bu(&self) -> &CudaValue {
        self.adapters[3]
    }
    pub fn cd(&self) -> &CudaValue {
        self.adapters[4]
    }
    pub fn cu(&self) -> &CudaValue {
        self.adapters[5]
    }
    pub fn d(&self) -> &CudaValue {
        self.adapters[6]
    }
    pub fn e(&self) -> &CudaValue {
        self.adapters[7]
    }
}

/// Checks types, shapes, bias presence and the ranks the config reads.
pub(crate) fn check_inputs(
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> Result<(), String> {
    let operands = GloraOperands::of_values(ins.x, ins.w0, ins.b0, ins.adapters, |v| v.operand());
    check_glora_operands(a, config, &operands)
}

/// An A or B option as the kernels code it: (mode, rank read).
pub(crate) fn ab_code(o: AbOption) -> (i32, i32) {
    match o {
        AbOption::None => (0, 0),
        AbOption::Lora(r) => (1, r as i32),
        AbOption::Vector => (2, 0),
        AbOption::Constant => (3, 0),
    }
}

pub(crate) fn c_code(o: COption) -> (i32, i32) {
    match o {
        COption::None => (0, 0),
        COption::Lora(r) => (1, r as i32),
        COption::Vector => (2, 0),
    }
}

pub(crate) fn de_code(o: DeOption) -> i32 {
    match o {
        DeOption::None => 0,
        DeOption::Vector => 1,
        DeOption::Constant => 2,
    }
}

pub(crate) fn in_out(a: &GloraLinearAttrs) -> i32 {
    i32::from(a.layout == WeightLayout::InOut)
}

/// `W0 + W0⊙A + B` in W0's stored layout; W0 itself when A and B are `none`.
pub(crate) fn adapted_weight(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> Result<CudaValue, String> {
    if config.a == AbOption::None && config.b == AbOption::None {
        return Ok(ins.w0.clone());
    }
    let w = dev.alloc(DType::F32, ins.w0.dims())?;
    let (am, ar) = ab_code(config.a);
    let (bm, br) = ab_code(config.b);
    dev.launch(
        &kernels::GLORA_WEIGHT,
        Grid::Elems(a.d_out * a.d_in),
        &[
            Arg::Ptr(w.ptr()),
            Arg::Ptr(ins.w0.ptr()),
            Arg::Ptr(ins.ad().ptr()),
            Arg::Ptr(ins.au().ptr()),
            Arg::Ptr(ins.bd().ptr()),
            Arg::Ptr(ins.bu().ptr()),
            len(a.d_out),
            len(a.d_in),
            len(a.rank),
            Arg::I32(in_out(a)),
            Arg::I32(am),
            Arg::I32(ar),
            Arg::I32(bm),
            Arg::I32(br),
        ],
    )?;
    Ok(w)
}

/// `b0 + b0⊙D + E + W0·C` as one `d_out` vector, or `None` when the layer has no
/// bias and the config reads neither E nor C (D is skipped without a bias).
pub(crate) fn bias_vector(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> Result<Option<CudaValue>, String> {
    if ins.b0.is_none() && config.e == DeOption::None && config.c == COption::None {
        return Ok(None);
    }
    let bias = dev.alloc(DType::F32, &[a.d_out])?;
    let (cm, cr) = c_code(config.c);
    dev.launch(
        &kernels::GLORA_BIAS,
        Grid::Warps(a.d_out),
        &[
            Arg::Ptr(bias.ptr()),
            Arg::Ptr(ins.w0.ptr()),
            Arg::Ptr(ins.b0.map_or(0, CudaValue::ptr)),
            Arg::Ptr(ins.cd().ptr()),
            Arg::Ptr(ins.cu().ptr()),
            Arg::Ptr(ins.d().ptr()),
            Arg::Ptr(ins.e().ptr()),
            len(a.d_out),
            len(a.d_in),
            len(a.rank),
            Arg::I32(in_out(a)),
            Arg::I32(i32::from(ins.b0.is_some())),
            Arg::I32(cm),
            Arg::I32(cr),
            Arg::I32(de_code(config.d)),
            Arg::I32(de_code(config.e)),
        ],
    )?;
    Ok(Some(bias))
}

/// W' (stored in W0's layout) as the right operand of `x·W'ᵀ`.
pub(crate) fn weight_operand(a: &GloraLinearAttrs, w: &CudaValue) -> Mat {
    match a.layout {
        WeightLayout::OutIn => Mat::rows(w.ptr(), a.d_in).t(),
        WeightLayout::InOut => Mat::rows(w.ptr(), a.d_out),
    }
}

/// Runs one GLoRA layer under `config`.
pub(crate) fn glora_linear(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> Result<CudaValue, String> {
    check_inputs(a, config, ins)?;
    let n = ins.x.numel() / a.d_in;
    let mut out_dims = ins.x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = a.d_out;
    }
    let out = dev.alloc(DType::F32, &out_dims)?;
    if n == 0 {
        return Ok(out);
    }
    let w = adapted_weight(dev, a, config, ins)?;
    let beta = match bias_vector(dev, a, config, ins)? {
        Some(bias) => {
            read_into(dev, &out, &bias, &[n, a.d_out], &[0, 1], 0)?;
            1.0
        }
        None => 0.0,
    };
    dev.gemm(
        (n, a.d_out, a.d_in),
        1.0,
        Mat::rows(ins.x.ptr(), a.d_in),
        weight_operand(a, &w),
        beta,
        Mat::rows(out.ptr(), a.d_out),
        1,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option codes the kernels document in their header comment.
    #[test]
    fn option_codes_match_the_kernel_header() {
        let src = crate::exec::cuda::kernel_sources()
            .iter()
            .find(|(n, _)| *n == "glora.cu")
            .map(|(_, s)| *s)
            .unwrap();
        assert!(src.contains("A and B: 0 none, 1 LoRA of rank r, 2 vector"));
        assert!(src.contains("3 constant (its [0, 0] element). C: 0 none, 1 LoRA of rank r,"));
        assert!(src.contains("2 vector. D and E: 0 none, 1 vector, 2 constant."));
        assert_eq!(ab_code(AbOption::None), (0, 0));
        assert_eq!(ab_code(AbOption::Lora(3)), (1, 3));
        assert_eq!(ab_code(AbOption::Vector).0, 2);
        assert_eq!(ab_code(AbOption::Constant).0, 3);
        assert_eq!(c_code(COption::Lora(2)), (1, 2));
        assert_eq!(c_code(COption::Vector).0, 2);
        assert_eq!(de_code(DeOption::Vector), 1);
        assert_eq!(de_code(DeOption::Constant), 2);
    }
}
