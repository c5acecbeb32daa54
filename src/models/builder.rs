//! The graph builder model front ends emit IR through: a graph under construction, a
//! weight source, and a name scope. `builder.root().pp("encoder").pp("layer.0")`
//! scopes names the way a Hugging Face module tree does, so a linear layer's weight
//! is fetched as `encoder.layer.0.attention.self.query.weight`, its IR value carries
//! that name, and [`crate::passes::find_linear_layers`] names the layer
//! `encoder.layer.0.attention.self.query`: the module path PEFT's `target_modules`
//! speaks of, the same string by construction.

use std::collections::HashMap;

use super::ModelError;
use super::weights::{Init, WeightSource};
use crate::ir::{BinaryOp, DType, Graph, Op, Port, ReduceOp, Tensor, TensorType, UnaryOp};

/// A graph under construction with its weight source.
pub struct GraphBuilder<'w> {
    pub g: Graph,
    weights: &'w mut dyn WeightSource,
    /// Uses of each node name so far, to keep node names unique.
    node_names: HashMap<String, usize>,
}

impl<'w> GraphBuilder<'w> {
    pub fn new(name: &str, weights: &'w mut dyn WeightSource) -> GraphBuilder<'w> {
        GraphBuilder {
            g: Graph::new(name),
            weights,
            node_names: HashMap::new(),
        }
    }

    /// The unscoped root.
    pub fn root(&mut self) -> Scope<'_, 'w> {
        Scope {
            b: self,
            path: String::new(),
        }
    }

    pub fn input(&mut self, name: &str, ty: TensorType) -> Port {
        Port::new(self.g.add_input(name, ty), 0)
    }

    /// Whether the weight source holds `name` (an optional module such as a pooler).
    pub fn has(&self, name: &str) -> bool {
        self.weights.has(name)
    }

    fn bias_added(&self, layer: &str) -> bool {
        self.weights.bias_added(layer)
    }

    fn unique_node(&mut self, base: String) -> String {
        let n = self.node_names.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}_{}", *n - 1)
        }
    }
}

/// A name scope over a builder.
pub struct Scope<'a, 'w> {
    b: &'a mut GraphBuilder<'w>,
    path: String,
}

/// `path.leaf`, or `leaf` at the root.
fn join(path: &str, leaf: &str) -> String {
    if path.is_empty() {
        leaf.to_string()
    } else {
        format!("{path}.{leaf}")
    }
}

impl<'w> Scope<'_, 'w> {
    /// A child scope, `self.path + "." + name`.
    pub fn pp(&mut self, name: &str) -> Scope<'_, 'w> {
        Scope {
            path: join(&self.path, name),
            b: self.b,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full name of `leaf` in this scope.
    pub fn name(&self, leaf: &str) -> String {
        join(&self.path, leaf)
    }

    pub fn has(&self, leaf: &str) -> bool {
        self.b.has(&self.name(leaf))
    }

    pub fn graph(&self) -> &Graph {
        &self.b.g
    }

    /// The weight `leaf` of this scope, as a `Const` node named by its full name.
    pub fn weight(&mut self, leaf: &str, shape: &[usize], init: Init) -> Result<Port, ModelError> {
        let name = self.name(leaf);
        let t = self.b.weights.tensor(&name, shape, init)?;
        Ok(Port::new(self.b.g.add_const(name, t), 0))
    }

    /// A weight already fetched (by [`Scope::weight_tensor`]) as the `Const` node of
    /// its full name.
    pub fn weight_node(&mut self, leaf: &str, t: Tensor) -> Port {
        let name = self.name(leaf);
        Port::new(self.b.g.add_const(name, t), 0)
    }

    /// The raw tensor of weight `leaf`, for builders that reshape it before use.
    pub fn weight_tensor(
        &mut self,
        leaf: &str,
        shape: &[usize],
        init: Init,
    ) -> Result<Tensor, ModelError> {
        let name = self.name(leaf);
        self.b.weights.tensor(&name, shape, init)
    }

    /// A constant that is not a weight, named `{scope}.{leaf}`.
    pub fn constant(&mut self, leaf: &str, t: Tensor) -> Port {
        let name = self.b.unique_node(self.name(leaf));
        Port::new(self.b.g.add_const(name, t), 0)
    }

    /// An op node named `/{scope as path}/{kind}` (made unique), one output.
    pub fn op(&mut self, kind: &str, op: Op, inputs: &[Port]) -> Port {
        let node = self.b.unique_node(self.node_base(kind));
        let value = format!("{node}_output_0");
        self.op_named(&node, op, inputs, &value)
    }

    /// An op node whose output value has a chosen name (a graph output).
    pub fn op_as(&mut self, kind: &str, op: Op, inputs: &[Port], value: &str) -> Port {
        let node = self.b.unique_node(self.node_base(kind));
        self.op_named(&node, op, inputs, value)
    }

    /// `/encoder/layer.0/attention/Kind`, PyTorch's exporter's style of node name.
    fn node_base(&self, kind: &str) -> String {
        if self.path.is_empty() {
            format!("/{kind}")
        } else {
            format!("/{}/{kind}", self.path.replace('.', "/"))
        }
    }

    fn op_named(&mut self, node: &str, op: Op, inputs: &[Port], value: &str) -> Port {
        let inputs: Vec<Option<Port>> = inputs.iter().copied().map(Some).collect();
        Port::new(self.b.g.add_op(node, op, &inputs, &[value]), 0)
    }

    pub fn binary(&mut self, op: BinaryOp, a: Port, b: Port) -> Port {
        let kind = match op {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Pow => "Pow",
            BinaryOp::Equal => "Equal",
        };
        self.op(kind, Op::Binary(op), &[a, b])
    }

    pub fn add(&mut self, a: Port, b: Port) -> Port {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&mut self, a: Port, b: Port) -> Port {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn unary(&mut self, op: UnaryOp, x: Port) -> Port {
        self.op(&format!("{op:?}"), Op::Unary(op), &[x])
    }

    pub fn cast(&mut self, x: Port, to: DType) -> Port {
        self.op("Cast", Op::Cast { to }, &[x])
    }

    pub fn reshape(&mut self, x: Port, dims: &[i64]) -> Port {
        let shape = self.constant("shape", Tensor::vec_i64(dims.to_vec()));
        self.op("Reshape", Op::Reshape { allowzero: false }, &[x, shape])
    }

    pub fn transpose(&mut self, x: Port, perm: &[usize]) -> Port {
        self.op(
            "Transpose",
            Op::Transpose {
                perm: Some(perm.to_vec()),
            },
            &[x],
        )
    }

    pub fn unsqueeze(&mut self, x: Port, axes: &[i64]) -> Port {
        self.op(
            "Unsqueeze",
            Op::Unsqueeze {
                axes: axes.to_vec(),
            },
            &[x],
        )
    }

    /// `x[..., index, ...]` along `axis`, the axis removed.
    pub fn pick(&mut self, x: Port, axis: i64, index: i64) -> Port {
        let i = self.constant("index", Tensor::scalar_i64(index));
        self.op("Gather", Op::Gather { axis }, &[x, i])
    }

    /// Rows `0..sequence` of `table` (absolute position embeddings), the sequence
    /// length read from axis 1 of `ids` at run time.
    pub fn first_rows(&mut self, table: Port, ids: Port) -> Port {
        let len = self.op(
            "Shape",
            Op::Shape {
                start: 1,
                end: Some(2),
            },
            &[ids],
        );
        let zero = self.constant("start", Tensor::vec_i64(vec![0]));
        let axis = self.constant("axes", Tensor::vec_i64(vec![0]));
        self.op("Slice", Op::Slice, &[table, zero, len, axis])
    }

    /// A Hugging Face `nn.Linear` in this scope: `weight` `[d_out, d_in]` (PyTorch's
    /// layout), stored transposed as the `[d_in, d_out]` constant that `MatMul(x, W)`
    /// reads, and an optional `bias`. The value names keep the module's names.
    pub fn linear(
        &mut self,
        x: Port,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init_std: f64,
    ) -> Result<Port, ModelError> {
        let w = self.weight_tensor("weight", &[d_out, d_in], Init::Normal(init_std))?;
        self.linear_of(x, &w, bias)
    }

    /// A linear layer in this scope whose `[d_out, d_in]` weight was fetched
    /// elsewhere (a language model head tied to the token embeddings); its constant is
    /// still named `{scope}.weight`, so the layer keeps its module path.
    pub fn linear_of(&mut self, x: Port, w: &Tensor, bias: bool) -> Result<Port, ModelError> {
        let (d_out, d_in) = (w.shape()[0], w.shape()[1]);
        let wt = transpose_2d(w);
        let name = self.name("weight");
        let wt = Tensor::from_f32(vec![d_in, d_out], wt).map_err(|source| ModelError::Tensor {
            name: name.clone(),
            source,
        })?;
        let w = Port::new(self.b.g.add_const(name, wt), 0);
        let y = self.op("MatMul", Op::MatMul, &[x, w]);
        if !bias && !self.b.bias_added(&self.path) {
            return Ok(y);
        }
        let b = self.weight("bias", &[d_out], Init::Zeros)?;
        Ok(self.add(y, b))
    }

    /// `nn.LayerNorm` over the last axis, `weight` and `bias` in this scope.
    pub fn layer_norm(&mut self, x: Port, dim: usize, epsilon: f32) -> Result<Port, ModelError> {
        let scale = self.weight("weight", &[dim], Init::Ones)?;
        let shift = self.weight("bias", &[dim], Init::Zeros)?;
        Ok(self.op(
            "LayerNormalization",
            Op::LayerNorm { axis: -1, epsilon },
            &[x, scale, shift],
        ))
    }

    /// RMSNorm over the last axis (LLaMA's, T5's): `x / sqrt(mean(x²) + ε) · weight`,
    /// `weight` in this scope. Composed of plain ops, so every runtime and the
    /// autodiff pass take it as it is.
    pub fn rms_norm(&mut self, x: Port, dim: usize, epsilon: f32) -> Result<Port, ModelError> {
        let scale = self.weight("weight", &[dim], Init::Ones)?;
        let sq = self.mul(x, x);
        let mean = self.op(
            "ReduceMean",
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: Some(vec![-1]),
                keepdims: true,
                noop_with_empty_axes: false,
            },
            &[sq],
        );
        let eps = self.constant("epsilon", Tensor::scalar_f32(epsilon));
        let var = self.add(mean, eps);
        let rms = self.unary(UnaryOp::Sqrt, var);
        let inv = self.unary(UnaryOp::Reciprocal, rms);
        let normed = self.mul(x, inv);
        Ok(self.mul(normed, scale))
    }

    /// `nn.Embedding` lookup: `weight` `[rows, dim]` gathered by `ids`.
    pub fn embedding(
        &mut self,
        ids: Port,
        rows: usize,
        dim: usize,
        init_std: f64,
    ) -> Result<Port, ModelError> {
        let table = self.weight("weight", &[rows, dim], Init::Normal(init_std))?;
        Ok(self.op("Gather", Op::Gather { axis: 0 }, &[table, ids]))
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose_2d(t: &Tensor) -> Vec<f32> {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let v = t.to_f32_vec();
    let mut out = vec![0.0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}
