//! Folding a configured GLoRA layer into a plain linear layer, and the unmerged
//! forward that serves as the host reference for the executor's adapter op.
//!
//! Inputs are the frozen base weight W0 (PyTorch layout `[d_out, d_in]`, row-major),
//! the optional base bias b0, the layer's [`LayerConfig`] and its [`AdapterTensors`].
//! [`merge`] returns `W' = W0 + W0⊙A + B` and `b' = b0 + b0⊙D + E + W0·C`, with the
//! ORIGINAL W0 in the prompt term (glora-spec §6); a layer without a bias gains
//! `b' = E + W0·C`. The reparameterisation pass writes the result into the exported
//! model. [`forward_reference`] computes the same layer without merging, along the
//! spec's compute notes, so the two check each other.

use super::config::LayerConfig;
use super::init::{AdapterTensors, AdapterValues};
use super::options::{AbOption, COption, DeOption, Slot};
use super::params::LayerShape;

/// Inputs that do not fit together. The caller adds the layer's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("W0 should hold d_out·d_in = {expected} values but holds {actual}")]
    WeightLength { expected: usize, actual: usize },
    #[error("the layer is declared with has_bias = {has_bias} but b0 was {}", if *has_bias { "not given" } else { "given" })]
    BiasPresence { has_bias: bool },
    #[error("b0 should hold d_out = {expected} values but holds {actual}")]
    BiasLength { expected: usize, actual: usize },
    #[error(
        "the adapter tensors belong to a {adapter_d_in}→{adapter_d_out} layer, but the layer is {d_in}→{d_out}"
    )]
    AdapterShape {
        adapter_d_in: usize,
        adapter_d_out: usize,
        d_in: usize,
        d_out: usize,
    },
    #[error("option {slot} reads rank {rank}, but the adapter tensors are stored at rank {stored}")]
    RankTooLarge {
        slot: Slot,
        rank: usize,
        stored: usize,
    },
    #[error("x should hold n_rows·d_in = {expected} values but holds {actual}")]
    InputLength { expected: usize, actual: usize },
}

/// The merged layer: `weight` is `[d_out, d_in]` row-major, `bias` has `d_out` values
/// (present even when the base layer had none).
#[derive(Clone, Debug, PartialEq)]
pub struct MergedLinear {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

fn check_inputs(
    w0: &[f32],
    b0: Option<&[f32]>,
    shape: LayerShape,
    config: &LayerConfig,
    tensors: &AdapterTensors,
) -> Result<(), MergeError> {
    let LayerShape { d_in, d_out, .. } = shape;
    if w0.len() != d_out * d_in {
        return Err(MergeError::WeightLength {
            expected: d_out * d_in,
            actual: w0.len(),
        });
    }
    match b0 {
        Some(_) if !shape.has_bias => return Err(MergeError::BiasPresence { has_bias: false }),
        None if shape.has_bias => return Err(MergeError::BiasPresence { has_bias: true }),
        Some(b) if b.len() != d_out => {
            return Err(MergeError::BiasLength {
                expected: d_out,
                actual: b.len(),
            });
        }
        _ => {}
    }
    if (tensors.d_in(), tensors.d_out()) != (d_in, d_out) {
        return Err(MergeError::AdapterShape {
            adapter_d_in: tensors.d_in(),
            adapter_d_out: tensors.d_out(),
            d_in,
            d_out,
        });
    }
    if let Some((slot, rank)) = config.lora_ranks().find(|&(_, r)| r > tensors.rank()) {
        return Err(MergeError::RankTooLarge {
            slot,
            rank,
            stored: tensors.rank(),
        });
    }
    Ok(())
}

/// The value of an A or B option (glora-spec §1.3), read entry by entry from the
/// factors so that nothing full-size is built for it.
#[derive(Clone, Copy)]
enum WeightTerm<'a> {
    /// `down[:, :r] · up[:r, :]`.
    Lora {
        down: &'a [f32],
        up: &'a [f32],
        stride: usize,
        r: usize,
        d_in: usize,
    },
    /// `down[:, 0]`, the same for every input column.
    Column { down: &'a [f32], stride: usize },
    /// `down[0, 0]`, the same everywhere.
    Scalar(f32),
}

impl<'a> WeightTerm<'a> {
    fn new(
        option: AbOption,
        down: &'a [f32],
        up: &'a [f32],
        stride: usize,
        d_in: usize,
    ) -> Option<WeightTerm<'a>> {
        match option {
            AbOption::Lora(r) => Some(WeightTerm::Lora {
                down,
                up,
                stride,
                r,
                d_in,
            }),
            AbOption::Vector => Some(WeightTerm::Column { down, stride }),
            AbOption::Constant => Some(WeightTerm::Scalar(down[0])),
            AbOption::None => None,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        match *self {
            WeightTerm::Lora {
                down,
                up,
                stride,
                r,
                d_in,
            } => (0..r).fold(0.0, |acc, k| acc + down[i * stride + k] * up[k * d_in + j]),
            WeightTerm::Column { down, stride } => down[i * stride],
            WeightTerm::Scalar(v) => v,
        }
    }
}

/// The value of a D or E option: the whole vector or its first element.
#[derive(Clone, Copy)]
enum BiasTerm<'a> {
    Vector(&'a [f32]),
    Scalar(f32),
}

impl<'a> BiasTerm<'a> {
    fn new(option: DeOption, values: &'a [f32]) -> Option<BiasTerm<'a>> {
        match option {
            DeOption::Vector => Some(BiasTerm::Vector(values)),
            DeOption::Constant => Some(BiasTerm::Scalar(values[0])),
            DeOption::None => None,
        }
    }

    fn at(&self, i: usize) -> f32 {
        match *self {
            BiasTerm::Vector(v) => v[i],
            BiasTerm::Scalar(v) => v,
        }
    }
}

/// C as a `d_in` vector: `Cd[:, :r] · Cu[:r]` or `Cd[:, 0]`.
fn prompt_vector(option: COption, v: &AdapterValues<'_>, d_in: usize) -> Option<Vec<f32>> {
    let stride = v.rank;
    match option {
        COption::Lora(r) => Some(
            (0..d_in)
                .map(|j| (0..r).fold(0.0, |acc, k| acc + v.cd[j * stride + k] * v.cu[k]))
                .collect(),
        ),
        COption::Vector => Some((0..d_in).map(|j| v.cd[j * stride]).collect()),
        COption::None => None,
    }
}

/// `W0 · c`, each dot product accumulated in f64 and rounded once, so that the shift
/// does not depend on d_in's size more than it must.
fn prompt_shift(w0: &[f32], c: &[f32], d_in: usize) -> Vec<f32> {
    w0.chunks_exact(d_in)
        .map(|row| {
            let dot: f64 = row.iter().zip(c).map(|(&w, &c)| w as f64 * c as f64).sum();
            dot as f32
        })
        .collect()
}

fn merged_weight(
    w0: &[f32],
    shape: LayerShape,
    config: &LayerConfig,
    v: &AdapterValues<'_>,
) -> Vec<f32> {
    let LayerShape { d_in, d_out, .. } = shape;
    let mut weight = w0.to_vec();
    if let Some(a) = WeightTerm::new(config.a, v.ad, v.au, v.rank, d_in) {
        for i in 0..d_out {
            for j in 0..d_in {
                let ij = i * d_in + j;
                weight[ij] += w0[ij] * a.at(i, j);
            }
        }
    }
    if let Some(b) = WeightTerm::new(config.b, v.bd, v.bu, v.rank, d_in) {
        for i in 0..d_out {
            for j in 0..d_in {
                weight[i * d_in + j] += b.at(i, j);
            }
        }
    }
    weight
}

fn merged_bias(
    w0: &[f32],
    b0: Option<&[f32]>,
    shape: LayerShape,
    config: &LayerConfig,
    v: &AdapterValues<'_>,
) -> Vec<f32> {
    let LayerShape { d_in, d_out, .. } = shape;
    let mut bias = match b0 {
        Some(b0) => b0.to_vec(),
        None => vec![0.0; d_out],
    };
    // D scales the base bias; without one there is nothing to scale.
    if let (Some(b0), Some(d)) = (b0, BiasTerm::new(config.d, v.d)) {
        for (i, b) in bias.iter_mut().enumerate() {
            *b += b0[i] * d.at(i);
        }
    }
    if let Some(e) = BiasTerm::new(config.e, v.e) {
        for (i, b) in bias.iter_mut().enumerate() {
            *b += e.at(i);
        }
    }
    if let Some(c) = prompt_vector(config.c, v, d_in) {
        for (b, p) in bias.iter_mut().zip(prompt_shift(w0, &c, d_in)) {
            *b += p;
        }
    }
    bias
}

/// Folds the configured adapter into the base layer. An all-`none` config returns
/// copies of W0 and b0 untouched (zeros as the bias of a bias-less layer).
pub fn merge(
    w0: &[f32],
    b0: Option<&[f32]>,
    shape: LayerShape,
    config: &LayerConfig,
    tensors: &AdapterTensors,
) -> Result<MergedLinear, MergeError> {
    check_inputs(w0, b0, shape, config, tensors)?;
    let values = tensors.values();
    Ok(MergedLinear {
        weight: merged_weight(w0, shape, config, &values),
        bias: merged_bias(w0, b0, shape, config, &values),
    })
}

/// `a · b` for row-major `a: [rows, inner]`, `b: [inner, cols]`, accumulated in f64.
fn matmul(a: &[f32], b: &[f32], rows: usize, inner: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            let dot: f64 = (0..inner)
                .map(|k| a[i * inner + k] as f64 * b[k * cols + j] as f64)
                .sum();
            out.push(dot as f32);
        }
    }
    out
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| m[i * cols + j]))
        .collect()
}

/// The first `r` columns of a row-major matrix with `stride` columns.
fn leading_columns(m: &[f32], stride: usize, r: usize) -> Vec<f32> {
    m.chunks_exact(stride)
        .flat_map(|row| row[..r].iter().copied())
        .collect()
}

fn add_into(y: &mut [f32], delta: &[f32]) {
    for (y, d) in y.iter_mut().zip(delta) {
        *y += d;
    }
}

/// The adapted layer's output for `x` (`[n_rows, d_in]`, row-major) without merging:
/// `x·W0ᵀ`, scaled by `(1+a)` for an A vector or constant or plus `x·(W0⊙(Ad·Au))ᵀ`
/// for A LoRA; plus `(x·Buᵀ)·Bdᵀ` for B LoRA or `b·Σx` for a B vector or constant;
/// plus `b0 + b0⊙D + E + W0·C`. Products accumulate in f64. Returns `[n_rows, d_out]`.
pub fn forward_reference(
    x: &[f32],
    n_rows: usize,
    w0: &[f32],
    b0: Option<&[f32]>,
    shape: LayerShape,
    config: &LayerConfig,
    tensors: &AdapterTensors,
) -> Result<Vec<f32>, MergeError> {
    check_inputs(w0, b0, shape, config, tensors)?;
    let LayerShape { d_in, d_out, .. } = shape;
    if x.len() != n_rows * d_in {
        return Err(MergeError::InputLength {
            expected: n_rows * d_in,
            actual: x.len(),
        });
    }
    let v = tensors.values();
    let stride = v.rank;
    let w0_t = transpose(w0, d_out, d_in);
    let mut y = matmul(x, &w0_t, n_rows, d_in, d_out);

    match config.a {
        AbOption::Lora(r) => {
            let low_rank = matmul(
                &leading_columns(v.ad, stride, r),
                &v.au[..r * d_in],
                d_out,
                r,
                d_in,
            );
            let scaled: Vec<f32> = w0.iter().zip(&low_rank).map(|(w, a)| w * a).collect();
            add_into(
                &mut y,
                &matmul(x, &transpose(&scaled, d_out, d_in), n_rows, d_in, d_out),
            );
        }
        AbOption::Vector => {
            for row in y.chunks_exact_mut(d_out) {
                for (i, y) in row.iter_mut().enumerate() {
                    *y *= 1.0 + v.ad[i * stride];
                }
            }
        }
        AbOption::Constant => {
            let alpha = v.ad[0];
            y.iter_mut().for_each(|y| *y *= 1.0 + alpha);
        }
        AbOption::None => {}
    }

    let input_sums: Vec<f32> = x
        .chunks_exact(d_in)
        .map(|row| row.iter().map(|&x| x as f64).sum::<f64>() as f32)
        .collect();
    match config.b {
        AbOption::Lora(r) => {
            let hidden = matmul(x, &transpose(&v.bu[..r * d_in], r, d_in), n_rows, d_in, r);
            let bd_t = transpose(&leading_columns(v.bd, stride, r), d_out, r);
            add_into(&mut y, &matmul(&hidden, &bd_t, n_rows, r, d_out));
        }
        AbOption::Vector => {
            for (row, sum) in y.chunks_exact_mut(d_out).zip(&input_sums) {
                for (i, y) in row.iter_mut().enumerate() {
                    *y += v.bd[i * stride] * sum;
                }
            }
        }
        AbOption::Constant => {
            let beta = v.bd[0];
            for (row, sum) in y.chunks_exact_mut(d_out).zip(&input_sums) {
                row.iter_mut().for_each(|y| *y += beta * sum);
            }
        }
        AbOption::None => {}
    }

    let d_vec: Option<Vec<f32>> = match config.d {
        DeOption::Vector => Some(v.d.to_vec()),
        DeOption::Constant => Some(vec![v.d[0]; d_out]),
        DeOption::None => None,
    };
    let e_vec: Option<Vec<f32>> = match config.e {
        DeOption::Vector => Some(v.e.to_vec()),
        DeOption::Constant => Some(vec![v.e[0]; d_out]),
        DeOption::None => None,
    };
    let c_vec: Option<Vec<f32>> = match config.c {
        COption::Lora(r) => Some(matmul(
            &leading_columns(v.cd, stride, r),
            &v.cu[..r],
            d_in,
            r,
            1,
        )),
        COption::Vector => Some(leading_columns(v.cd, stride, 1)),
        COption::None => None,
    };
    let prompt = c_vec.map(|c| matmul(w0, &c, d_out, d_in, 1));
    for row in y.chunks_exact_mut(d_out) {
        if let Some(b0) = b0 {
            add_into(row, b0);
            if let Some(d) = &d_vec {
                for (i, y) in row.iter_mut().enumerate() {
                    *y += b0[i] * d[i];
                }
            }
        }
        if let Some(e) = &e_vec {
            add_into(row, e);
        }
        if let Some(p) = &prompt {
            add_into(row, p);
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::glora::params::layer_params;
    use crate::glora::space::SearchSpace;
    use crate::ir::Tensor;

    const fn shape(d_in: usize, d_out: usize, has_bias: bool) -> LayerShape {
        LayerShape::new(d_in, d_out, has_bias)
    }

    /// Uniform in ±[0.5, 1.5): never zero, so every read entry matters.
    fn nonzero(rng: &mut StdRng) -> f32 {
        let magnitude = rng.random_range(0.5f32..1.5);
        if rng.random::<bool>() {
            magnitude
        } else {
            -magnitude
        }
    }

    fn nonzero_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| nonzero(rng)).collect()
    }

    /// Random non-zero values for the eight tensors, in suffix order.
    fn random_parts(rng: &mut StdRng, s: LayerShape, rank: usize) -> [Vec<f32>; 8] {
        AdapterTensors::expected_shapes(s, rank).map(|dims| nonzero_vec(rng, dims.iter().product()))
    }

    fn adapters(s: LayerShape, rank: usize, parts: &[Vec<f32>; 8]) -> AdapterTensors {
        let shapes = AdapterTensors::expected_shapes(s, rank);
        let tensors: [Tensor; 8] =
            std::array::from_fn(|k| Tensor::from_f32(shapes[k].clone(), parts[k].clone()).unwrap());
        AdapterTensors::from_tensors("test", s, rank, tensors).unwrap()
    }

    struct Layer {
        shape: LayerShape,
        w0: Vec<f32>,
        b0: Option<Vec<f32>>,
    }

    fn random_layer(rng: &mut StdRng, s: LayerShape) -> Layer {
        Layer {
            shape: s,
            w0: nonzero_vec(rng, s.d_out * s.d_in),
            b0: s.has_bias.then(|| nonzero_vec(rng, s.d_out)),
        }
    }

    fn merge_layer(layer: &Layer, config: &LayerConfig, t: &AdapterTensors) -> MergedLinear {
        merge(&layer.w0, layer.b0.as_deref(), layer.shape, config, t).unwrap()
    }

    fn forward_layer(
        layer: &Layer,
        x: &[f32],
        n: usize,
        config: &LayerConfig,
        t: &AdapterTensors,
    ) -> Vec<f32> {
        forward_reference(x, n, &layer.w0, layer.b0.as_deref(), layer.shape, config, t).unwrap()
    }

    /// `x · Wᵀ + b` written out directly, dot products in f64.
    fn linear(x: &[f32], n: usize, w: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
        let mut y = Vec::new();
        for r in 0..n {
            for i in 0..d_out {
                let mut dot = 0.0f64;
                for j in 0..d_in {
                    dot += x[r * d_in + j] as f64 * w[i * d_in + j] as f64;
                }
                y.push(dot as f32 + b[i]);
            }
        }
        y
    }

    fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths");
        for (k, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= tol * (1.0 + e.abs()),
                "{what}: entry {k}: {a} vs {e}"
            );
        }
    }

    fn spaces() -> [SearchSpace; 2] {
        [SearchSpace::default(), SearchSpace::new([2, 4, 8]).unwrap()]
    }

    /// The layer computed literally as glora-spec §1.3 and §6 state it: every option
    /// materialised to its full broadcast shape, zeros for `none`, then
    /// `W0 + W0⊙A + B` and `b0 + b0⊙D + E + W0·C` (D dropped without a bias).
    fn literal_merge(
        layer: &Layer,
        config: &LayerConfig,
        parts: &[Vec<f32>; 8],
        rank: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let LayerShape { d_in, d_out, .. } = layer.shape;
        let [ad, au, bd, bu, cd, cu, d, e] = parts;
        let full = |option: AbOption, down: &[f32], up: &[f32]| -> Vec<Vec<f32>> {
            (0..d_out)
                .map(|i| {
                    (0..d_in)
                        .map(|j| match option {
                            AbOption::Lora(r) => {
                                (0..r).map(|k| down[i * rank + k] * up[k * d_in + j]).sum()
                            }
                            AbOption::Vector => down[i * rank],
                            AbOption::Constant => down[0],
                            AbOption::None => 0.0,
                        })
                        .collect()
                })
                .collect()
        };
        let a = full(config.a, ad, au);
        let b = full(config.b, bd, bu);
        let c: Vec<f32> = (0..d_in)
            .map(|j| match config.c {
                COption::Lora(r) => (0..r).map(|k| cd[j * rank + k] * cu[k]).sum(),
                COption::Vector => cd[j * rank],
                COption::None => 0.0,
            })
            .collect();
        let bias_term = |option: DeOption, v: &[f32], i: usize| match option {
            DeOption::Vector => v[i],
            DeOption::Constant => v[0],
            DeOption::None => 0.0,
        };
        let mut w = Vec::new();
        let mut bias = Vec::new();
        for i in 0..d_out {
            for j in 0..d_in {
                let w0 = layer.w0[i * d_in + j];
                w.push(w0 + w0 * a[i][j] + b[i][j]);
            }
            let p: f64 = (0..d_in)
                .map(|j| layer.w0[i * d_in + j] as f64 * c[j] as f64)
                .sum();
            let base = match &layer.b0 {
                Some(b0) => b0[i] + b0[i] * bias_term(config.d, d, i),
                None => 0.0,
            };
            bias.push(base + bias_term(config.e, e, i) + p as f32);
        }
        (w, bias)
    }

    #[test]
    fn merge_matches_the_literal_formula_for_every_config() {
        let mut rng = StdRng::seed_from_u64(11);
        for space in spaces() {
            let rank = space.max_rank();
            for has_bias in [true, false] {
                let layer = random_layer(&mut rng, shape(5, 3, has_bias));
                let parts = random_parts(&mut rng, layer.shape, rank);
                let t = adapters(layer.shape, rank, &parts);
                for config in space.all_configs() {
                    let merged = merge_layer(&layer, &config, &t);
                    let (w, b) = literal_merge(&layer, &config, &parts, rank);
                    assert_close(&merged.weight, &w, 1e-6, &format!("W' {config}"));
                    assert_close(&merged.bias, &b, 1e-6, &format!("b' {config}"));
                }
            }
        }
    }

    #[test]
    fn merged_layer_equals_the_unmerged_forward_for_every_config() {
        let mut rng = StdRng::seed_from_u64(12);
        let n = 4;
        for space in spaces() {
            let rank = space.max_rank();
            for has_bias in [true, false] {
                let s = shape(5, 3, has_bias);
                let layer = random_layer(&mut rng, s);
                let t = adapters(s, rank, &random_parts(&mut rng, s, rank));
                let x = nonzero_vec(&mut rng, n * s.d_in);
                for config in space.all_configs() {
                    let merged = merge_layer(&layer, &config, &t);
                    let via_merge = linear(&x, n, &merged.weight, &merged.bias, s.d_in, s.d_out);
                    let unmerged = forward_layer(&layer, &x, n, &config, &t);
                    assert_close(
                        &via_merge,
                        &unmerged,
                        1e-5,
                        &format!("{config}, bias {has_bias}"),
                    );
                }
            }
        }
    }

    #[test]
    fn fresh_adapters_leave_the_base_layer_exactly() {
        let mut rng = StdRng::seed_from_u64(13);
        let n = 3;
        for space in spaces() {
            for has_bias in [true, false] {
                let s = shape(6, 4, has_bias);
                let layer = random_layer(&mut rng, s);
                let t = AdapterTensors::init(s, space.max_rank(), &mut rng).unwrap();
                let x = nonzero_vec(&mut rng, n * s.d_in);
                let zero_bias = vec![0.0; s.d_out];
                let base_bias = layer.b0.as_deref().unwrap_or(&zero_bias);
                let base = linear(&x, n, &layer.w0, base_bias, s.d_in, s.d_out);
                for config in space.all_configs() {
                    let merged = merge_layer(&layer, &config, &t);
                    assert_eq!(merged.weight, layer.w0, "{config}");
                    assert_eq!(merged.bias, base_bias, "{config}");
                    assert_eq!(forward_layer(&layer, &x, n, &config, &t), base, "{config}");
                }
            }
        }
    }

    #[test]
    fn all_none_copies_the_base_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(14);
        let s = shape(5, 3, true);
        let mut layer = random_layer(&mut rng, s);
        // Values that arithmetic could disturb: signed zero, NaN, infinity, subnormal.
        layer.w0[..4].copy_from_slice(&[-0.0, f32::NAN, f32::INFINITY, 1e-45]);
        let t = adapters(s, 4, &random_parts(&mut rng, s, 4));
        let merged = merge_layer(&layer, &LayerConfig::NONE, &t);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&merged.weight), bits(&layer.w0));
        assert_eq!(bits(&merged.bias), bits(layer.b0.as_deref().unwrap()));
    }

    #[test]
    fn biasless_layer_gains_e_plus_w0_c() {
        let mut rng = StdRng::seed_from_u64(15);
        let s = shape(5, 3, false);
        let layer = random_layer(&mut rng, s);
        let parts = random_parts(&mut rng, s, 4);
        let t = adapters(s, 4, &parts);
        let config = LayerConfig {
            c: COption::Vector,
            d: DeOption::Vector,
            e: DeOption::Vector,
            ..LayerConfig::NONE
        };
        let merged = merge_layer(&layer, &config, &t);
        let (cd, e) = (&parts[4], &parts[7]);
        for (i, (row, &e_i)) in layer.w0.chunks_exact(5).zip(e).enumerate() {
            let prompt: f64 = (0..5).map(|j| row[j] as f64 * cd[j * 4] as f64).sum();
            let expected = e_i + prompt as f32;
            assert!((merged.bias[i] - expected).abs() <= 1e-6, "row {i}");
        }
        let untouched = merge_layer(&layer, &LayerConfig::NONE, &t);
        assert_eq!(untouched.bias, vec![0.0; 3]);
    }

    /// Hand-worked 2×2 layer, R = 2: W0 = [[1, 2], [3, 4]], b0 = [0.5, -1],
    /// Ad = [[.1, .2], [.3, .4]], Au = [[1, 0], [0, 2]], Bd = [[1, 2], [3, 4]],
    /// Bu = [[.5, 1], [1, -1]], Cd = [[1, 2], [-1, 3]], Cu = [[2], [1]], D = [.5, 2],
    /// E = [1, -1].
    fn hand_layer(has_bias: bool) -> (Layer, AdapterTensors) {
        let parts = [
            vec![0.1, 0.2, 0.3, 0.4],
            vec![1.0, 0.0, 0.0, 2.0],
            vec![1.0, 2.0, 3.0, 4.0],
            vec![0.5, 1.0, 1.0, -1.0],
            vec![1.0, 2.0, -1.0, 3.0],
            vec![2.0, 1.0],
            vec![0.5, 2.0],
            vec![1.0, -1.0],
        ];
        let s = shape(2, 2, has_bias);
        let layer = Layer {
            shape: s,
            w0: vec![1.0, 2.0, 3.0, 4.0],
            b0: has_bias.then(|| vec![0.5, -1.0]),
        };
        (layer, adapters(s, 2, &parts))
    }

    #[test]
    fn hand_worked_lora_terms() {
        let (layer, t) = hand_layer(true);
        let config = LayerConfig {
            a: AbOption::Lora(2),
            b: AbOption::Lora(1),
            c: COption::Lora(2),
            d: DeOption::Vector,
            e: DeOption::Constant,
        };
        // A = Ad·Au = [[.1, .4], [.3, .8]]; W0⊙A = [[.1, .8], [.9, 3.2]];
        // B = Bd[:, :1]·Bu[:1] = [[.5, 1], [1.5, 3]];
        // C = Cd·Cu = [4, 1]; W0·C = [6, 16]; b0⊙D = [.25, -2]; E = 1.
        let merged = merge_layer(&layer, &config, &t);
        assert_close(&merged.weight, &[1.6, 3.8, 5.4, 10.2], 1e-6, "W'");
        assert_close(&merged.bias, &[7.75, 14.0], 1e-6, "b'");
        let y = forward_layer(&layer, &[1.0, 1.0], 1, &config, &t);
        assert_close(&y, &[13.15, 29.6], 1e-6, "y");
    }

    #[test]
    fn hand_worked_vector_and_constant_terms() {
        let (layer, t) = hand_layer(true);
        let config = LayerConfig {
            a: AbOption::Vector,
            b: AbOption::Constant,
            c: COption::Vector,
            d: DeOption::Constant,
            e: DeOption::Vector,
        };
        // A = [.1, .3] per row; B = 1; C = [1, -1]; W0·C = [-1, -1]; D = .5.
        let merged = merge_layer(&layer, &config, &t);
        assert_close(&merged.weight, &[2.1, 3.2, 4.9, 6.2], 1e-6, "W'");
        assert_close(&merged.bias, &[0.75, -3.5], 1e-6, "b'");
        // x = [2, -1]: Σx = 1. Row 0: 1.1·(2 - 2) + 1 + 0.75; row 1: 1.3·(6 - 4) + 1 - 3.5.
        let y = forward_layer(&layer, &[2.0, -1.0], 1, &config, &t);
        assert_close(&y, &[1.75, 0.1], 1e-6, "y");
    }

    #[test]
    fn hand_worked_biasless_layer_ignores_d() {
        let (layer, t) = hand_layer(false);
        let config = LayerConfig {
            c: COption::Lora(1),
            d: DeOption::Vector,
            ..LayerConfig::NONE
        };
        // C = Cd[:, :1]·Cu[:1] = [2, -2]; W0·C = [-2, -2].
        let merged = merge_layer(&layer, &config, &t);
        assert_eq!(merged.weight, layer.w0);
        assert_close(&merged.bias, &[-2.0, -2.0], 1e-6, "b'");
    }

    /// Adds 0.5 to one entry of one tensor.
    fn perturbed(parts: &[Vec<f32>; 8], tensor: usize, entry: usize) -> [Vec<f32>; 8] {
        let mut parts = parts.clone();
        parts[tensor][entry] += 0.5;
        parts
    }

    #[test]
    fn parameter_count_equals_the_entries_merge_reads() {
        let mut rng = StdRng::seed_from_u64(16);
        for space in spaces() {
            let rank = space.max_rank();
            for has_bias in [true, false] {
                let s = shape(5, 3, has_bias);
                let layer = random_layer(&mut rng, s);
                let parts = random_parts(&mut rng, s, rank);
                let t = adapters(s, rank, &parts);
                let variants: Vec<AdapterTensors> = (0..8)
                    .flat_map(|k| (0..parts[k].len()).map(move |entry| (k, entry)))
                    .map(|(k, entry)| adapters(s, rank, &perturbed(&parts, k, entry)))
                    .collect();
                for config in space.all_configs() {
                    let base = merge_layer(&layer, &config, &t);
                    let read = variants
                        .iter()
                        .filter(|v| merge_layer(&layer, &config, v) != base)
                        .count();
                    assert_eq!(read, layer_params(s, &config), "{config}, bias {has_bias}");
                }
            }
        }
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let (layer, t) = hand_layer(true);
        let config = LayerConfig::NONE;
        let s = layer.shape;
        let b0 = layer.b0.as_deref();
        assert_eq!(
            merge(&layer.w0[..3], b0, s, &config, &t),
            Err(MergeError::WeightLength {
                expected: 4,
                actual: 3
            })
        );
        assert_eq!(
            merge(&layer.w0, None, s, &config, &t),
            Err(MergeError::BiasPresence { has_bias: true })
        );
        assert_eq!(
            merge(&layer.w0, Some(&[1.0]), s, &config, &t),
            Err(MergeError::BiasLength {
                expected: 2,
                actual: 1
            })
        );
        let wide = shape(4, 1, true);
        assert!(matches!(
            merge(&layer.w0, Some(&[1.0]), wide, &config, &t),
            Err(MergeError::AdapterShape { .. })
        ));
        let too_deep = LayerConfig {
            b: AbOption::Lora(4),
            ..LayerConfig::NONE
        };
        let err = merge(&layer.w0, b0, s, &too_deep, &t).unwrap_err();
        assert_eq!(
            err,
            MergeError::RankTooLarge {
                slot: Slot::B,
                rank: 4,
                stored: 2
            }
        );
        assert!(err.to_string().contains("option B"));
        assert!(matches!(
            forward_reference(&[1.0; 3], 2, &layer.w0, b0, s, &config, &t),
            Err(MergeError::InputLength {
                expected: 4,
                actual: 3
            })
        ));
    }
}
