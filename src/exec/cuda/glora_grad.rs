//! The backward of a GLoRA-adapted linear layer on the GPU, for the config the
//! session holds for it. Inputs are the forward's eleven values and `dy`
//! `[..., d_out]`; outputs the eight adapter gradients in their stored shapes and,
//! when the node has a ninth output, `dx`.
//!
//! With `G = dyᵀ·x` (`[d_out, d_in]`, the gradient of W'), every weight-term
//! gradient is a small product or sum of G: A LoRA reads `M = G⊙W0` (`dAd[:, :r] =
//! M·Au[:r]ᵀ`, `dAu[:r] = Ad[:, :r]ᵀ·M`), an A vector or constant the row sums of M
//! (`Σ_n dy·y0` in another order), B LoRA `G·Bu[:r]ᵀ` and `Bd[:, :r]ᵀ·G`, a B vector
//! or constant the row sums of G. G is formed only when A or B is in use. The bias
//! terms go through the column sums of dy (in double): `dE = db`, `dD = db⊙b0`
//! (only with a base bias), and `dC = W0ᵀ·db` pushed through C's factors. Every
//! stored entry an option does not read is zero (weight sharing), as on the CPU.
//! `dx = dy·W'` with W' composed as in the forward.

use crate::exec::shapes::glora_adapter_shapes;
use crate::glora::{AbOption, COption, DeOption, LayerConfig};
use crate::ir::{DType, GloraLinearAttrs};

use super::blas::Mat;
use super::device::Device;
use super::glora::{GloraInputs, ab_code, adapted_weight, c_code, check_inputs, de_code, in_out};
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::layout::sh;
use super::reduce::{col_sums_f64, row_sums_f64, scratch_f64};
use super::value::CudaValue;

/// dAd, dAu, dBd, dBu, dCd, dCu, dD, dE and, with `input_grad`, dx.
pub(crate) fn glora_linear_grad(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    dy: &CudaValue,
    input_grad: bool,
) -> Result<Vec<CudaValue>, String> {
    check_inputs(a, config, ins)?;
    if dy.dtype() != DType::F32 {
        return Err(format!(
            "dy is {}; GLoRA layers run in f32 only",
            dy.dtype()
        ));
    }
    let mut expected = ins.x.dims().to_vec();
    if let Some(last) = expected.last_mut() {
        *last = a.d_out;
    }
    if dy.dims() != expected.as_slice() {
        return Err(format!(
            "layer '{}': dy is {}, expected {} (x {} with d_out = {})",
            a.layer,
            sh(dy.dims()),
            sh(&expected),
            sh(ins.x.dims()),
            a.d_out
        ));
    }
    let n = ins.x.numel() / a.d_in;
    let grads: Vec<CudaValue> = glora_adapter_shapes(a)
        .iter()
        .map(|s| dev.zeros(DType::F32, s))
        .collect::<Result<_, _>>()?;
    if n > 0 {
        weight_term_grads(dev, a, config, ins, dy, n, &grads)?;
        bias_term_grads(dev, a, config, ins, dy, n, &grads)?;
    }
    let mut outs = grads;
    if input_grad {
        outs.push(input_gradient(dev, a, config, ins, dy, n)?);
    }
    Ok(outs)
}

/// The gradients of A and B from `G = dyᵀ·x`.
fn weight_term_grads(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    dy: &CudaValue,
    n: usize,
    grads: &[CudaValue],
) -> Result<(), String> {
    if config.a == AbOption::None && config.b == AbOption::None {
        return Ok(());
    }
    let (d_in, d_out, rank) = (a.d_in, a.d_out, a.rank);
    let g = dev.alloc(DType::F32, &[d_out, d_in])?;
    dev.gemm(
        (d_out, d_in, n),
        1.0,
        Mat::rows(dy.ptr(), d_out).t(),
        Mat::rows(ins.x.ptr(), d_in),
        0.0,
        Mat::rows(g.ptr(), d_in),
        1,
    )?;
    if config.a != AbOption::None {
        let m = dev.alloc(DType::F32, &[d_out, d_in])?;
        dev.launch(
            &kernels::GLORA_MASK,
            Grid::Elems(d_out * d_in),
            &[
                Arg::Ptr(m.ptr()),
                Arg::Ptr(g.ptr()),
                Arg::Ptr(ins.w0.ptr()),
                len(d_out),
                len(d_in),
                Arg::I32(in_out(a)),
            ],
        )?;
        factor_grads(
            dev,
            config.a,
            &m,
            ins.ad(),
            ins.au(),
            &grads[0],
            &grads[1],
            d_out,
            d_in,
            rank,
        )?;
    }
    if config.b != AbOption::None {
        factor_grads(
            dev,
            config.b,
            &g,
            ins.bd(),
            ins.bu(),
            &grads[2],
            &grads[3],
            d_out,
            d_in,
            rank,
        )?;
    }
    Ok(())
}

/// The gradients of a down/up factor pair whose term has gradient `m`
/// (`[d_out, d_in]`) under `option`.
#[allow(clippy::too_many_arguments)]
fn factor_grads(
    dev: &Device,
    option: AbOption,
    m: &CudaValue,
    down: &CudaValue,
    up: &CudaValue,
    d_down: &CudaValue,
    d_up: &CudaValue,
    d_out: usize,
    d_in: usize,
    rank: usize,
) -> Result<(), String> {
    match option {
        AbOption::Lora(r) => {
            // d_down[:, :r] = m·up[:r]ᵀ, written with row stride `rank`.
            dev.gemm(
                (d_out, r, d_in),
                1.0,
                Mat::rows(m.ptr(), d_in),
                Mat::rows(up.ptr(), d_in).t(),
                0.0,
                Mat::rows(d_down.ptr(), r).ld(rank),
                1,
            )?;
            // d_up[:r] = down[:, :r]ᵀ·m.
            dev.gemm(
                (r, d_in, d_out),
                1.0,
                Mat::rows(down.ptr(), r).ld(rank).t(),
                Mat::rows(m.ptr(), d_in),
                0.0,
                Mat::rows(d_up.ptr(), d_in),
                1,
            )
        }
        AbOption::Vector | AbOption::Constant => {
            let sums = row_sums_f64(dev, m.ptr(), d_out, d_in)?;
            dev.launch(
                &kernels::GLORA_WRITE_VC,
                Grid::Single,
                &[
                    Arg::Ptr(d_down.ptr()),
                    Arg::Ptr(sums.ptr()),
                    len(d_out),
                    len(rank),
                    Arg::I32(ab_code(option).0),
                ],
            )
        }
        AbOption::None => Ok(()),
    }
}

/// The gradients of C, D and E from the column sums of dy.
fn bias_term_grads(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    dy: &CudaValue,
    n: usize,
    grads: &[CudaValue],
) -> Result<(), String> {
    let reads_d = ins.b0.is_some() && config.d != DeOption::None;
    if !reads_d && config.e == DeOption::None && config.c == COption::None {
        return Ok(());
    }
    let (d_in, d_out, rank) = (a.d_in, a.d_out, a.rank);
    let db = col_sums_f64(dev, dy.ptr(), n, d_out)?;
    dev.launch(
        &kernels::GLORA_DE_GRADS,
        Grid::Single,
        &[
            Arg::Ptr(grads[6].ptr()),
            Arg::Ptr(grads[7].ptr()),
            Arg::Ptr(db.ptr()),
            Arg::Ptr(ins.b0.map_or(0, CudaValue::ptr)),
            len(d_out),
            Arg::I32(i32::from(ins.b0.is_some())),
            Arg::I32(de_code(config.d)),
            Arg::I32(de_code(config.e)),
        ],
    )?;
    if config.c == COption::None {
        return Ok(());
    }
    let dc = scratch_f64(dev, d_in)?;
    dev.launch(
        &kernels::GLORA_PROMPT_GRAD,
        Grid::Warps(d_in),
        &[
            Arg::Ptr(dc.ptr()),
            Arg::Ptr(ins.w0.ptr()),
            Arg::Ptr(db.ptr()),
            len(d_out),
            len(d_in),
            Arg::I32(in_out(a)),
        ],
    )?;
    let (cm, cr) = c_code(config.c);
    dev.launch(
        &kernels::GLORA_C_GRADS,
        Grid::Single,
        &[
            Arg::Ptr(grads[4].ptr()),
            Arg::Ptr(grads[5].ptr()),
            Arg::Ptr(dc.ptr()),
            Arg::Ptr(ins.cd().ptr()),
            Arg::Ptr(ins.cu().ptr()),
            len(d_in),
            len(rank),
            Arg::I32(cm),
            Arg::I32(cr),
        ],
    )
}

/// `dx = dy·W'`, W' composed as the forward composes it.
fn input_gradient(
    dev: &Device,
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    dy: &CudaValue,
    n: usize,
) -> Result<CudaValue, String> {
    let dx = dev.alloc(DType::F32, ins.x.dims())?;
    if n == 0 {
        return Ok(dx);
    }
    let w = adapted_weight(dev, a, config, ins)?;
    // W' as the [d_out, d_in] right operand: stored so for OutIn, transposed for InOut.
    let wm = match a.layout {
        crate::ir::WeightLayout::OutIn => Mat::rows(w.ptr(), a.d_in),
        crate::ir::WeightLayout::InOut => Mat::rows(w.ptr(), a.d_out).t(),
    };
    dev.gemm(
        (n, a.d_in, a.d_out),
        1.0,
        Mat::rows(dy.ptr(), a.d_out),
        wm,
        0.0,
        Mat::rows(dx.ptr(), a.d_in),
        1,
    )?;
    Ok(dx)
}
