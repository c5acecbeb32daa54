//! The forward of a GLoRA-adapted linear layer on the CPU, for the config the
//! session holds for it (glora-spec §6, compute notes).
//!
//! The base product `x·W0ᵀ` goes through the same MatMul or Gemm kernel the plain
//! layer uses, so that a layer whose adapter reads only zeros reproduces the base
//! layer bit for bit. Each term then costs only what its option needs: A and B
//! vectors and constants act on activations, B LoRA is two thin products through
//! the factors, the bias terms `b0 + b0⊙D + E + W0·C` form one `d_out` vector per
//! call, and only A LoRA builds a full-size matrix, `W0⊙(Ad·Au)`. Nothing is
//! computed for a `none` term. Inputs are the node's eleven slots (x, W0, b0?, Ad,
//! Au, Bd, Bu, Cd, Cu, D, E); the output is `[..., d_out]`.

use rayon::prelude::*;

use crate::exec::shapes::{GloraOperands, check_glora_operands};
use crate::glora::{AbOption, COption, DeOption, LayerConfig};
use crate::ir::{DType, GemmAttrs, GloraLinearAttrs, WeightLayout};

use super::matmul::{self, MatRef, gemm_into};
use super::value::{CpuValue, OpError, OpResult, bail};

/// The eleven input values of a GLoRA layer, by role.
pub(crate) struct GloraInputs<'a> {
    pub x: &'a CpuValue,
    pub w0: &'a CpuValue,
    pub b0: Option<&'a CpuValue>,
    /// Ad, Au, Bd, Bu, Cd, Cu, D, E.
    pub adapters: [&'a CpuValue; 8],
}

/// The adapter tensors as contiguous f32 rows, read once per call.
pub(crate) struct Adapters {
    pub ad: Vec<f32>,
    pub au: Vec<f32>,
    pub bd: Vec<f32>,
    pub bu: Vec<f32>,
    pub cd: Vec<f32>,
    pub cu: Vec<f32>,
    pub d: Vec<f32>,
    pub e: Vec<f32>,
    /// Stored rank R: the row stride of the down factors.
    pub rank: usize,
}

/// The layer's shapes, used to index the flat buffers.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub d_in: usize,
    pub d_out: usize,
    pub layout: WeightLayout,
}

pub(crate) fn check_f32(what: &str, v: &CpuValue) -> OpResult<()> {
    if v.dtype() != DType::F32 {
        bail!("{what} is {}; GLoRA layers run in f32 only", v.dtype());
    }
    Ok(())
}

/// Checks types, shapes, bias presence and the ranks the config reads.
pub(crate) fn check_inputs(
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> OpResult<()> {
    let operands = GloraOperands::of_values(ins.x, ins.w0, ins.b0, ins.adapters, |v| v.operand());
    check_glora_operands(a, config, &operands).map_err(OpError)
}

pub(crate) fn adapters(ins: &GloraInputs, rank: usize) -> OpResult<Adapters> {
    let [ad, au, bd, bu, cd, cu, d, e] = ins.adapters.map(|v| v.contiguous_vec::<f32>());
    Ok(Adapters {
        ad: ad?,
        au: au?,
        bd: bd?,
        bu: bu?,
        cd: cd?,
        cu: cu?,
        d: d?,
        e: e?,
        rank,
    })
}

/// C as a `d_in` vector: `Cd[:, :r]·Cu[:r]` or `Cd[:, 0]`.
fn prompt_vector(option: COption, ad: &Adapters, d_in: usize) -> Option<Vec<f32>> {
    let stride = ad.rank;
    match option {
        COption::Lora(r) => Some(
            (0..d_in)
                .map(|j| {
                    let row = &ad.cd[j * stride..j * stride + r];
                    row.iter().zip(&ad.cu).map(|(c, u)| c * u).sum()
                })
                .collect(),
        ),
        COption::Vector => Some((0..d_in).map(|j| ad.cd[j * stride]).collect()),
        COption::None => None,
    }
}

/// The value of a D or E option at output `i`.
fn bias_term(option: DeOption, values: &[f32]) -> Option<impl Fn(usize) -> f32 + '_> {
    let scalar = values.first().copied().unwrap_or(0.0);
    match option {
        DeOption::None => None,
        DeOption::Vector | DeOption::Constant => Some(move |i: usize| {
            if option == DeOption::Vector {
                values[i]
            } else {
                scalar
            }
        }),
    }
}

/// `b0 + b0⊙D + E + W0·C` as one `d_out` vector, or `None` when the layer has no
/// bias and the config reads neither E nor C. D is skipped without a bias.
pub(crate) fn bias_vector(
    config: &LayerConfig,
    dims: Dims,
    w0: &[f32],
    b0: Option<Vec<f32>>,
    ad: &Adapters,
) -> OpResult<Option<Vec<f32>>> {
    let prompt = prompt_vector(config.c, ad, dims.d_in);
    let e = bias_term(config.e, &ad.e);
    if b0.is_none() && e.is_none() && prompt.is_none() {
        return Ok(None);
    }
    let mut bias = b0.clone().unwrap_or_else(|| vec![0.0; dims.d_out]);
    if let (Some(b0), Some(d)) = (&b0, bias_term(config.d, &ad.d)) {
        for (i, b) in bias.iter_mut().enumerate() {
            *b += b0[i] * d(i);
        }
    }
    if let Some(e) = e {
        for (i, b) in bias.iter_mut().enumerate() {
            *b += e(i);
        }
    }
    if let Some(c) = prompt {
        // W0·c as a matrix-vector product read in W0's stored layout.
        let w = match dims.layout {
            WeightLayout::OutIn => MatRef::row_major(w0, dims.d_in),
            WeightLayout::InOut => MatRef {
                data: w0,
                offset: 0,
                rs: 1,
                cs: dims.d_out as isize,
            },
        };
        let mut dot = vec![0f32; dims.d_out];
        gemm_into(
            &mut dot,
            (dims.d_out, 1, dims.d_in),
            w,
            MatRef::row_major(&c, 1),
            1.0,
            None,
            false,
        )?;
        bias.iter_mut().zip(&dot).for_each(|(b, d)| *b += d);
    }
    Ok(Some(bias))
}

/// The per-output factor `1 + a` of an A vector.
fn a_scale(ad: &Adapters, d_out: usize) -> Vec<f32> {
    (0..d_out).map(|i| 1.0 + ad.ad[i * ad.rank]).collect()
}

/// `x·W0` for an `[d_in, d_out]` weight, through the MatMul kernel, with the A
/// vector or constant applied to the product.
fn base_product_in_out(
    x: &CpuValue,
    w0: &CpuValue,
    config: &LayerConfig,
    ad: &Adapters,
    d_out: usize,
) -> OpResult<Vec<f32>> {
    let (mut y, _) = matmul::matmul_f32(x, w0)?;
    match config.a {
        AbOption::Vector => {
            let scale = a_scale(ad, d_out);
            for row in y.chunks_exact_mut(d_out) {
                row.iter_mut().zip(&scale).for_each(|(y, s)| *y *= s);
            }
        }
        AbOption::Constant => {
            let s = 1.0 + ad.ad[0];
            y.iter_mut().for_each(|y| *y *= s);
        }
        AbOption::Lora(_) | AbOption::None => {}
    }
    Ok(y)
}

/// `bias + x·W0ᵀ` for a `[d_out, d_in]` weight, through the Gemm kernel as the base
/// layer runs it: an A constant becomes Gemm's alpha, an A vector scales W0's rows.
fn base_product_out_in(
    x_rows: &CpuValue,
    w0: &CpuValue,
    w0_values: &[f32],
    bias: Option<&[f32]>,
    config: &LayerConfig,
    ad: &Adapters,
    dims: Dims,
) -> OpResult<Vec<f32>> {
    let mut attrs = GemmAttrs {
        trans_b: true,
        ..GemmAttrs::default()
    };
    let scaled_w0;
    let weight = match config.a {
        AbOption::Vector => {
            let scale = a_scale(ad, dims.d_out);
            let mut w = w0_values.to_vec();
            for (row, s) in w.chunks_exact_mut(dims.d_in).zip(&scale) {
                row.iter_mut().for_each(|w| *w *= s);
            }
            scaled_w0 = CpuValue::from_f32(w, &[dims.d_out, dims.d_in], DType::F32)?;
            &scaled_w0
        }
        AbOption::Constant => {
            attrs.alpha = 1.0 + ad.ad[0];
            w0
        }
        AbOption::Lora(_) | AbOption::None => w0,
    };
    let c = bias
        .map(|b| CpuValue::from_f32(b.to_vec(), &[dims.d_out], DType::F32))
        .transpose()?;
    matmul::gemm_f32(
        &attrs,
        x_rows,
        weight,
        c.as_ref(),
        (x_rows.dims()[0], dims.d_out, dims.d_in),
    )
}

/// `W0 + W0⊙(Ad[:, :r]·Au[:r, :])` in W0's stored layout: the low-rank product is
/// built directly in that layout (as `Auᵀ·Adᵀ` for `[d_in, d_out]`), so the layer
/// then costs one product, as the base layer does.
pub(crate) fn a_lora_weight(w0: &[f32], ad: &Adapters, r: usize, dims: Dims) -> OpResult<Vec<f32>> {
    let Dims { d_in, d_out, .. } = dims;
    let mut w = vec![0f32; d_out * d_in];
    let (rows, cols, lhs, rhs) = match dims.layout {
        WeightLayout::OutIn => (
            d_out,
            d_in,
            MatRef::row_major(&ad.ad, ad.rank),
            MatRef::row_major(&ad.au, d_in),
        ),
        WeightLayout::InOut => (
            d_in,
            d_out,
            MatRef {
                data: &ad.au,
                offset: 0,
                rs: 1,
                cs: d_in as isize,
            },
            MatRef {
                data: &ad.ad,
                offset: 0,
                rs: 1,
                cs: ad.rank as isize,
            },
        ),
    };
    gemm_into(&mut w, (rows, cols, r), lhs, rhs, 1.0, None, true)?;
    // W0 + W0⊙A, as the merge writes it, so that a zero A leaves W0 bit for bit.
    w.iter_mut().zip(w0).for_each(|(a, &w0)| *a = w0 + w0 * *a);
    Ok(w)
}

/// `y += (x·Bu[:r, :]ᵀ)·Bd[:, :r]ᵀ`.
fn add_b_lora(y: &mut [f32], x: &[f32], ad: &Adapters, r: usize, dims: Dims) -> OpResult<()> {
    let Dims { d_in, d_out, .. } = dims;
    let n = x.len() / d_in;
    let mut hidden = vec![0f32; n * r];
    gemm_into(
        &mut hidden,
        (n, r, d_in),
        MatRef::row_major(x, d_in),
        MatRef {
            data: &ad.bu,
            offset: 0,
            rs: 1,
            cs: d_in as isize,
        },
        1.0,
        None,
        true,
    )?;
    gemm_into(
        y,
        (n, d_out, r),
        MatRef::row_major(&hidden, r),
        MatRef {
            data: &ad.bd,
            offset: 0,
            rs: 1,
            cs: ad.rank as isize,
        },
        1.0,
        Some(1.0),
        true,
    )
}

/// `y += b·Σx` per row, `b` the B vector (`Bd[:, 0]`) or constant (`Bd[0, 0]`).
fn add_b_sum(y: &mut [f32], x: &[f32], option: AbOption, ad: &Adapters, dims: Dims) {
    y.par_chunks_exact_mut(dims.d_out)
        .zip(x.par_chunks_exact(dims.d_in))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(row, xs)| {
            let sum = xs.iter().map(|&v| v as f64).sum::<f64>() as f32;
            for (i, y) in row.iter_mut().enumerate() {
                let b = match option {
                    AbOption::Vector => ad.bd[i * ad.rank],
                    _ => ad.bd[0],
                };
                *y += b * sum;
            }
        });
}

/// Rows of `[n, d_out]` per rayon task in the row-wise passes over a layer's
/// output: enough to amortise a task, few enough to share a batch's rows.
pub(crate) const ROWS_PER_TASK: usize = 64;

/// Runs one GLoRA layer under `config`.
pub(crate) fn glora_linear(
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
) -> OpResult<CpuValue> {
    check_inputs(a, config, ins)?;
    let dims = Dims {
        d_in: a.d_in,
        d_out: a.d_out,
        layout: a.layout,
    };
    let ad = adapters(ins, a.rank)?;
    // W0 is read in place: uploaded weights are contiguous, so no copy is made.
    ins.w0
        .read_f32(|w| forward(a, config, ins, &w.to_contiguous(), dims, &ad))
}

fn forward(
    a: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    w0: &[f32],
    dims: Dims,
    ad: &Adapters,
) -> OpResult<CpuValue> {
    let b0 = ins.b0.map(|b| b.contiguous_vec::<f32>()).transpose()?;
    let bias = bias_vector(config, dims, w0, b0, ad)?;

    let x_dims = ins.x.dims();
    let n: usize = x_dims[..x_dims.len() - 1].iter().product();
    let mut out_dims = x_dims.to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = a.d_out;
    }
    // An A LoRA is folded into the weight, which then goes through the base product.
    let folded;
    let (w0_value, w0, base_config) = match config.a {
        AbOption::Lora(r) => {
            let w = a_lora_weight(w0, ad, r, dims)?;
            folded = CpuValue::from_f32(w, ins.w0.dims(), DType::F32)?;
            let config = LayerConfig {
                a: AbOption::None,
                ..*config
            };
            (&folded, None, config)
        }
        _ => (ins.w0, Some(w0), *config),
    };
    let mut y = match a.layout {
        WeightLayout::InOut => base_product_in_out(ins.x, w0_value, &base_config, ad, a.d_out)?,
        WeightLayout::OutIn => {
            let rows = CpuValue::from_candle(ins.x.tensor().reshape((n, a.d_in))?, DType::F32)?;
            // Only an A vector reads W0's values here, and a folded weight has none.
            let values = w0.unwrap_or(&[]);
            base_product_out_in(
                &rows,
                w0_value,
                values,
                bias.as_deref(),
                &base_config,
                ad,
                dims,
            )?
        }
    };
    if config.b != AbOption::None {
        // x is read in place when contiguous, as it usually is.
        ins.x.read_f32(|xv| {
            let x = xv.to_contiguous();
            match config.b {
                AbOption::Lora(r) => add_b_lora(&mut y, &x, ad, r, dims),
                AbOption::Vector | AbOption::Constant => {
                    add_b_sum(&mut y, &x, config.b, ad, dims);
                    Ok(())
                }
                AbOption::None => Ok(()),
            }
        })?;
    }
    // The MatMul pattern adds its bias after the product, as the base layer's Add does.
    if let (WeightLayout::InOut, Some(bias)) = (a.layout, &bias) {
        y.par_chunks_exact_mut(a.d_out)
            .with_min_len(ROWS_PER_TASK)
            .for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
    }
    CpuValue::from_f32(y, &out_dims, DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;

    fn value(shape: &[usize], v: &[f32]) -> CpuValue {
        CpuValue::from_host(&Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()).unwrap()
    }

    fn attrs(layout: WeightLayout) -> GloraLinearAttrs {
        GloraLinearAttrs {
            layer: "fc".into(),
            d_in: 2,
            d_out: 2,
            rank: 1,
            layout,
            has_bias: true,
        }
    }

    /// W0 = [[1,2],[3,4]], b0 = [0.5,-1], x = [[1,1],[2,0]]; A constant 1, B vector
    /// [1,2], C vector [1,-1], D vector [2,0], E constant 10. Worked by hand:
    /// W0·x = [3,7], [2,6]; ×(1+1) = [6,14], [4,12]; + b·Σx (Σx = 2, 2) = [8,18],
    /// [6,16]; bias = b0 + b0⊙D + E + W0·c = [0.5+1+10-1, -1+0+10-1] = [10.5, 8].
    #[test]
    fn hand_worked_example_in_both_layouts() {
        let config = LayerConfig {
            a: AbOption::Constant,
            b: AbOption::Vector,
            c: COption::Vector,
            d: DeOption::Vector,
            e: DeOption::Constant,
        };
        let x = value(&[2, 2], &[1.0, 1.0, 2.0, 0.0]);
        let b0 = value(&[2], &[0.5, -1.0]);
        let adapters = [
            value(&[2, 1], &[1.0, 0.5]),
            value(&[1, 2], &[1.0, 1.0]),
            value(&[2, 1], &[1.0, 2.0]),
            value(&[1, 2], &[0.0, 0.0]),
            value(&[2, 1], &[1.0, -1.0]),
            value(&[1, 1], &[1.0]),
            value(&[2], &[2.0, 0.0]),
            value(&[2], &[10.0, 20.0]),
        ];
        for (layout, w) in [
            (WeightLayout::OutIn, [1.0, 2.0, 3.0, 4.0]),
            (WeightLayout::InOut, [1.0, 3.0, 2.0, 4.0]),
        ] {
            let w0 = value(&[2, 2], &w);
            let ins = GloraInputs {
                x: &x,
                w0: &w0,
                b0: Some(&b0),
                adapters: adapters.each_ref(),
            };
            let y = glora_linear(&attrs(layout), &config, &ins).unwrap();
            assert_eq!(
                y.to_host().unwrap().as_f32().unwrap(),
                [18.5, 26.0, 16.5, 24.0],
                "{layout:?}"
            );
        }
    }

    #[test]
    fn lora_ranks_above_the_stored_rank_and_non_f32_inputs_are_errors() {
        let x = value(&[1, 2], &[1.0, 1.0]);
        let w0 = value(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b0 = value(&[2], &[0.0, 0.0]);
        let zeros = [
            value(&[2, 1], &[0.0; 2]),
            value(&[1, 2], &[0.0; 2]),
            value(&[2, 1], &[0.0; 2]),
            value(&[1, 2], &[0.0; 2]),
            value(&[2, 1], &[0.0; 2]),
            value(&[1, 1], &[0.0]),
            value(&[2], &[0.0; 2]),
            value(&[2], &[0.0; 2]),
        ];
        let ins = GloraInputs {
            x: &x,
            w0: &w0,
            b0: Some(&b0),
            adapters: zeros.each_ref(),
        };
        let config = LayerConfig {
            b: AbOption::Lora(2),
            ..LayerConfig::NONE
        };
        let err = glora_linear(&attrs(WeightLayout::OutIn), &config, &ins).unwrap_err();
        assert!(
            err.0.contains("rank 2") && err.0.contains("'fc'"),
            "{}",
            err.0
        );

        let half = CpuValue::from_host(&Tensor::zeros(DType::F16, vec![1, 2])).unwrap();
        let ins = GloraInputs { x: &half, ..ins };
        let err = glora_linear(&attrs(WeightLayout::OutIn), &LayerConfig::NONE, &ins).unwrap_err();
        assert!(err.0.contains("f32"), "{}", err.0);
    }
}
