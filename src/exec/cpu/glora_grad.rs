//! The backward of a GLoRA-adapted linear layer on the CPU, for the config the
//! session holds for it.
//!
//! Inputs are the forward's eleven values (x, W0, b0?, Ad, Au, Bd, Bu, Cd, Cu, D, E)
//! and `dy` of shape `[..., d_out]`; the outputs are the gradients of the eight
//! adapter tensors in their stored shapes and, when asked, `dx` in the shape of x.
//! They go back to the session that runs the training graph.
//!
//! With `y = x·W'ᵀ + b'`, `W' = W0 + W0⊙A + B` and `b' = b0 + b0⊙D + E + W0·C`,
//! every gradient is taken in its cheap form: B LoRA through the thin products
//! `x·Buᵀ` and `dy·Bd`, A vector through the recomputed base output, the bias terms
//! through the column sums of dy. Only A LoRA builds full-size matrices (`dyᵀ·x`
//! masked by W0, and the adapted weight for dx). A term whose option is `none`
//! costs nothing, and its gradient, like every stored entry an option does not read
//! (weight sharing), is zero. Small sums run in f64 in a fixed order, so results do
//! not depend on thread timing.

use crate::exec::shapes::glora_adapter_shapes;
use crate::glora::{AbOption, COption, DeOption, LayerConfig};
use crate::ir::{DType, GloraLinearAttrs, WeightLayout};

use super::glora::{Adapters, Dims, GloraInputs, a_lora_weight, adapters, check_f32, check_inputs};
use super::matmul::{MatRef, gemm_into};
use super::value::{CpuValue, OpResult, bail, sh};

/// Runs the backward of one GLoRA layer under `config`. Returns dAd, dAu, dBd, dBu,
/// dCd, dCu, dD, dE and, with `input_grad`, dx.
pub(crate) fn glora_linear_grad(
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    ins: &GloraInputs,
    dy: &CpuValue,
    y: Option<&CpuValue>,
    input_grad: bool,
) -> OpResult<Vec<CpuValue>> {
    check_inputs(attrs, config, ins)?;
    check_dy(attrs, ins.x, dy)?;
    if let Some(y) = y {
        check_dy(attrs, ins.x, y)?;
    }

    let dims = Dims {
        d_in: attrs.d_in,
        d_out: attrs.d_out,
        layout: attrs.layout,
    };
    let ad = adapters(ins, attrs.rank)?;
    let b0 = ins.b0.map(|b| b.contiguous_vec::<f32>()).transpose()?;
    // Activations and weights are read in place when contiguous (they usually are).
    let run = |y_values: Option<&[f32]>| {
        ins.x.read_f32(|xv| {
            let x = xv.to_contiguous();
            dy.read_f32(|dv| {
                let dy_values = dv.to_contiguous();
                ins.w0.read_f32(|w| {
                    let w0 = w.to_contiguous();
                    let layer = Layer {
                        dims,
                        n: x.len() / dims.d_in,
                        x: &x,
                        dy: &dy_values,
                        w0: &w0,
                        b0: b0.as_deref(),
                        ad: &ad,
                        y: y_values,
                        db: std::cell::OnceCell::new(),
                    };
                    backward(&layer, config, input_grad)
                })
            })
        })
    };
    let (grads, dx) = match y {
        Some(y) => y.read_f32(|yv| run(Some(&yv.to_contiguous())))?,
        None => run(None)?,
    };
    let mut outs = Vec::with_capacity(9);
    for (values, shape) in grads
        .into_array()
        .into_iter()
        .zip(glora_adapter_shapes(attrs))
    {
        outs.push(CpuValue::from_f32(values, &shape, DType::F32)?);
    }
    if let Some(dx) = dx {
        outs.push(CpuValue::from_f32(dx, ins.x.dims(), DType::F32)?);
    }
    Ok(outs)
}

/// `dy` must be f32 and shaped like the forward output `[..., d_out]`.
fn check_dy(a: &GloraLinearAttrs, x: &CpuValue, dy: &CpuValue) -> OpResult<()> {
    check_f32("dy", dy)?;
    let mut expected = x.dims().to_vec();
    if let Some(last) = expected.last_mut() {
        *last = a.d_out;
    }
    if dy.dims() != expected.as_slice() {
        bail!(
            "layer '{}': dy is {}, expected {} (x {} with d_out = {})",
            a.layer,
            sh(dy.dims()),
            sh(&expected),
            sh(x.dims()),
            a.d_out
        );
    }
    Ok(())
}

/// Everything one backward reads, as flat row-major buffers; x and dy are `n` rows.
struct Layer<'a> {
    dims: Dims,
    n: usize,
    x: &'a [f32],
    dy: &'a [f32],
    /// W0 in its stored layout.
    w0: &'a [f32],
    b0: Option<&'a [f32]>,
    ad: &'a Adapters,
    /// The forward's output, when the graph passes it.
    y: Option<&'a [f32]>,
    /// `db' = Σ_rows dy`, computed once for every term that reads it.
    db: std::cell::OnceCell<Vec<f64>>,
}

impl Layer<'_> {
    fn db(&self) -> &[f64] {
        self.db
            .get_or_init(|| column_sums(self.dy, self.dims.d_out))
    }
}

/// The eight adapter gradients, each the size of its stored tensor.
struct Grads {
    ad: Vec<f32>,
    au: Vec<f32>,
    bd: Vec<f32>,
    bu: Vec<f32>,
    cd: Vec<f32>,
    cu: Vec<f32>,
    d: Vec<f32>,
    e: Vec<f32>,
}

impl Grads {
    fn zeros(dims: Dims, rank: usize) -> Grads {
        let (d_in, d_out) = (dims.d_in, dims.d_out);
        Grads {
            ad: vec![0.0; d_out * rank],
            au: vec![0.0; rank * d_in],
            bd: vec![0.0; d_out * rank],
            bu: vec![0.0; rank * d_in],
            cd: vec![0.0; d_in * rank],
            cu: vec![0.0; rank],
            d: vec![0.0; d_out],
            e: vec![0.0; d_out],
        }
    }

    fn into_array(self) -> [Vec<f32>; 8] {
        [
            self.ad, self.au, self.bd, self.bu, self.cd, self.cu, self.d, self.e,
        ]
    }
}

fn backward(
    layer: &Layer,
    config: &LayerConfig,
    input_grad: bool,
) -> OpResult<(Grads, Option<Vec<f32>>)> {
    let mut grads = Grads::zeros(layer.dims, layer.ad.rank);
    match config.a {
        AbOption::Lora(r) => a_lora_grads(layer, r, &mut grads)?,
        AbOption::Vector | AbOption::Constant => a_scale_grad(layer, config, &mut grads.ad)?,
        AbOption::None => {}
    }
    // Q = dy·Bd[:, :r] serves both dBu and dx.
    let b_hidden = match config.b {
        AbOption::Lora(r) => Some(b_lora_grads(layer, r, &mut grads)?),
        AbOption::Vector | AbOption::Constant => {
            b_sum_grad(layer, config.b, &mut grads.bd);
            None
        }
        AbOption::None => None,
    };
    bias_grads(layer, config, &mut grads);
    let dx = if input_grad {
        Some(input_gradient(layer, config, b_hidden.as_deref())?)
    } else {
        None
    };
    Ok((grads, dx))
}

/// The transpose of a matrix view.
pub(super) fn transposed(m: MatRef<'_>) -> MatRef<'_> {
    MatRef {
        rs: m.cs,
        cs: m.rs,
        ..m
    }
}

/// A buffer in W0's stored layout, seen as the `[d_out, d_in]` matrix (output i,
/// input j).
pub(super) fn weight_view(buf: &[f32], dims: Dims) -> MatRef<'_> {
    match dims.layout {
        WeightLayout::OutIn => MatRef::row_major(buf, dims.d_in),
        WeightLayout::InOut => transposed(MatRef::row_major(buf, dims.d_out)),
    }
}

/// The first `r` columns of a row-major down factor with row stride `rank`.
fn leading_columns(data: &[f32], rank: usize) -> MatRef<'_> {
    MatRef {
        data,
        offset: 0,
        rs: rank as isize,
        cs: 1,
    }
}

/// `dst = lhs·rhs` for a `[d_out, k]` by `[k, d_in]` product, written in W0's stored
/// layout (as `rhsᵀ·lhsᵀ` for `[d_in, d_out]`), so it pairs element for element
/// with W0.
pub(super) fn product_in_weight_layout(
    dst: &mut [f32],
    dims: Dims,
    k: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) -> OpResult<()> {
    match dims.layout {
        WeightLayout::OutIn => {
            gemm_into(dst, (dims.d_out, dims.d_in, k), lhs, rhs, 1.0, None, true)
        }
        WeightLayout::InOut => gemm_into(
            dst,
            (dims.d_in, dims.d_out, k),
            transposed(rhs),
            transposed(lhs),
            1.0,
            None,
            true,
        ),
    }
}

/// Copies a row-major `rows × r` block into the first `r` columns of a row-major
/// matrix with `stride` columns.
fn write_leading_columns(dst: &mut [f32], stride: usize, block: &[f32], r: usize) {
    if r == 0 {
        return;
    }
    for (row, src) in dst.chunks_exact_mut(stride).zip(block.chunks_exact(r)) {
        row[..r].copy_from_slice(src);
    }
}

/// Per-column sums `Σ_n m[n, i]` of a row-major matrix with `cols` columns, in f64.
fn column_sums(m: &[f32], cols: usize) -> Vec<f64> {
    column_dot_sums(m, None, cols)
}

/// Columns per task of [`column_dot_sums`]: each column is summed by one task in
/// row order, so the result does not depend on the thread count.
const COLUMN_BLOCK: usize = 64;

/// Per-column `Σ_n a[n, i]·b[n, i]` (or `Σ_n a[n, i]` without `b`) in f64, column
/// blocks in parallel.
fn column_dot_sums(a: &[f32], b: Option<&[f32]>, cols: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut sums = vec![0f64; cols];
    if cols == 0 {
        return sums;
    }
    sums.par_chunks_mut(COLUMN_BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * COLUMN_BLOCK;
            let width = out.len();
            for (r, row) in a.chunks_exact(cols).enumerate() {
                let ar = &row[c0..c0 + width];
                match b {
                    Some(b) => {
                        let br = &b[r * cols + c0..r * cols + c0 + width];
                        for ((s, &x), &y) in out.iter_mut().zip(ar).zip(br) {
                            *s += x as f64 * y as f64;
                        }
                    }
                    None => {
                        for (s, &x) in out.iter_mut().zip(ar) {
                            *s += x as f64;
                        }
                    }
                }
            }
        });
    sums
}

/// A LoRA of rank r: with `M = (dyᵀ·x)⊙W0`, `dAd[:, :r] = M·Au[:r]ᵀ` and
/// `dAu[:r] = Ad[:, :r]ᵀ·M`.
fn a_lora_grads(layer: &Layer, r: usize, grads: &mut Grads) -> OpResult<()> {
    let Dims { d_in, d_out, .. } = layer.dims;
    let rank = layer.ad.rank;
    let mut masked = vec![0f32; d_out * d_in];
    product_in_weight_layout(
        &mut masked,
        layer.dims,
        layer.n,
        transposed(MatRef::row_major(layer.dy, d_out)),
        MatRef::row_major(layer.x, d_in),
    )?;
    masked.iter_mut().zip(layer.w0).for_each(|(m, w)| *m *= w);
    let m = weight_view(&masked, layer.dims);

    let mut down = vec![0f32; d_out * r];
    gemm_into(
        &mut down,
        (d_out, r, d_in),
        m,
        transposed(MatRef::row_major(&layer.ad.au, d_in)),
        1.0,
        None,
        true,
    )?;
    write_leading_columns(&mut grads.ad, rank, &down, r);
    gemm_into(
        &mut grads.au[..r * d_in],
        (r, d_in, d_out),
        transposed(leading_columns(&layer.ad.ad, rank)),
        m,
        1.0,
        None,
        true,
    )
}

/// A vector or constant: `dAd[i, 0] = Σ_n dy[n, i]·y0[n, i]` with the base output
/// `y0 = x·W0ᵀ`; the constant takes the sum over i.
fn a_scale_grad(layer: &Layer, config: &LayerConfig, d_ad: &mut [f32]) -> OpResult<()> {
    let d_out = layer.dims.d_out;
    let sums = match recovered_scale_sums(layer, config)? {
        Some(sums) => sums,
        None => column_dot_sums(layer.dy, Some(&recomputed_base_output(layer)?), d_out),
    };
    write_vector_or_constant(d_ad, layer.ad.rank, config.a, &sums);
    Ok(())
}

fn recomputed_base_output(layer: &Layer) -> OpResult<Vec<f32>> {
    let Dims { d_in, d_out, .. } = layer.dims;
    let mut y0 = vec![0f32; layer.n * d_out];
    gemm_into(
        &mut y0,
        (layer.n, d_out, d_in),
        MatRef::row_major(layer.x, d_in),
        transposed(weight_view(layer.w0, layer.dims)),
        1.0,
        None,
        true,
    )?;
    Ok(y0)
}

/// Scales this close to zero make `y0` ill-conditioned to recover from `y`.
const MIN_RECOVERABLE_SCALE: f32 = 0.25;

/// `Σ_n dy[n, i]·y0[n, i]` from the forward's output `y = s⊙y0 + B(x) + b'`
/// without forming y0: `(Σ_n dy·y − b'_i·Σ_n dy − Σ_n dy·B(x))/s_i`, where the B
/// term is a thin product. Recomputing y0 would cost a full product. `None` when
/// the output is not given or a scale is near zero.
fn recovered_scale_sums(layer: &Layer, config: &LayerConfig) -> OpResult<Option<Vec<f64>>> {
    let Some(y) = layer.y else {
        return Ok(None);
    };
    let Dims { d_in, d_out, .. } = layer.dims;
    let (n, rank) = (layer.n, layer.ad.rank);
    let scale: Vec<f32> = match config.a {
        AbOption::Vector => (0..d_out).map(|i| 1.0 + layer.ad.ad[i * rank]).collect(),
        _ => vec![1.0 + layer.ad.ad[0]; d_out],
    };
    if scale
        .iter()
        .any(|s| s.abs() < MIN_RECOVERABLE_SCALE || !s.is_finite())
    {
        return Ok(None);
    }
    let mut sums = column_dot_sums(layer.dy, Some(y), d_out);
    let bias = super::glora::bias_vector(
        config,
        layer.dims,
        layer.w0,
        layer.b0.map(<[f32]>::to_vec),
        layer.ad,
    )?;
    if let Some(bias) = &bias {
        for ((s, &g), &b) in sums.iter_mut().zip(layer.db()).zip(bias) {
            *s -= g * b as f64;
        }
    }
    match config.b {
        AbOption::Lora(r) => {
            // Σ_n dy[n, i]·(P·Bdᵀ)[n, i] = Σ_k Bd[i, k]·(dyᵀ·P)[i, k], P = x·Bu[:r]ᵀ.
            let mut p = vec![0f32; n * r];
            gemm_into(
                &mut p,
                (n, r, d_in),
                MatRef::row_major(layer.x, d_in),
                transposed(MatRef::row_major(&layer.ad.bu, d_in)),
                1.0,
                None,
                true,
            )?;
            let mut dyp = vec![0f32; d_out * r];
            gemm_into(
                &mut dyp,
                (d_out, r, n),
                transposed(MatRef::row_major(layer.dy, d_out)),
                MatRef::row_major(&p, r),
                1.0,
                None,
                true,
            )?;
            for (i, s) in sums.iter_mut().enumerate() {
                let row = &layer.ad.bd[i * rank..i * rank + r];
                let corr: f64 = row
                    .iter()
                    .zip(&dyp[i * r..(i + 1) * r])
                    .map(|(&b, &g)| b as f64 * g as f64)
                    .sum();
                *s -= corr;
            }
        }
        AbOption::Vector | AbOption::Constant => {
            // Σ_n dy[n, i]·b_i·Σ_j x[n, j].
            let row_sums: Vec<f64> = layer
                .x
                .chunks_exact(d_in)
                .map(|xs| xs.iter().map(|&v| v as f64).sum())
                .collect();
            let mut g = vec![0f64; d_out];
            for (dy_row, &sx) in layer.dy.chunks_exact(d_out).zip(&row_sums) {
                g.iter_mut()
                    .zip(dy_row)
                    .for_each(|(g, &d)| *g += d as f64 * sx);
            }
            for (i, s) in sums.iter_mut().enumerate() {
                let b = match config.b {
                    AbOption::Vector => layer.ad.bd[i * rank],
                    _ => layer.ad.bd[0],
                };
                *s -= b as f64 * g[i];
            }
        }
        AbOption::None => {}
    }
    for (s, &k) in sums.iter_mut().zip(&scale) {
        *s /= k as f64;
    }
    Ok(Some(sums))
}

/// Writes per-output sums as the gradient of a vector option (column 0 of a down
/// factor with row stride `rank`) or of a constant (element `[0, 0]`, their total).
fn write_vector_or_constant(dst: &mut [f32], rank: usize, option: AbOption, sums: &[f64]) {
    match option {
        AbOption::Vector => {
            for (row, &s) in dst.chunks_exact_mut(rank).zip(sums) {
                row[0] = s as f32;
            }
        }
        AbOption::Constant => {
            if let Some(first) = dst.first_mut() {
                *first = sums.iter().sum::<f64>() as f32;
            }
        }
        AbOption::Lora(_) | AbOption::None => {}
    }
}

/// B LoRA of rank r: with `P = x·Bu[:r]ᵀ` and `Q = dy·Bd[:, :r]`,
/// `dBd[:, :r] = dyᵀ·P` and `dBu[:r] = Qᵀ·x`. Returns Q (`n × r`).
fn b_lora_grads(layer: &Layer, r: usize, grads: &mut Grads) -> OpResult<Vec<f32>> {
    let Dims { d_in, d_out, .. } = layer.dims;
    let (n, rank) = (layer.n, layer.ad.rank);
    let x = MatRef::row_major(layer.x, d_in);
    let dy = MatRef::row_major(layer.dy, d_out);

    let mut p = vec![0f32; n * r];
    gemm_into(
        &mut p,
        (n, r, d_in),
        x,
        transposed(MatRef::row_major(&layer.ad.bu, d_in)),
        1.0,
        None,
        true,
    )?;
    let mut q = vec![0f32; n * r];
    gemm_into(
        &mut q,
        (n, r, d_out),
        dy,
        leading_columns(&layer.ad.bd, rank),
        1.0,
        None,
        true,
    )?;
    let mut down = vec![0f32; d_out * r];
    gemm_into(
        &mut down,
        (d_out, r, n),
        transposed(dy),
        MatRef::row_major(&p, r),
        1.0,
        None,
        true,
    )?;
    write_leading_columns(&mut grads.bd, rank, &down, r);
    gemm_into(
        &mut grads.bu[..r * d_in],
        (r, d_in, n),
        transposed(MatRef::row_major(&q, r)),
        x,
        1.0,
        None,
        true,
    )?;
    Ok(q)
}

/// B vector or constant: `dBd[i, 0] = Σ_n dy[n, i]·Σ_j x[n, j]`; the constant takes
/// the sum over i.
fn b_sum_grad(layer: &Layer, option: AbOption, d_bd: &mut [f32]) {
    let Dims { d_in, d_out, .. } = layer.dims;
    let mut sums = vec![0f64; d_out];
    for (dy_row, x_row) in layer.dy.chunks_exact(d_out).zip(layer.x.chunks_exact(d_in)) {
        let x_sum: f64 = x_row.iter().map(|&v| v as f64).sum();
        for (s, &g) in sums.iter_mut().zip(dy_row) {
            *s += g as f64 * x_sum;
        }
    }
    write_vector_or_constant(d_bd, layer.ad.rank, option, &sums);
}

/// The gradient of a D or E option from its per-output gradient `g`.
fn write_bias_option(dst: &mut [f32], option: DeOption, g: impl Iterator<Item = f64>) {
    match option {
        DeOption::Vector => dst.iter_mut().zip(g).for_each(|(d, v)| *d = v as f32),
        DeOption::Constant => {
            if let Some(first) = dst.first_mut() {
                *first = g.sum::<f64>() as f32;
            }
        }
        DeOption::None => {}
    }
}

/// D, E and C, all through `db' = Σ_n dy`: `dE = db'`, `dD = db'⊙b0` (nothing
/// without a bias, as the forward skips D then), and `dC = W0ᵀ·db'` pushed through
/// C's factors.
fn bias_grads(layer: &Layer, config: &LayerConfig, grads: &mut Grads) {
    let reads_d = layer.b0.is_some() && config.d != DeOption::None;
    if !reads_d && config.e == DeOption::None && config.c == COption::None {
        return;
    }
    let db = layer.db();
    write_bias_option(&mut grads.e, config.e, db.iter().copied());
    if let (true, Some(b0)) = (reads_d, layer.b0) {
        let scaled = db.iter().zip(b0).map(|(&g, &b)| g * b as f64);
        write_bias_option(&mut grads.d, config.d, scaled);
    }
    if config.c != COption::None {
        let dc = prompt_gradient(layer, db);
        c_grads(layer.ad, config.c, &dc, grads);
    }
}

/// `dC[j] = Σ_i W0[i, j]·db'[i]`, walking W0 in its stored order.
fn prompt_gradient(layer: &Layer, db: &[f64]) -> Vec<f64> {
    let Dims {
        d_in,
        d_out,
        layout,
    } = layer.dims;
    match layout {
        WeightLayout::OutIn => {
            let mut dc = vec![0f64; d_in];
            for (row, &g) in layer.w0.chunks_exact(d_in).zip(db) {
                dc.iter_mut()
                    .zip(row)
                    .for_each(|(c, &w)| *c += w as f64 * g);
            }
            dc
        }
        WeightLayout::InOut => layer
            .w0
            .chunks_exact(d_out)
            .map(|column| column.iter().zip(db).map(|(&w, &g)| w as f64 * g).sum())
            .collect(),
    }
}

/// C LoRA of rank r: `dCd[:, :r] = dC·Cu[:r]ᵀ`, `dCu[:r] = Cd[:, :r]ᵀ·dC`; C vector:
/// `dCd[:, 0] = dC`.
fn c_grads(ad: &Adapters, option: COption, dc: &[f64], grads: &mut Grads) {
    let rank = ad.rank;
    match option {
        COption::Lora(r) => {
            for (d_row, &g) in grads.cd.chunks_exact_mut(rank).zip(dc) {
                d_row[..r]
                    .iter_mut()
                    .zip(&ad.cu)
                    .for_each(|(d, &u)| *d = (g * u as f64) as f32);
            }
            for (k, du) in grads.cu[..r].iter_mut().enumerate() {
                let sum: f64 = ad
                    .cd
                    .chunks_exact(rank)
                    .zip(dc)
                    .map(|(c_row, &g)| c_row[k] as f64 * g)
                    .sum();
                *du = sum as f32;
            }
        }
        COption::Vector => {
            for (d_row, &g) in grads.cd.chunks_exact_mut(rank).zip(dc) {
                d_row[0] = g as f32;
            }
        }
        COption::None => {}
    }
}

/// `dx = dy·W'` without forming W' unless A is LoRA: the base `dy·W0` carries the
/// A option (rows of W0 scaled through dy's columns, or a constant factor), A LoRA
/// multiplies by `W0⊙(1 + Ad·Au)` instead, and B adds `Q·Bu[:r]` or its sum
/// broadcast along d_in.
fn input_gradient(
    layer: &Layer,
    config: &LayerConfig,
    b_hidden: Option<&[f32]>,
) -> OpResult<Vec<f32>> {
    let Dims { d_in, d_out, .. } = layer.dims;
    let n = layer.n;
    let mut dx = super::alloc::zeroed(n * d_in);
    let mut scale = 1.0;
    let scaled_w0;
    let adapted;
    let (dy, weight) = match config.a {
        AbOption::Lora(r) => {
            adapted = a_lora_weight(layer.w0, layer.ad, r, layer.dims)?;
            (layer.dy, weight_view(&adapted, layer.dims))
        }
        AbOption::Vector => {
            // Scaling W0's rows touches d_out·d_in values, scaling dy n·d_out.
            let rank = layer.ad.rank;
            let mut w = layer.w0.to_vec();
            match layer.dims.layout {
                WeightLayout::OutIn => {
                    for (i, row) in w.chunks_exact_mut(d_in).enumerate() {
                        let s = 1.0 + layer.ad.ad[i * rank];
                        row.iter_mut().for_each(|v| *v *= s);
                    }
                }
                WeightLayout::InOut => {
                    for row in w.chunks_exact_mut(d_out) {
                        for (i, v) in row.iter_mut().enumerate() {
                            *v *= 1.0 + layer.ad.ad[i * rank];
                        }
                    }
                }
            }
            scaled_w0 = w;
            (layer.dy, weight_view(&scaled_w0, layer.dims))
        }
        AbOption::Constant => {
            scale = 1.0 + layer.ad.ad[0];
            (layer.dy, weight_view(layer.w0, layer.dims))
        }
        AbOption::None => (layer.dy, weight_view(layer.w0, layer.dims)),
    };
    gemm_into(
        &mut dx,
        (n, d_in, d_out),
        MatRef::row_major(dy, d_out),
        weight,
        scale,
        None,
        true,
    )?;
    match (config.b, b_hidden) {
        (AbOption::Lora(r), Some(q)) => gemm_into(
            &mut dx,
            (n, d_in, r),
            MatRef::row_major(q, r),
            MatRef::row_major(&layer.ad.bu, d_in),
            1.0,
            Some(1.0),
            true,
        )?,
        (AbOption::Vector | AbOption::Constant, _) => {
            add_b_sum_input_grad(layer, config.b, &mut dx)
        }
        _ => {}
    }
    Ok(dx)
}

/// B vector or constant: `dx[n, j] += Σ_i dy[n, i]·b_i`, the same for every j.
fn add_b_sum_input_grad(layer: &Layer, option: AbOption, dx: &mut [f32]) {
    let Dims { d_in, d_out, .. } = layer.dims;
    let rank = layer.ad.rank;
    use rayon::prelude::*;
    let rows = dx
        .par_chunks_exact_mut(d_in)
        .zip(layer.dy.par_chunks_exact(d_out))
        .with_min_len(super::glora::ROWS_PER_TASK);
    rows.for_each(|(dx_row, dy_row)| {
        let shift: f64 = match option {
            AbOption::Vector => dy_row
                .iter()
                .enumerate()
                .map(|(i, &g)| g as f64 * layer.ad.bd[i * rank] as f64)
                .sum(),
            _ => layer.ad.bd[0] as f64 * dy_row.iter().map(|&g| g as f64).sum::<f64>(),
        };
        let shift = shift as f32;
        dx_row.iter_mut().for_each(|d| *d += shift);
    });
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::exec::cpu::glora::glora_linear;
    use crate::ir::Tensor;

    /// Step of the central differences. The loss is affine in every single
    /// parameter (each enters one product once), so the differences are exact up to
    /// rounding for any step.
    const STEP: f64 = 1e-2;
    /// Index of x among the differentiated tensors (after the eight adapters).
    const X: usize = 8;
    const NAMES: [&str; 9] = ["dAd", "dAu", "dBd", "dBu", "dCd", "dCu", "dD", "dE", "dx"];

    #[derive(Clone, Copy, Debug)]
    struct Shape {
        d_in: usize,
        d_out: usize,
        rank: usize,
    }

    /// One test layer in f64 (values exactly representable in f32); W0 is `[d_out,
    /// d_in]`, `loss_weights` has the shape of y.
    #[derive(Clone)]
    struct Problem {
        shape: Shape,
        x_dims: Vec<usize>,
        x: Vec<f64>,
        w0: Vec<f64>,
        b0: Option<Vec<f64>>,
        adapters: [Vec<f64>; 8],
        loss_weights: Vec<f64>,
    }

    impl Problem {
        fn random(rng: &mut StdRng, shape: Shape, x_dims: &[usize], has_bias: bool) -> Problem {
            let Shape { d_in, d_out, rank } = shape;
            let rows: usize = x_dims[..x_dims.len() - 1].iter().product();
            let sizes = [
                d_out * rank,
                rank * d_in,
                d_out * rank,
                rank * d_in,
                d_in * rank,
                rank,
                d_out,
                d_out,
            ];
            Problem {
                shape,
                x_dims: x_dims.to_vec(),
                x: nonzero_values(rng, rows * d_in),
                w0: nonzero_values(rng, d_out * d_in),
                b0: has_bias.then(|| nonzero_values(rng, d_out)),
                adapters: sizes.map(|len| nonzero_values(rng, len)),
                loss_weights: nonzero_values(rng, rows * d_out),
            }
        }

        fn tensor(&self, t: usize) -> &[f64] {
            if t == X { &self.x } else { &self.adapters[t] }
        }

        fn tensor_mut(&mut self, t: usize) -> &mut Vec<f64> {
            if t == X {
                &mut self.x
            } else {
                &mut self.adapters[t]
            }
        }
    }

    /// Uniform in ±[0.5, 1.5), rounded to f32: no entry is zero, so every entry an
    /// option reads changes the loss.
    fn nonzero_values(rng: &mut StdRng, len: usize) -> Vec<f64> {
        (0..len)
            .map(|_| {
                let magnitude = rng.random_range(0.5f32..1.5);
                let v = if rng.random::<bool>() {
                    magnitude
                } else {
                    -magnitude
                };
                v as f64
            })
            .collect()
    }

    fn ab_value(option: AbOption, down: &[f64], up: &[f64], s: Shape, i: usize, j: usize) -> f64 {
        match option {
            AbOption::Lora(r) => (0..r)
                .map(|k| down[i * s.rank + k] * up[k * s.d_in + j])
                .sum(),
            AbOption::Vector => down[i * s.rank],
            AbOption::Constant => down[0],
            AbOption::None => 0.0,
        }
    }

    fn de_value(option: DeOption, v: &[f64], i: usize) -> f64 {
        match option {
            DeOption::Vector => v[i],
            DeOption::Constant => v[0],
            DeOption::None => 0.0,
        }
    }

    /// The layer's output by the formula, element by element:
    /// `W'[i,j] = W0[i,j]·(1 + A[i,j]) + B[i,j]`,
    /// `b'[i] = b0[i]·(1 + D[i]) + E[i] + Σ_j W0[i,j]·C[j]`, `y = x·W'ᵀ + b'`.
    fn reference_output(config: &LayerConfig, p: &Problem) -> Vec<f64> {
        let s = p.shape;
        let [ad, au, bd, bu, cd, cu, d, e] = &p.adapters;
        let prompt: Vec<f64> = (0..s.d_in)
            .map(|j| match config.c {
                COption::Lora(r) => (0..r).map(|k| cd[j * s.rank + k] * cu[k]).sum(),
                COption::Vector => cd[j * s.rank],
                COption::None => 0.0,
            })
            .collect();
        let mut weight = vec![0f64; s.d_out * s.d_in];
        let mut bias = vec![0f64; s.d_out];
        for i in 0..s.d_out {
            for j in 0..s.d_in {
                let w0 = p.w0[i * s.d_in + j];
                let a = ab_value(config.a, ad, au, s, i, j);
                let b = ab_value(config.b, bd, bu, s, i, j);
                weight[i * s.d_in + j] = w0 * (1.0 + a) + b;
                bias[i] += w0 * prompt[j];
            }
            if let Some(b0) = &p.b0 {
                bias[i] += b0[i] * (1.0 + de_value(config.d, d, i));
            }
            bias[i] += de_value(config.e, e, i);
        }
        let rows = p.x.len() / s.d_in;
        let mut y = vec![0f64; rows * s.d_out];
        for n in 0..rows {
            for i in 0..s.d_out {
                let dot: f64 = (0..s.d_in)
                    .map(|j| p.x[n * s.d_in + j] * weight[i * s.d_in + j])
                    .sum();
                y[n * s.d_out + i] = dot + bias[i];
            }
        }
        y
    }

    /// `L = Σ y⊙R`; its gradient with respect to y is R.
    fn reference_loss(config: &LayerConfig, p: &Problem) -> f64 {
        reference_output(config, p)
            .iter()
            .zip(&p.loss_weights)
            .map(|(y, r)| y * r)
            .sum()
    }

    /// `∂L/∂t` for every entry of tensor `t` by central differences.
    fn numeric_gradient(config: &LayerConfig, p: &Problem, t: usize) -> Vec<f64> {
        let mut q = p.clone();
        (0..p.tensor(t).len())
            .map(|k| {
                let original = q.tensor(t)[k];
                q.tensor_mut(t)[k] = original + STEP;
                let plus = reference_loss(config, &q);
                q.tensor_mut(t)[k] = original - STEP;
                let minus = reference_loss(config, &q);
                q.tensor_mut(t)[k] = original;
                (plus - minus) / (2.0 * STEP)
            })
            .collect()
    }

    /// Which entries of tensor `t` the config reads (weight sharing: LoRA_r the
    /// first r columns of the down factor and rows of the up factor, vector column 0,
    /// constant element `[0, 0]`; D only with a bias).
    fn read_mask(config: &LayerConfig, p: &Problem, t: usize) -> Vec<bool> {
        let Shape { d_in, rank, .. } = p.shape;
        let down = |option: AbOption, k: usize| match option {
            AbOption::Lora(r) => k % rank < r,
            AbOption::Vector => k.is_multiple_of(rank),
            AbOption::Constant => k == 0,
            AbOption::None => false,
        };
        let up = |option: AbOption, k: usize| matches!(option, AbOption::Lora(r) if k / d_in < r);
        let de = |option: DeOption, k: usize| match option {
            DeOption::Vector => true,
            DeOption::Constant => k == 0,
            DeOption::None => false,
        };
        (0..p.tensor(t).len())
            .map(|k| match t {
                0 => down(config.a, k),
                1 => up(config.a, k),
                2 => down(config.b, k),
                3 => up(config.b, k),
                4 => match config.c {
                    COption::Lora(r) => k % rank < r,
                    COption::Vector => k.is_multiple_of(rank),
                    COption::None => false,
                },
                5 => matches!(config.c, COption::Lora(r) if k < r),
                6 => p.b0.is_some() && de(config.d, k),
                7 => de(config.e, k),
                _ => true,
            })
            .collect()
    }

    fn value(dims: &[usize], v: &[f64]) -> CpuValue {
        let v = v.iter().map(|&x| x as f32).collect();
        CpuValue::from_host(&Tensor::from_f32(dims.to_vec(), v).unwrap()).unwrap()
    }

    fn attrs(p: &Problem, layout: WeightLayout) -> GloraLinearAttrs {
        GloraLinearAttrs {
            layer: "fc".into(),
            d_in: p.shape.d_in,
            d_out: p.shape.d_out,
            rank: p.shape.rank,
            layout,
            has_bias: p.b0.is_some(),
        }
    }

    /// The problem's values as the op's inputs, W0 stored in `layout`.
    struct OpInputs {
        x: CpuValue,
        w0: CpuValue,
        b0: Option<CpuValue>,
        adapters: [CpuValue; 8],
        dy: CpuValue,
    }

    impl OpInputs {
        fn new(p: &Problem, layout: WeightLayout) -> OpInputs {
            let Shape { d_in, d_out, rank } = p.shape;
            let w0 = match layout {
                WeightLayout::OutIn => value(&[d_out, d_in], &p.w0),
                WeightLayout::InOut => {
                    let t: Vec<f64> = (0..d_in * d_out)
                        .map(|k| p.w0[(k % d_out) * d_in + k / d_out])
                        .collect();
                    value(&[d_in, d_out], &t)
                }
            };
            let shapes = [
                vec![d_out, rank],
                vec![rank, d_in],
                vec![d_out, rank],
                vec![rank, d_in],
                vec![d_in, rank],
                vec![rank, 1],
                vec![d_out],
                vec![d_out],
            ];
            let mut y_dims = p.x_dims.clone();
            *y_dims.last_mut().unwrap() = d_out;
            OpInputs {
                x: value(&p.x_dims, &p.x),
                w0,
                b0: p.b0.as_ref().map(|b| value(&[d_out], b)),
                adapters: std::array::from_fn(|t| value(&shapes[t], &p.adapters[t])),
                dy: value(&y_dims, &p.loss_weights),
            }
        }

        fn glora_inputs(&self) -> GloraInputs<'_> {
            GloraInputs {
                x: &self.x,
                w0: &self.w0,
                b0: self.b0.as_ref(),
                adapters: self.adapters.each_ref(),
            }
        }
    }

    fn f32_values(v: &CpuValue) -> Vec<f32> {
        v.to_host().unwrap().as_f32().unwrap().to_vec()
    }

    /// Every entry within 1e-3 relative of the differences (entries far below the
    /// tensor's largest are held to 1e-5 of that largest); unread entries exactly 0
    /// in both.
    fn assert_gradient_matches(analytic: &[f32], numeric: &[f64], mask: &[bool], what: &str) {
        assert_eq!(analytic.len(), numeric.len(), "{what}: length");
        let largest = numeric
            .iter()
            .zip(mask)
            .filter(|(_, read)| **read)
            .fold(0f64, |m, (v, _)| m.max(v.abs()));
        for (k, ((&a, &n), &read)) in analytic.iter().zip(numeric).zip(mask).enumerate() {
            if read {
                let tolerance = 1e-3 * n.abs().max(1e-2 * largest).max(1e-9);
                assert!(
                    (a as f64 - n).abs() <= tolerance,
                    "{what}[{k}]: analytic {a}, differences {n}"
                );
            } else {
                assert!(
                    a == 0.0 && n == 0.0,
                    "{what}[{k}] is not read: analytic {a}, differences {n}"
                );
            }
        }
    }

    /// The forward kernel and the test's reference agree, so the reference follows
    /// the same conventions as the layer being differentiated.
    fn assert_reference_matches_forward(
        config: &LayerConfig,
        p: &Problem,
        ins: &OpInputs,
        a: &GloraLinearAttrs,
        what: &str,
    ) {
        let y = glora_linear(a, config, &ins.glora_inputs()).unwrap();
        let expected = reference_output(config, p);
        for (k, (&got, &want)) in f32_values(&y).iter().zip(&expected).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{what}: forward y[{k}] = {got}, reference {want}"
            );
        }
    }

    /// Checks every output of the backward against central differences, in both
    /// layouts and with and without dx.
    fn check_problem(config: &LayerConfig, p: &Problem) {
        let numeric: Vec<Vec<f64>> = (0..=X).map(|t| numeric_gradient(config, p, t)).collect();
        let masks: Vec<Vec<bool>> = (0..=X).map(|t| read_mask(config, p, t)).collect();
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let a = attrs(p, layout);
            let ins = OpInputs::new(p, layout);
            let what = format!(
                "{config:?}, {layout:?}, bias {}, x {:?}",
                p.b0.is_some(),
                p.x_dims
            );
            assert_reference_matches_forward(config, p, &ins, &a, &what);
            let y = glora_linear(&a, config, &ins.glora_inputs()).unwrap();
            for input_grad in [false, true] {
                // With the forward output the A-scale gradient recovers y0 from it;
                // without, it recomputes y0: both paths are checked.
                let given = input_grad.then_some(&y);
                let outs =
                    glora_linear_grad(&a, config, &ins.glora_inputs(), &ins.dy, given, input_grad)
                        .unwrap();
                assert_eq!(outs.len(), if input_grad { 9 } else { 8 }, "{what}");
                for (t, out) in outs.iter().enumerate() {
                    let expected_dims: &[usize] = if t == X {
                        &p.x_dims
                    } else {
                        ins.adapters[t].dims()
                    };
                    assert_eq!(out.dims(), expected_dims, "{what}: {}", NAMES[t]);
                    assert_gradient_matches(
                        &f32_values(out),
                        &numeric[t],
                        &masks[t],
                        &format!("{what}: {}", NAMES[t]),
                    );
                }
            }
        }
    }

    fn all_configs(rank: usize) -> Vec<LayerConfig> {
        let ab = [
            AbOption::Lora(rank - 1),
            AbOption::Lora(rank),
            AbOption::Vector,
            AbOption::Constant,
            AbOption::None,
        ];
        let c = [
            COption::Lora(rank - 1),
            COption::Lora(rank),
            COption::Vector,
            COption::None,
        ];
        let de = [DeOption::Vector, DeOption::Constant, DeOption::None];
        let mut configs = Vec::new();
        for a in ab {
            for b in ab {
                for c in c {
                    for d in de {
                        for e in de {
                            configs.push(LayerConfig { a, b, c, d, e });
                        }
                    }
                }
            }
        }
        configs
    }

    #[test]
    fn every_config_matches_finite_differences_at_small_sizes() {
        let shape = Shape {
            d_in: 5,
            d_out: 4,
            rank: 3,
        };
        let configs = all_configs(shape.rank);
        assert_eq!(configs.len(), 900);
        let mut rng = StdRng::seed_from_u64(11);
        for x_dims in [vec![3, 5], vec![2, 3, 5]] {
            for has_bias in [true, false] {
                let p = Problem::random(&mut rng, shape, &x_dims, has_bias);
                for config in &configs {
                    check_problem(config, &p);
                }
            }
        }
    }

    #[test]
    fn random_configs_match_finite_differences_at_larger_sizes() {
        let shape = Shape {
            d_in: 23,
            d_out: 17,
            rank: 5,
        };
        let mut rng = StdRng::seed_from_u64(12);
        let configs = all_configs(shape.rank);
        let mut chosen = vec![LayerConfig {
            a: AbOption::Lora(3),
            b: AbOption::Lora(5),
            c: COption::Lora(4),
            d: DeOption::Vector,
            e: DeOption::Constant,
        }];
        chosen.extend((0..5).map(|_| configs[rng.random_range(0..configs.len())]));
        for (k, config) in chosen.iter().enumerate() {
            let x_dims = if k.is_multiple_of(2) {
                vec![2, 7, 23]
            } else {
                vec![9, 23]
            };
            let p = Problem::random(&mut rng, shape, &x_dims, k % 3 != 1);
            check_problem(config, &p);
        }
    }

    #[test]
    fn dy_of_the_wrong_shape_or_type_is_an_error() {
        let shape = Shape {
            d_in: 3,
            d_out: 2,
            rank: 2,
        };
        let mut rng = StdRng::seed_from_u64(13);
        let p = Problem::random(&mut rng, shape, &[4, 3], true);
        let ins = OpInputs::new(&p, WeightLayout::OutIn);
        let a = attrs(&p, WeightLayout::OutIn);
        let config = LayerConfig {
            a: AbOption::Lora(2),
            ..LayerConfig::NONE
        };

        let wrong = value(&[4, 3], &[0.5; 12]);
        let err =
            glora_linear_grad(&a, &config, &ins.glora_inputs(), &wrong, None, true).unwrap_err();
        assert!(
            err.0.contains("'fc'")
                && err.0.contains("dy is [4,3]")
                && err.0.contains("expected [4,2]"),
            "{}",
            err.0
        );

        let half = CpuValue::from_host(&Tensor::zeros(DType::F16, vec![4, 2])).unwrap();
        let err =
            glora_linear_grad(&a, &config, &ins.glora_inputs(), &half, None, true).unwrap_err();
        assert!(err.0.contains("dy") && err.0.contains("f32"), "{}", err.0);

        let too_deep = LayerConfig {
            b: AbOption::Lora(3),
            ..LayerConfig::NONE
        };
        let err =
            glora_linear_grad(&a, &too_deep, &ins.glora_inputs(), &ins.dy, None, true).unwrap_err();
        assert!(err.0.contains("rank 3"), "{}", err.0);
    }

    /// Products large enough to run on several threads still give the same bits on
    /// every run.
    #[test]
    fn repeated_runs_give_identical_bits() {
        let shape = Shape {
            d_in: 96,
            d_out: 128,
            rank: 4,
        };
        let mut rng = StdRng::seed_from_u64(15);
        let p = Problem::random(&mut rng, shape, &[4, 64, 96], true);
        let config = LayerConfig {
            a: AbOption::Lora(4),
            b: AbOption::Lora(3),
            c: COption::Lora(2),
            d: DeOption::Vector,
            e: DeOption::Vector,
        };
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let a = attrs(&p, layout);
            let ins = OpInputs::new(&p, layout);
            let run = || -> Vec<Vec<u32>> {
                glora_linear_grad(&a, &config, &ins.glora_inputs(), &ins.dy, None, true)
                    .unwrap()
                    .iter()
                    .map(|v| f32_values(v).iter().map(|x| x.to_bits()).collect())
                    .collect()
            };
            let first = run();
            for _ in 0..3 {
                assert!(run() == first, "{layout:?}");
            }
        }
    }
}
