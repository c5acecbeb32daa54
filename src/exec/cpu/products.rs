//! The matrix products of a training step, run through the very kernels the CPU
//! executor runs them with, so that `glora bench gemm` measures our own rate and not
//! that of a separate GEMM. A [`MatrixProduct`] names one product: a GLoRA layer's
//! forward, input gradient or weight gradient in the layer's weight layout, a batched
//! MatMul between two activations (attention), or a plain row-major product. Shapes
//! come from `crate::bench::gemm`, which reads them off a model's graph or the
//! command line; [`PreparedProduct`] holds seeded operands for one and runs it, and
//! the caller times the runs.
//!
//! Each product goes through the same call as in the executor: the forward through
//! `gemm_f32` (Gemm with `transB`, `[d_out, d_in]` weights) or `matmul_f32` (MatMul,
//! `[d_in, d_out]` weights) as `glora.rs` does, the input gradient `dy·W0` and the
//! weight gradient `dyᵀ·x` through `gemm_into` with the operand views
//! `glora_grad.rs` builds, and batched products through `matmul_f32`, which spreads
//! the batch across the thread pool. The forward's bias (copied into the output
//! before the product) is left out: it is not part of the product.

use crate::ir::{DType, GemmAttrs, WeightLayout};

use super::glora::Dims;
use super::glora_grad::{product_in_weight_layout, transposed, weight_view};
use super::matmul::{self, MatRef, gemm_into};
use super::value::{CpuValue, OpResult};

/// What a product is in a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProductKind {
    /// `y = x·W0ᵀ`: `[B·T, d_in] × [d_in, d_out]`.
    Forward,
    /// `dx = dy·W0`: `[B·T, d_out] × [d_out, d_in]`.
    InputGrad,
    /// `dyᵀ·x`, the weight-shaped gradient A LoRA takes: `[d_out, B·T] × [B·T, d_in]`.
    WeightGrad,
    /// `Q·Kᵀ` per batch entry and head: `T × d_head × T`.
    AttentionScores,
    /// `P·V` per batch entry and head: `T × T × d_head`.
    AttentionValues,
    /// Another product of two activations, batched or not.
    Batched,
    /// A product given by its shape alone, row-major operands.
    Plain,
}

impl ProductKind {
    /// A short description for tables.
    pub fn describe(self) -> &'static str {
        match self {
            ProductKind::Forward => "forward [B·T,d_in]×[d_in,d_out]",
            ProductKind::InputGrad => "input grad [B·T,d_out]×[d_out,d_in]",
            ProductKind::WeightGrad => "weight grad [d_out,B·T]×[B·T,d_in]",
            ProductKind::AttentionScores => "attention Q·Kᵀ (B·heads × T×d_head×T)",
            ProductKind::AttentionValues => "attention P·V (B·heads × T×T×d_head)",
            ProductKind::Batched => "batched MatMul of two activations",
            ProductKind::Plain => "given shape, row-major",
        }
    }

    /// A stable lowercase name for JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProductKind::Forward => "forward",
            ProductKind::InputGrad => "input_grad",
            ProductKind::WeightGrad => "weight_grad",
            ProductKind::AttentionScores => "attention_scores",
            ProductKind::AttentionValues => "attention_values",
            ProductKind::Batched => "batched",
            ProductKind::Plain => "plain",
        }
    }

    fn is_linear(self) -> bool {
        matches!(
            self,
            ProductKind::Forward | ProductKind::InputGrad | ProductKind::WeightGrad
        )
    }
}

/// One product `batch × ([m, k] × [k, n])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatrixProduct {
    pub kind: ProductKind,
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// W0's stored layout, for the three linear-layer kinds.
    pub layout: Option<WeightLayout>,
}

impl MatrixProduct {
    /// A linear layer's product of `kind` for `rows` input rows (B·T).
    pub fn linear(
        kind: ProductKind,
        rows: usize,
        d_in: usize,
        d_out: usize,
        layout: WeightLayout,
    ) -> MatrixProduct {
        let (m, k, n) = match kind {
            ProductKind::InputGrad => (rows, d_out, d_in),
            ProductKind::WeightGrad => (d_out, rows, d_in),
            _ => (rows, d_in, d_out),
        };
        MatrixProduct {
            kind,
            batch: 1,
            m,
            k,
            n,
            layout: Some(layout),
        }
    }

    /// A plain `[m, k] × [k, n]` product of row-major operands.
    pub fn plain(m: usize, k: usize, n: usize) -> MatrixProduct {
        MatrixProduct {
            kind: ProductKind::Plain,
            batch: 1,
            m,
            k,
            n,
            layout: None,
        }
    }

    /// Floating-point operations: two per multiply-add.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.k as f64 * self.n as f64
    }

    /// `MxKxN`, with `B×` in front when batched.
    pub fn shape(&self) -> String {
        let mkn = format!("{}x{}x{}", self.m, self.k, self.n);
        if self.batch > 1 {
            format!("{}×{mkn}", self.batch)
        } else {
            mkn
        }
    }

    /// The layer's `(d_in, d_out, rows)` for the linear kinds.
    fn layer_dims(&self) -> (usize, usize, usize) {
        match self.kind {
            ProductKind::InputGrad => (self.n, self.k, self.m),
            ProductKind::WeightGrad => (self.n, self.m, self.k),
            _ => (self.k, self.n, self.m),
        }
    }
}

/// Seeded values in [-0.5, 0.5): deterministic, and not all equal, so the kernels
/// cannot take a shortcut.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) % 1000) as f32) / 1000.0 - 0.5
        })
        .collect()
}

/// A product with its operands allocated, ready to run again and again.
pub struct PreparedProduct {
    product: MatrixProduct,
    a: CpuValue,
    b: CpuValue,
    /// The row-major buffers the backward kernels read.
    a_rows: Vec<f32>,
    b_rows: Vec<f32>,
}

impl PreparedProduct {
    /// Allocates and fills the operands of `p`.
    pub fn new(p: MatrixProduct) -> anyhow::Result<PreparedProduct> {
        let err = |e: super::value::OpError| anyhow::anyhow!("product {}: {}", p.shape(), e.0);
        let mut a_rows = Vec::new();
        let mut b_rows = Vec::new();
        let (a, b) = if p.kind.is_linear() {
            let (d_in, d_out, rows) = p.layer_dims();
            let layout = p.layout.unwrap_or(WeightLayout::OutIn);
            let w_dims = match layout {
                WeightLayout::OutIn => [d_out, d_in],
                WeightLayout::InOut => [d_in, d_out],
            };
            let w = values(d_in * d_out, 2);
            let (x_len, x_dims) = match p.kind {
                // dy for both gradients; x as well for the weight gradient.
                ProductKind::Forward => (rows * d_in, [rows, d_in]),
                _ => (rows * d_out, [rows, d_out]),
            };
            let x = values(x_len, 1);
            match p.kind {
                ProductKind::InputGrad => b_rows = w.clone(),
                ProductKind::WeightGrad => b_rows = values(rows * d_in, 3),
                _ => {}
            }
            a_rows = x.clone();
            (
                CpuValue::from_f32(x, &x_dims, DType::F32).map_err(err)?,
                CpuValue::from_f32(w, &w_dims, DType::F32).map_err(err)?,
            )
        } else {
            let a = values(p.batch * p.m * p.k, 1);
            let b = values(p.batch * p.k * p.n, 2);
            let dims = |r, c| {
                if p.batch > 1 {
                    vec![p.batch, r, c]
                } else {
                    vec![r, c]
                }
            };
            (
                CpuValue::from_f32(a, &dims(p.m, p.k), DType::F32).map_err(err)?,
                CpuValue::from_f32(b, &dims(p.k, p.n), DType::F32).map_err(err)?,
            )
        };
        Ok(PreparedProduct {
            product: p,
            a,
            b,
            a_rows,
            b_rows,
        })
    }

    pub fn product(&self) -> &MatrixProduct {
        &self.product
    }

    /// Runs the product once, allocating its output as the executor does.
    pub fn run(&self) -> anyhow::Result<()> {
        let p = &self.product;
        self.run_inner()
            .map_err(|e| anyhow::anyhow!("product {}: {}", p.shape(), e.0))
    }

    fn run_inner(&self) -> OpResult<()> {
        let p = &self.product;
        if !p.kind.is_linear() {
            return matmul::matmul_f32(&self.a, &self.b).map(drop);
        }
        let (d_in, d_out, rows) = p.layer_dims();
        let layout = p.layout.unwrap_or(WeightLayout::OutIn);
        let dims = Dims {
            d_in,
            d_out,
            layout,
        };
        match (p.kind, layout) {
            (ProductKind::Forward, WeightLayout::OutIn) => {
                let attrs = GemmAttrs {
                    trans_b: true,
                    ..GemmAttrs::default()
                };
                matmul::gemm_f32(&attrs, &self.a, &self.b, None, (rows, d_out, d_in)).map(drop)
            }
            (ProductKind::Forward, WeightLayout::InOut) => {
                matmul::matmul_f32(&self.a, &self.b).map(drop)
            }
            (ProductKind::InputGrad, _) => {
                let mut dx = vec![0f32; rows * d_in];
                gemm_into(
                    &mut dx,
                    (rows, d_in, d_out),
                    MatRef::row_major(&self.a_rows, d_out),
                    weight_view(&self.b_rows, dims),
                    1.0,
                    None,
                    true,
                )
            }
            _ => {
                let mut dw = vec![0f32; d_out * d_in];
                product_in_weight_layout(
                    &mut dw,
                    dims,
                    rows,
                    transposed(MatRef::row_major(&self.a_rows, d_out)),
                    MatRef::row_major(&self.b_rows, d_in),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind and layout runs, and the linear kinds map the layer's dims onto
    /// M, K, N as the shapes say.
    #[test]
    fn every_kind_runs_and_linear_shapes_follow_the_layer() {
        let (rows, d_in, d_out) = (6, 4, 5);
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let f = MatrixProduct::linear(ProductKind::Forward, rows, d_in, d_out, layout);
            let g = MatrixProduct::linear(ProductKind::InputGrad, rows, d_in, d_out, layout);
            let w = MatrixProduct::linear(ProductKind::WeightGrad, rows, d_in, d_out, layout);
            assert_eq!((f.m, f.k, f.n), (rows, d_in, d_out));
            assert_eq!((g.m, g.k, g.n), (rows, d_out, d_in));
            assert_eq!((w.m, w.k, w.n), (d_out, rows, d_in));
            for p in [f, g, w] {
                assert_eq!(p.flops(), 2.0 * 120.0);
                PreparedProduct::new(p).unwrap().run().unwrap();
            }
        }
        let batched = MatrixProduct {
            kind: ProductKind::AttentionScores,
            batch: 4,
            m: 3,
            k: 2,
            n: 3,
            layout: None,
        };
        assert_eq!(batched.shape(), "4×3x2x3");
        assert_eq!(batched.flops(), 2.0 * 4.0 * 18.0);
        PreparedProduct::new(batched).unwrap().run().unwrap();
        PreparedProduct::new(MatrixProduct::plain(3, 2, 5))
            .unwrap()
            .run()
            .unwrap();
    }
}
