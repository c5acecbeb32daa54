//! A plain Vision Transformer built directly in the IR, the architecture of the
//! PyTorch reference our benchmarks compare with: a strided Conv patch embedding,
//! a cls token and learned position embeddings, pre-norm blocks (multi-head
//! self-attention and a GELU MLP, each with a residual), a final LayerNorm and an
//! optional linear head on the cls token.
//!
//! Weights come from a seeded generator (truncated normal, std 0.02, for linear
//! layers and embeddings; zero biases; unit LayerNorm scales) and are all `Const`.
//! Linear layers are `MatMul` by a `[d_in, d_out]` weight plus an `Add` of the bias,
//! with weights named `blocks.{i}.attn.qkv.weight` and so on, so that
//! [`crate::passes::linear`] finds each of them under its PyTorch module name. The
//! graph reads `image` f32 `[batch, C, H, W]` and writes `features`
//! `[batch, tokens, dim]` and, with a head, `logits` `[batch, classes]`.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::ModelError;
use super::weights::truncated_normal;
use crate::ir::infer::infer_types;
use crate::ir::{
    BinaryOp, ConvAttrs, DType, Dim, GeluApprox, Graph, Op, Port, Shape, Tensor, TensorError,
    TensorType,
};

/// Standard deviation of the truncated normal that initialises weights.
const INIT_STD: f64 = 0.02;
/// LayerNorm epsilon, PyTorch's default.
const LN_EPSILON: f32 = 1e-5;
/// The symbolic batch dimension of the input and outputs.
const BATCH: &str = "batch";

/// The shape of a ViT. `image` is the side of a square input, split into
/// `(image / patch)²` patches; every block has `heads` attention heads over `dim`
/// features and an MLP of width `mlp`; `classes` adds a linear head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VitConfig {
    pub image: usize,
    pub channels: usize,
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp: usize,
    pub classes: Option<usize>,
}

impl VitConfig {
    /// The "vit-tiny-digits" of the PyTorch reference: 8×8 grey images, ten classes.
    pub fn tiny_digits() -> VitConfig {
        VitConfig {
            image: 8,
            channels: 1,
            patch: 2,
            dim: 64,
            depth: 4,
            heads: 4,
            mlp: 256,
            classes: Some(10),
        }
    }

    /// ViT-S/16 at 224×224 with the reference's 100-class head.
    pub fn vit_s() -> VitConfig {
        VitConfig {
            image: 224,
            channels: 3,
            patch: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp: 1536,
            classes: Some(100),
        }
    }

    /// ViT-B/16 at 224×224 with the reference's 100-class head.
    pub fn vit_b() -> VitConfig {
        VitConfig {
            dim: 768,
            heads: 12,
            mlp: 3072,
            ..VitConfig::vit_s()
        }
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image.checked_div(self.patch).unwrap_or(0)
    }

    /// Tokens per image: one per patch plus the cls token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    pub fn head_dim(&self) -> usize {
        self.dim.checked_div(self.heads).unwrap_or(0)
    }

    /// Number of weights (all of them trainable in PyTorch terms), or `None` when
    /// it does not fit a `usize`.
    pub fn parameter_count(&self) -> Option<usize> {
        let (c, p, d, m) = (self.channels, self.patch, self.dim, self.mlp);
        let n = self.grid().checked_mul(self.grid())?;
        let patch_embed = product(&[c, p, p, d])?.checked_add(d)?;
        let embeddings = n.checked_add(2)?.checked_mul(d)?;
        let norms = 4 * d;
        let attention = product(&[4, d, d])?.checked_add(4 * d)?;
        let mlp = product(&[2, d, m])?.checked_add(m)?.checked_add(d)?;
        let blocks = norms
            .checked_add(attention)?
            .checked_add(mlp)?
            .checked_mul(self.depth)?;
        let head = match self.classes {
            Some(k) => d.checked_add(1)?.checked_mul(k)?,
            None => 0,
        };
        [embeddings, blocks, 2 * d, head]
            .into_iter()
            .try_fold(patch_embed, usize::checked_add)
    }

    /// Checks that the configuration describes a network that can be built.
    pub fn validate(&self) -> Result<(), ModelError> {
        let sizes = [
            ("image", self.image),
            ("channels", self.channels),
            ("patch", self.patch),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp", self.mlp),
            ("classes", self.classes.unwrap_or(1)),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(ModelError::Config(format!("{name} must be at least 1")));
        }
        if !self.image.is_multiple_of(self.patch) {
            return Err(ModelError::Config(format!(
                "patch size {} does not divide image size {}",
                self.patch, self.image
            )));
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(ModelError::Config(format!(
                "{} heads do not divide dim {}",
                self.heads, self.dim
            )));
        }
        match self.parameter_count() {
            Some(n) if i64::try_from(n).is_ok() => Ok(()),
            _ => Err(ModelError::Config(
                "the network has too many weights to address".into(),
            )),
        }
    }

    fn input_type(&self) -> TensorType {
        let mut dims = vec![Dim::sym(BATCH)];
        dims.extend([self.channels, self.image, self.image].map(Dim::Known));
        TensorType::new(DType::F32, Shape(dims))
    }
}

fn product(xs: &[usize]) -> Option<usize> {
    xs.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x))
}

/// Builds the ViT described by `cfg` with weights drawn from `seed`; the same seed
/// always gives the same graph. Types are inferred and the graph is validated.
pub fn build_vit(cfg: &VitConfig, seed: u64) -> Result<Graph, ModelError> {
    cfg.validate()?;
    let mut b = Builder {
        g: Graph::new("vit"),
        rng: StdRng::seed_from_u64(seed),
    };
    let image = Port::new(b.g.add_input("image", cfg.input_type()), 0);
    let shared = Shared::new(&mut b, cfg);
    let mut x = b.embed(cfg, image)?;
    for i in 0..cfg.depth {
        x = b.block(cfg, &shared, i, x)?;
    }
    let features = b.layer_norm("norm", x, cfg.dim, Some("features"))?;
    b.g.outputs.push(features);
    if let Some(classes) = cfg.classes {
        let cls = b.op(
            "/head/Gather",
            Op::Gather { axis: 1 },
            &[features, shared.pick[0]],
        );
        let logits = b.linear("head", cls, cfg.dim, classes, Some("logits"))?;
        b.g.outputs.push(logits);
    }
    let mut g = b.g;
    infer_types(&mut g)?;
    g.validate()?;
    Ok(g)
}

/// Constants every block reads.
struct Shared {
    /// Scalar indices 0, 1, 2: q, k, v out of the stacked qkv, and the cls token.
    pick: [Port; 3],
    /// `[batch, tokens, 3, heads, head_dim]` with 0 copying the batch.
    qkv_shape: Port,
    /// `[batch, tokens, dim]` with 0 copying the batch.
    merge_shape: Port,
    /// `√head_dim`, the divisor of the attention scores.
    scale: Port,
}

impl Shared {
    fn new(b: &mut Builder, cfg: &VitConfig) -> Shared {
        let (t, d, h) = (cfg.tokens() as i64, cfg.dim as i64, cfg.heads as i64);
        let hd = cfg.head_dim() as i64;
        let pick = [0, 1, 2].map(|i| b.constant(&format!("vit.index_{i}"), Tensor::scalar_i64(i)));
        Shared {
            pick,
            qkv_shape: b.constant("vit.qkv_shape", Tensor::vec_i64(vec![0, t, 3, h, hd])),
            merge_shape: b.constant("vit.merge_shape", Tensor::vec_i64(vec![0, t, d])),
            scale: b.constant(
                "vit.attn_scale",
                Tensor::scalar_f32((cfg.head_dim() as f32).sqrt()),
            ),
        }
    }
}

/// The graph under construction and the generator its weights come from.
struct Builder {
    g: Graph,
    rng: StdRng,
}

fn add() -> Op {
    Op::Binary(BinaryOp::Add)
}

impl Builder {
    fn tensor(&mut self, name: &str, t: Result<Tensor, TensorError>) -> Result<Port, ModelError> {
        let t = t.map_err(|source| ModelError::Tensor {
            name: name.to_string(),
            source,
        })?;
        Ok(self.constant(name, t))
    }

    fn constant(&mut self, name: &str, t: Tensor) -> Port {
        Port::new(self.g.add_const(name, t), 0)
    }

    /// A weight drawn from the truncated normal.
    fn random(&mut self, name: &str, shape: Vec<usize>) -> Result<Port, ModelError> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| truncated_normal(&mut self.rng, INIT_STD))
            .collect();
        self.tensor(name, Tensor::from_f32(shape, values))
    }

    fn filled(&mut self, name: &str, len: usize, value: f32) -> Result<Port, ModelError> {
        self.tensor(name, Tensor::from_f32(vec![len], vec![value; len]))
    }

    fn op(&mut self, node: &str, op: Op, inputs: &[Port]) -> Port {
        self.op_as(node, op, inputs, &format!("{node}_output_0"))
    }

    fn op_as(&mut self, node: &str, op: Op, inputs: &[Port], value: &str) -> Port {
        let inputs: Vec<Option<Port>> = inputs.iter().copied().map(Some).collect();
        Port::new(self.g.add_op(node, op, &inputs, &[value]), 0)
    }

    /// `x · W + b` with W `[d_in, d_out]` named `{param}.weight`.
    fn linear(
        &mut self,
        param: &str,
        x: Port,
        d_in: usize,
        d_out: usize,
        value: Option<&str>,
    ) -> Result<Port, ModelError> {
        let w = self.random(&format!("{param}.weight"), vec![d_in, d_out])?;
        let bias = self.filled(&format!("{param}.bias"), d_out, 0.0)?;
        let mm = self.op(&format!("/{param}/MatMul"), Op::MatMul, &[x, w]);
        let node = format!("/{param}/Add");
        let value = value.map_or_else(|| format!("{node}_output_0"), str::to_string);
        Ok(self.op_as(&node, add(), &[mm, bias], &value))
    }

    fn layer_norm(
        &mut self,
        param: &str,
        x: Port,
        dim: usize,
        value: Option<&str>,
    ) -> Result<Port, ModelError> {
        let scale = self.filled(&format!("{param}.weight"), dim, 1.0)?;
        let bias = self.filled(&format!("{param}.bias"), dim, 0.0)?;
        let node = format!("/{param}/LayerNormalization");
        let value = value.map_or_else(|| format!("{node}_output_0"), str::to_string);
        let op = Op::LayerNorm {
            axis: -1,
            epsilon: LN_EPSILON,
        };
        Ok(self.op_as(&node, op, &[x, scale, bias], &value))
    }

    /// Patches → tokens, the cls token in front, position embeddings added:
    /// `[batch, tokens, dim]`.
    fn embed(&mut self, cfg: &VitConfig, image: Port) -> Result<Port, ModelError> {
        let (d, p) = (cfg.dim, cfg.patch);
        let w = self.random("patch_embed.proj.weight", vec![d, cfg.channels, p, p])?;
        let bias = self.filled("patch_embed.proj.bias", d, 0.0)?;
        let conv = ConvAttrs {
            kernel_shape: vec![p, p],
            strides: vec![p, p],
            group: 1,
            ..ConvAttrs::default()
        };
        let grid = self.op("/patch_embed/proj/Conv", Op::Conv(conv), &[image, w, bias]);
        let flat_shape = self.constant(
            "patch_embed.flat_shape",
            Tensor::vec_i64(vec![0, d as i64, -1]),
        );
        let flat = self.op(
            "/patch_embed/Reshape",
            Op::Reshape { allowzero: false },
            &[grid, flat_shape],
        );
        let patches = self.op(
            "/patch_embed/Transpose",
            Op::Transpose {
                perm: Some(vec![0, 2, 1]),
            },
            &[flat],
        );
        let cls = self.cls_tokens(d, image)?;
        let tokens = self.op("/Concat", Op::Concat { axis: 1 }, &[cls, patches]);
        let pos = self.random("pos_embed", vec![1, cfg.tokens(), d])?;
        Ok(self.op("/pos_embed/Add", add(), &[tokens, pos]))
    }

    /// The cls token expanded to `[batch, 1, dim]`, the batch read from the image.
    fn cls_tokens(&mut self, d: usize, image: Port) -> Result<Port, ModelError> {
        let cls = self.random("cls_token", vec![1, 1, d])?;
        let batch = self.op(
            "/cls_token/Shape",
            Op::Shape {
                start: 0,
                end: Some(1),
            },
            &[image],
        );
        let rest = self.constant("cls_token.rest_shape", Tensor::vec_i64(vec![1, d as i64]));
        let shape = self.op("/cls_token/Concat", Op::Concat { axis: 0 }, &[batch, rest]);
        Ok(self.op("/cls_token/Expand", Op::Expand, &[cls, shape]))
    }

    fn block(
        &mut self,
        cfg: &VitConfig,
        shared: &Shared,
        i: usize,
        x: Port,
    ) -> Result<Port, ModelError> {
        let scope = format!("blocks.{i}");
        let h = self.layer_norm(&format!("{scope}.norm1"), x, cfg.dim, None)?;
        let a = self.attention(cfg, shared, &scope, h)?;
        let x = self.op(&format!("/{scope}/Add"), add(), &[x, a]);
        let h = self.layer_norm(&format!("{scope}.norm2"), x, cfg.dim, None)?;
        let h = self.linear(&format!("{scope}.mlp.fc1"), h, cfg.dim, cfg.mlp, None)?;
        let gelu = Op::Gelu {
            approximate: GeluApprox::None,
        };
        let h = self.op(&format!("/{scope}.mlp/Gelu"), gelu, &[h]);
        let h = self.linear(&format!("{scope}.mlp.fc2"), h, cfg.mlp, cfg.dim, None)?;
        Ok(self.op(&format!("/{scope}/Add_1"), add(), &[x, h]))
    }

    /// Multi-head self-attention on `h` `[batch, tokens, dim]`, projection included.
    fn attention(
        &mut self,
        cfg: &VitConfig,
        shared: &Shared,
        scope: &str,
        h: Port,
    ) -> Result<Port, ModelError> {
        let d = cfg.dim;
        let at = format!("/{scope}.attn");
        let qkv = self.linear(&format!("{scope}.attn.qkv"), h, d, 3 * d, None)?;
        let split = self.op(
            &format!("{at}/Reshape"),
            Op::Reshape { allowzero: false },
            &[qkv, shared.qkv_shape],
        );
        // [3, batch, heads, tokens, head_dim]: q, k and v are its three rows.
        let stacked = self.op(
            &format!("{at}/Transpose"),
            Op::Transpose {
                perm: Some(vec![2, 0, 3, 1, 4]),
            },
            &[split],
        );
        let mut pick = |name: &str, index: Port| {
            self.op(
                &format!("{at}/Gather_{name}"),
                Op::Gather { axis: 0 },
                &[stacked, index],
            )
        };
        let q = pick("q", shared.pick[0]);
        let k = pick("k", shared.pick[1]);
        let v = pick("v", shared.pick[2]);
        let kt = self.op(
            &format!("{at}/Transpose_1"),
            Op::Transpose {
                perm: Some(vec![0, 1, 3, 2]),
            },
            &[k],
        );
        let scores = self.op(&format!("{at}/MatMul"), Op::MatMul, &[q, kt]);
        let scaled = self.op(
            &format!("{at}/Div"),
            Op::Binary(BinaryOp::Div),
            &[scores, shared.scale],
        );
        let weights = self.op(
            &format!("{at}/Softmax"),
            Op::Softmax { axis: -1 },
            &[scaled],
        );
        let mixed = self.op(&format!("{at}/MatMul_1"), Op::MatMul, &[weights, v]);
        let merged = self.op(
            &format!("{at}/Transpose_2"),
            Op::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[mixed],
        );
        let flat = self.op(
            &format!("{at}/Reshape_1"),
            Op::Reshape { allowzero: false },
            &[merged, shared.merge_shape],
        );
        self.linear(&format!("{scope}.attn.proj"), flat, d, d, None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;
    use crate::ir::NodeIndex;
    use crate::onnx::{ExportOptions, export_model, import_bytes};
    use crate::passes::find_linear_layers;
    use crate::verify::{TractModel, compare_outputs};
    use rand::RngExt;

    fn batch_dims(rest: &[usize]) -> Shape {
        let mut dims = vec![Dim::sym(BATCH)];
        dims.extend(rest.iter().map(|&d| Dim::Known(d)));
        Shape(dims)
    }

    fn output_type(g: &Graph, i: usize) -> (String, TensorType) {
        let v = g.value(g.outputs[i]);
        (v.name.clone(), v.ty.clone().expect("inferred type"))
    }

    /// Every float weight by name.
    fn float_weights(g: &Graph) -> BTreeMap<String, Tensor> {
        g.node_ids()
            .into_iter()
            .filter_map(|id| match &g.node(id).op {
                Op::Const(t) if t.dtype() == DType::F32 && t.rank() > 0 => {
                    Some((g.node(id).name.clone(), t.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn parameters(g: &Graph) -> usize {
        float_weights(g).values().map(Tensor::numel).sum()
    }

    /// Gives biases and LayerNorm parameters values away from their 0/1 start, so
    /// that a comparison also covers the paths they feed.
    fn perturb_vectors(g: &mut Graph, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let vectors: Vec<NodeIndex> = g
            .node_ids()
            .into_iter()
            .filter(|&id| matches!(&g.node(id).op, Op::Const(t) if t.dtype() == DType::F32 && t.rank() == 1))
            .collect();
        for id in vectors {
            let node = g.node_mut(id);
            let Op::Const(t) = &node.op else { continue };
            let offset = if node.name.ends_with(".weight") {
                1.0
            } else {
                0.0
            };
            let values = (0..t.numel())
                .map(|_| offset + rng.random_range(-0.5f32..0.5))
                .collect();
            node.op = Op::Const(Tensor::from_f32(t.shape().to_vec(), values).unwrap());
        }
    }

    fn random_image(cfg: &VitConfig, batch: usize, seed: u64) -> Vec<(String, Tensor)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = vec![batch, cfg.channels, cfg.image, cfg.image];
        let n = shape.iter().product();
        let values = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        vec![("image".into(), Tensor::from_f32(shape, values).unwrap())]
    }

    fn assert_close(names: &[String], ours: &[Tensor], reference: &[Tensor], what: &str) {
        for c in compare_outputs(names, ours, reference) {
            println!("{what}: {} max_abs {:e}", c.name, c.max_abs);
            assert!(c.within(1e-5), "{what}: {c:?}");
        }
    }

    #[test]
    fn tiny_digits_has_the_declared_interface() {
        let cfg = VitConfig::tiny_digits();
        let g = build_vit(&cfg, 0).unwrap();
        let input = g.node(g.inputs[0]);
        assert_eq!(input.name, "image");
        assert_eq!(
            input.outputs[0].ty,
            Some(TensorType::new(DType::F32, batch_dims(&[1, 8, 8])))
        );
        assert_eq!(g.outputs.len(), 2);
        assert_eq!(
            output_type(&g, 0),
            (
                "features".into(),
                TensorType::new(DType::F32, batch_dims(&[17, 64]))
            )
        );
        assert_eq!(
            output_type(&g, 1),
            (
                "logits".into(),
                TensorType::new(DType::F32, batch_dims(&[10]))
            )
        );
        let ops = g.op_histogram();
        assert_eq!(ops.get("LayerNormalization"), Some(&9));
        assert_eq!(ops.get("Gelu"), Some(&4));
        assert_eq!(ops.get("Softmax"), Some(&4));
        assert_eq!(ops.get("Conv"), Some(&1));
    }

    #[test]
    fn without_a_head_only_features_come_out() {
        let cfg = VitConfig {
            classes: None,
            ..VitConfig::tiny_digits()
        };
        let g = build_vit(&cfg, 0).unwrap();
        assert_eq!(g.outputs.len(), 1);
        assert_eq!(output_type(&g, 0).0, "features");
        assert!(find_linear_layers(&g).iter().all(|l| l.name != "head"));
    }

    #[test]
    fn our_executor_and_tract_agree_on_the_export_and_its_reimport() {
        let cfg = VitConfig::tiny_digits();
        let mut g = build_vit(&cfg, 7).unwrap();
        perturb_vectors(&mut g, 8);
        let inputs = random_image(&cfg, 2, 9);
        let ours = crate::exec::run_cpu(&g, &inputs).unwrap();
        assert_eq!(ours[0].shape(), &[2, 17, 64]);
        assert_eq!(ours[1].shape(), &[2, 10]);

        let bytes = export_model(&g, &ExportOptions::default())
            .unwrap()
            .encode_to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vit.onnx");
        std::fs::write(&path, &bytes).unwrap();
        let tract = TractModel::load(&path, &inputs).unwrap();
        assert_eq!(tract.output_names(), ["features", "logits"]);
        let reference = tract.run(&inputs).unwrap();
        assert_close(tract.output_names(), &ours, &reference, "ours vs tract");

        let back = import_bytes(&bytes, None, "vit.onnx").unwrap();
        back.validate().unwrap();
        let again = crate::exec::run_cpu(&back, &inputs).unwrap();
        assert_close(
            tract.output_names(),
            &again,
            &reference,
            "reimport vs tract",
        );
    }

    #[test]
    fn every_linear_layer_is_found_under_its_module_name() {
        let cfg = VitConfig::tiny_digits();
        let g = build_vit(&cfg, 0).unwrap();
        let layers = find_linear_layers(&g);
        let mut expected = Vec::new();
        for i in 0..cfg.depth {
            for (name, d_in, d_out) in [
                ("attn.qkv", 64, 192),
                ("attn.proj", 64, 64),
                ("mlp.fc1", 64, 256),
                ("mlp.fc2", 256, 64),
            ] {
                expected.push((format!("blocks.{i}.{name}"), d_in, d_out));
            }
        }
        expected.push(("head".into(), 64, 10));
        let found: Vec<(String, usize, usize)> = layers
            .iter()
            .map(|l| (l.name.clone(), l.d_in, l.d_out))
            .collect();
        assert_eq!(found, expected);
        assert_eq!(found.len(), 4 * cfg.depth + 1);
        assert!(layers.iter().all(|l| l.bias.is_some()));
    }

    #[test]
    fn weights_depend_on_the_seed_only() {
        let cfg = VitConfig::tiny_digits();
        let a = float_weights(&build_vit(&cfg, 3).unwrap());
        let b = float_weights(&build_vit(&cfg, 3).unwrap());
        let c = float_weights(&build_vit(&cfg, 4).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
        for name in ["blocks.0.attn.qkv.weight", "cls_token", "head.weight"] {
            assert_ne!(a[name], c[name], "{name}");
        }
    }

    #[test]
    fn initial_values_follow_the_recipe() {
        let g = build_vit(&VitConfig::tiny_digits(), 1).unwrap();
        let w = float_weights(&g);
        for name in ["blocks.2.norm1.weight", "norm.weight"] {
            assert!(w[name].to_f32_vec().iter().all(|&v| v == 1.0), "{name}");
        }
        for name in ["blocks.2.norm1.bias", "blocks.1.mlp.fc1.bias", "head.bias"] {
            assert!(w[name].to_f32_vec().iter().all(|&v| v == 0.0), "{name}");
        }
        // A normal truncated at ±2σ has standard deviation ≈ 0.880σ.
        let v = w["blocks.0.mlp.fc1.weight"].to_f32_vec();
        assert!(v.iter().all(|x| x.abs() <= 0.04));
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((std - 0.0176).abs() < 5e-4, "std {std}");
    }

    /// The ViT parameter count written out by hand.
    fn hand_count(
        c: usize,
        p: usize,
        n: usize,
        d: usize,
        depth: usize,
        m: usize,
        k: usize,
    ) -> usize {
        let block = 2 * 2 * d + 3 * d * d + 3 * d + d * d + d + d * m + m + m * d + d;
        c * p * p * d + d + d + (n + 1) * d + depth * block + 2 * d + d * k + k
    }

    #[test]
    fn parameter_count_matches_the_formula() {
        let cfg = VitConfig::tiny_digits();
        let g = build_vit(&cfg, 0).unwrap();
        let expected = hand_count(1, 2, 16, 64, 4, 256, 10);
        // The same figure from the PyTorch reference model.
        assert_eq!(expected, 202_186);
        assert_eq!(parameters(&g), expected);
        assert_eq!(cfg.parameter_count(), Some(expected));
        let headless = VitConfig {
            classes: None,
            ..cfg
        };
        let g = build_vit(&headless, 0).unwrap();
        assert_eq!(parameters(&g), hand_count(1, 2, 16, 64, 4, 256, 0));
        assert_eq!(headless.parameter_count(), Some(parameters(&g)));
    }

    #[test]
    fn vit_s_builds_and_infers() {
        let cfg = VitConfig::vit_s();
        let g = build_vit(&cfg, 0).unwrap();
        assert_eq!(
            output_type(&g, 0).1,
            TensorType::new(DType::F32, batch_dims(&[197, 384]))
        );
        assert_eq!(
            output_type(&g, 1).1,
            TensorType::new(DType::F32, batch_dims(&[100]))
        );
        // The PyTorch reference's ViT-S with a 100-class head.
        assert_eq!(parameters(&g), 21_704_164);
        assert_eq!(find_linear_layers(&g).len(), 4 * 12 + 1);
        assert_eq!(VitConfig::vit_b().parameter_count(), Some(85_875_556));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let base = VitConfig::tiny_digits();
        let cases = [
            (
                VitConfig {
                    patch: 3,
                    ..base.clone()
                },
                "does not divide image",
            ),
            (
                VitConfig {
                    heads: 3,
                    ..base.clone()
                },
                "do not divide dim",
            ),
            (
                VitConfig {
                    depth: 0,
                    ..base.clone()
                },
                "depth must be at least 1",
            ),
            (
                VitConfig {
                    patch: 0,
                    ..base.clone()
                },
                "patch must be at least 1",
            ),
            (
                VitConfig {
                    classes: Some(0),
                    ..base.clone()
                },
                "classes must be",
            ),
            (
                VitConfig {
                    dim: usize::MAX / 2,
                    heads: 1,
                    ..base.clone()
                },
                "too many weights",
            ),
        ];
        for (cfg, msg) in cases {
            let e = build_vit(&cfg, 0).unwrap_err().to_string();
            assert!(e.contains(msg), "{cfg:?}: {e}");
        }
    }
}
