//! A GLoRA supernet: a base ONNX model with adapters on chosen linear layers, the
//! search space they are trained in, and the adapters' values.
//!
//! [`Supernet::compile`] imports and simplifies the base model, picks its linear layers
//! and inserts `GloraLinear` nodes; [`Supernet::save`] and [`Supernet::load`] move it
//! to and from a `NAME.glora/` directory ([`artifact`]). Loading rebuilds the adapted
//! graph from the base model the same way and fills in the stored adapters, so the
//! artifact holds only what training changes. For a chosen [`ModelConfig`],
//! [`Supernet::merged`] folds the adapters into plain weights (the deployable model)
//! and [`Supernet::unmerged`] writes each adapted layer with standard ops;
//! [`Supernet::run_adapted`] runs the adapted graph on the CPU executor, the reference
//! both are verified against.

pub mod artifact;
mod cached;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::exec::{CpuBackend, Session};
use crate::glora::{
    AdapterTensors, LayerShape, ModelConfig, ParamRange, SearchSpace, model_param_range,
    model_params, supernet_params, tensor_names,
};
use crate::ir::{Graph, Shape, Tensor};
use crate::passes::{self, AdaptedLayer, HeadSpec, LinearKind, LinearLayer};

pub use artifact::{
    ADAPTERS_FILE, BaseModel, FORMAT_VERSION, HEAD_FILE, LayerEntry, LayerKind, MANIFEST_FILE,
    Manifest, SpaceLists, WEIGHTS_FILE,
};

/// An adapted model and its search space.
#[derive(Clone, Debug)]
pub struct Supernet {
    /// The base model, simplified, with a `GloraLinear` node per adapted layer.
    pub graph: Graph,
    /// The adapted layers, in model order.
    pub layers: Vec<AdaptedLayer>,
    /// How each adapted layer computed its product in the base model, by layer order.
    pub kinds: Vec<LayerKind>,
    pub space: SearchSpace,
    /// The base ONNX file, absolute.
    pub base_path: PathBuf,
    /// SHA-256 of the base file, lowercase hex.
    pub base_sha256: String,
    /// The base model after the same simplification, without adapters.
    pub base: Graph,
    /// The chosen config, once there is one.
    pub config: Option<ModelConfig>,
    /// The classification head training attached, once there is one.
    pub head: Option<Head>,
    /// Base weights that full fine-tuning changed, by value name; already applied to
    /// `base` and `graph`.
    pub trained_weights: Vec<(String, Tensor)>,
    /// The `[height, width]` the image input was re-declared to at compile time.
    pub image_size: Option<[usize; 2]>,
}

/// A classification head and its weights.
#[derive(Clone, Debug)]
pub struct Head {
    pub spec: HeadSpec,
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Head {
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        vec![
            (passes::HEAD_WEIGHT.to_string(), self.weight.clone()),
            (passes::HEAD_BIAS.to_string(), self.bias.clone()),
        ]
    }

    /// Reads the head's tensors from a list of named tensors.
    pub fn from_tensors(spec: HeadSpec, tensors: &[(String, Tensor)]) -> anyhow::Result<Head> {
        let find = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .with_context(|| format!("head tensor {name} is missing"))
        };
        let head = Head {
            weight: find(passes::HEAD_WEIGHT)?,
            bias: find(passes::HEAD_BIAS)?,
            spec,
        };
        let (d, k) = (head.spec.dim, head.spec.num_classes);
        if head.weight.shape() != [d, k] || head.bias.shape() != [k] {
            bail!(
                "head tensors are {:?} and {:?}, the head needs [{d}, {k}] and [{k}]",
                head.weight.shape(),
                head.bias.shape()
            );
        }
        Ok(head)
    }
}

/// Replaces the tensors of `Const` weights of `g` by value name; every name must be a
/// weight of the same shape and type.
pub fn apply_weights(g: &mut Graph, weights: &[(String, Tensor)]) -> anyhow::Result<()> {
    for (name, t) in weights {
        let port = g
            .find_value(name)
            .with_context(|| format!("weight {name} is not a value of the model"))?;
        let node = g.node_mut(port.node);
        let old = node
            .op
            .weight()
            .with_context(|| format!("value {name} is not a weight"))?;
        if old.shape() != t.shape() || old.dtype() != t.dtype() {
            bail!(
                "weight {name} is {}{:?} in the model but {}{:?} in the file",
                old.dtype(),
                old.shape(),
                t.dtype(),
                t.shape()
            );
        }
        node.op = match node.op {
            crate::ir::Op::Param(_) => crate::ir::Op::Param(t.clone()),
            _ => crate::ir::Op::Const(t.clone()),
        };
    }
    Ok(())
}

/// Adapter parameter counts of a supernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    /// Entries of every stored adapter tensor.
    pub supernet: usize,
    /// The smallest and largest count a config of the search space reads.
    pub configs: ParamRange,
}

fn kind_of(kind: LinearKind) -> LayerKind {
    match kind {
        LinearKind::MatMul => LayerKind::MatMul,
        LinearKind::Gemm { .. } => LayerKind::Gemm,
    }
}

/// Imports an ONNX model, re-declares its image size when asked, and runs the
/// standard simplification on it.
fn import_simplified(model: &Path, image_size: Option<[usize; 2]>) -> anyhow::Result<Graph> {
    let mut g = crate::models::load_model(model)?;
    let Some([h, w]) = image_size else {
        passes::optimize(&mut g, &CpuBackend).with_context(|| model.display().to_string())?;
        return Ok(g);
    };
    let declared = g
        .inputs
        .first()
        .and_then(|&i| g.value_type(crate::ir::Port::new(i, 0)))
        .map(|t| t.shape.to_string())
        .unwrap_or_default();
    passes::set_image_size(&mut g, [h, w]).with_context(|| model.display().to_string())?;
    passes::optimize(&mut g, &CpuBackend).with_context(|| {
        format!(
            "{}: the model declares its input as {declared} and does not take {h}x{w} images",
            model.display()
        )
    })?;
    Ok(g)
}

/// Picks the base model's layers named in the manifest, in the manifest's order, and
/// checks that each still has the recorded shape.
fn recorded_layers(
    found: Vec<LinearLayer>,
    entries: &[LayerEntry],
    manifest_file: &Path,
    base: &Path,
) -> anyhow::Result<Vec<LinearLayer>> {
    let mut by_name: HashMap<String, LinearLayer> =
        found.into_iter().map(|l| (l.name.clone(), l)).collect();
    entries
        .iter()
        .map(|e| {
            let layer = by_name.remove(&e.name).with_context(|| {
                format!(
                    "{}: layer {:?} is not a linear layer of {}",
                    manifest_file.display(),
                    e.name,
                    base.display()
                )
            })?;
            let actual = (layer.d_in, layer.d_out, layer.bias.is_some(), kind_of(layer.kind));
            let recorded = (e.d_in, e.d_out, e.has_bias, e.kind);
            if actual != recorded {
                bail!(
                    "{}: layer {:?} is recorded as (d_in, d_out, bias, kind) = {recorded:?} but {} has {actual:?}",
                    manifest_file.display(),
                    e.name,
                    base.display()
                );
            }
            Ok(layer)
        })
        .collect()
}

/// A tensor of the given shape whose entries are all non-zero: magnitudes in
/// [0.01, 0.05] with random signs, small enough that a deep model's activations stay
/// in range whatever config reads them.
fn random_nonzero(shape: Vec<usize>, rng: &mut StdRng) -> anyhow::Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|_| {
            let magnitude: f32 = rng.random_range(0.01..=0.05);
            if rng.random_bool(0.5) {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect();
    Ok(Tensor::from_f32(shape, values)?)
}

impl Supernet {
    /// Adapts the linear layers of `model` whose names match `targets` (default: all)
    /// and not `exclude`, with factors stored for every rank in `ranks`. `seed` drives
    /// the initialisation of the up factors.
    pub fn compile(
        model: &Path,
        targets: Option<&str>,
        exclude: Option<&str>,
        ranks: &[usize],
        seed: u64,
        image_size: Option<[usize; 2]>,
    ) -> anyhow::Result<Supernet> {
        let space = SearchSpace::new(ranks.iter().copied()).context("--ranks")?;
        let base_path =
            std::fs::canonicalize(model).with_context(|| model.display().to_string())?;
        let base_sha256 = artifact::sha256_model(&base_path)?;
        let base = import_simplified(&base_path, image_size)?;
        let found = passes::find_linear_layers(&base);
        let chosen = passes::select_layers(found, targets, exclude)
            .with_context(|| model.display().to_string())?;
        let mut net = Supernet::adapt(base, chosen, space, seed, base_path, base_sha256)?;
        net.image_size = image_size;
        Ok(net)
    }

    fn adapt(
        base: Graph,
        chosen: Vec<LinearLayer>,
        space: SearchSpace,
        seed: u64,
        base_path: PathBuf,
        base_sha256: String,
    ) -> anyhow::Result<Supernet> {
        let kind_by_name: HashMap<String, LayerKind> = chosen
            .iter()
            .map(|l| (l.name.clone(), kind_of(l.kind)))
            .collect();
        let mut graph = base.clone();
        let layers = passes::insert_glora(&mut graph, &chosen, space.max_rank(), seed)?;
        let kinds = layers
            .iter()
            .map(|l| {
                kind_by_name
                    .get(&l.name)
                    .copied()
                    .with_context(|| format!("adapted layer {:?} was not selected", l.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Supernet {
            graph,
            layers,
            kinds,
            space,
            base_path,
            base_sha256,
            base,
            config: None,
            head: None,
            trained_weights: Vec::new(),
            image_size: None,
        })
    }

    /// Reads a supernet directory: checks `glora.json` against its schema and the base
    /// model against its recorded hash, rebuilds the adapted graph and loads the
    /// adapters.
    pub fn load(dir: &Path) -> anyhow::Result<Supernet> {
        let manifest = artifact::read_manifest(dir)?;
        let manifest_file = dir.join(MANIFEST_FILE);
        let space = manifest.search_space(&manifest_file)?;
        let base_path = artifact::check_base(&manifest, dir)?;
        let mut base = import_simplified(&base_path, manifest.image_size)?;
        let weights_file = dir.join(WEIGHTS_FILE);
        let trained_weights = if weights_file.is_file() {
            let w = crate::io::read_safetensors(&weights_file)?;
            apply_weights(&mut base, &w).with_context(|| weights_file.display().to_string())?;
            w
        } else {
            Vec::new()
        };
        let found = passes::find_linear_layers(&base);
        let chosen = recorded_layers(found, &manifest.layers, &manifest_file, &base_path)?;
        let mut net = Supernet::adapt(
            base,
            chosen,
            space,
            0,
            base_path,
            manifest.base_model.sha256.clone(),
        )?;
        net.load_adapters(dir)?;
        if let Some(config) = &manifest.config {
            net.check_config(config)
                .with_context(|| format!("{}: config", manifest_file.display()))?;
        }
        net.config = manifest.config;
        net.trained_weights = trained_weights;
        net.image_size = manifest.image_size;
        if let Some(spec) = manifest.head {
            let file = dir.join(HEAD_FILE);
            let tensors = crate::io::read_safetensors(&file)?;
            net.head = Some(
                Head::from_tensors(spec, &tensors).with_context(|| file.display().to_string())?,
            );
        }
        Ok(net)
    }

    /// Replaces the adapters with those in `DIR/adapters.safetensors`.
    fn load_adapters(&mut self, dir: &Path) -> anyhow::Result<()> {
        let loaded = artifact::layer_adapters(dir, &self.layer_entries(), self.space.max_rank())?;
        for (layer, adapters) in self.layers.iter().zip(&loaded) {
            passes::set_adapter_tensors(&mut self.graph, &layer.name, adapters)?;
        }
        Ok(())
    }

    /// What `glora.json` records for this supernet.
    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        let path = self.base_path.to_str().with_context(|| {
            format!(
                "{}: the base model's path is not UTF-8",
                self.base_path.display()
            )
        })?;
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            base_model: BaseModel {
                path: path.to_string(),
                sha256: self.base_sha256.clone(),
            },
            ranks: self.space.ranks().to_vec(),
            layers: self.layer_entries(),
            search_space: SpaceLists::of(&self.space),
            config: self.config.clone(),
            head: self.head.as_ref().map(|h| h.spec.clone()),
            image_size: self.image_size,
        })
    }

    pub fn layer_entries(&self) -> Vec<LayerEntry> {
        self.layers
            .iter()
            .zip(&self.kinds)
            .map(|(l, &kind)| LayerEntry {
                name: l.name.clone(),
                d_in: l.shape.d_in,
                d_out: l.shape.d_out,
                has_bias: l.shape.has_bias,
                kind,
            })
            .collect()
    }

    /// The stored adapters of every layer, named `<layer>.Ad` … `<layer>.E`.
    pub fn adapters(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(8 * self.layers.len());
        for layer in &self.layers {
            let tensors = passes::adapter_tensors(&self.graph, &layer.name)?;
            out.extend(
                tensor_names(&layer.name)
                    .into_iter()
                    .zip(tensors.into_tensors()),
            );
        }
        Ok(out)
    }

    /// Writes the supernet to `dir` (created, or replacing an earlier artifact).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        artifact::write_artifact(
            dir,
            &self.manifest()?,
            &self.adapters()?,
            &self.extra_files(),
        )
    }

    /// The files beside the adapters: the head's weights and fine-tuned base weights.
    pub fn extra_files(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        let mut extras = Vec::new();
        if let Some(h) = &self.head {
            extras.push((HEAD_FILE, h.tensors()));
        }
        if !self.trained_weights.is_empty() {
            extras.push((WEIGHTS_FILE, self.trained_weights.clone()));
        }
        extras
    }

    /// Gives the supernet a fresh classification head reading `features` (default:
    /// the model's first output), pooled by `pool` (default: `cls` for token
    /// sequences, `none` for vectors), with `num_classes` outputs. On a text model
    /// (one that takes `input_ids`), `cls` goes through the checkpoint's pooler where
    /// it has one (`pooler_output`, as transformers' sequence classifiers do), and
    /// `mean` averages only the tokens `attention_mask` marks.
    pub fn attach_new_head(
        &mut self,
        features: Option<&str>,
        pool: Option<passes::Pool>,
        num_classes: usize,
        seed: u64,
    ) -> anyhow::Result<()> {
        let mut g = self.graph.clone();
        crate::ir::infer::infer_types(&mut g)?;
        let has_input = |n: &str| g.inputs.iter().any(|&i| g.node(i).name == n);
        let text = has_input(crate::data::INPUT_IDS);
        let has_pooler = g
            .outputs
            .iter()
            .any(|&o| g.value(o).name == crate::models::POOLER_OUTPUT);
        let (features, pool) = match (features, pool) {
            (None, None | Some(passes::Pool::Cls)) if text && has_pooler => (
                crate::models::POOLER_OUTPUT.to_string(),
                Some(passes::Pool::None),
            ),
            (Some(f), p) => (f.to_string(), p),
            (None, p) => (passes::default_features(&g)?, p),
        };
        let rank = g
            .find_value(&features)
            .and_then(|p| g.value_type(p))
            .map_or(0, |t| t.shape.rank());
        let pool = pool.unwrap_or(passes::default_pool(rank));
        let mut spec = passes::plan_head(&g, &features, pool, num_classes)?;
        if pool == passes::Pool::Mean && text && has_input(crate::data::ATTENTION_MASK) {
            spec = passes::with_mask(&g, spec, crate::data::ATTENTION_MASK)?;
        }
        let (weight, bias) = passes::init_head(&spec, seed)?;
        self.head = Some(Head { spec, weight, bias });
        Ok(())
    }

    /// The `[C, H, W]` the model's image input declares, where known.
    pub fn image_dims(&self) -> [Option<usize>; 3] {
        let g = &self.graph;
        let dims = g
            .inputs
            .first()
            .and_then(|&i| g.value_type(crate::ir::Port::new(i, 0)))
            .map(|t| t.shape.dims().to_vec())
            .unwrap_or_default();
        let at = |i: usize| dims.get(i).and_then(|d| d.known());
        if dims.len() == 4 {
            [at(1), at(2), at(3)]
        } else {
            [None, None, None]
        }
    }

    /// The `[C, H, W]` of one training image: the declared channels with `image_size`
    /// as both sides when given, else the declared size; `None` when a dim is unknown.
    pub fn image_shape(&self, image_size: Option<usize>) -> Option<Vec<usize>> {
        match (self.image_dims(), image_size) {
            ([Some(c), _, _], Some(s)) => Some(vec![c, s, s]),
            ([Some(c), Some(h), Some(w)], None) => Some(vec![c, h, w]),
            _ => None,
        }
    }

    /// `g` with the head attached when there is one (its logits become the output).
    pub fn with_head(&self, mut g: Graph) -> anyhow::Result<Graph> {
        if let Some(h) = &self.head {
            crate::ir::infer::infer_types(&mut g)?;
            passes::attach_head(&mut g, &h.spec, h.weight.clone(), h.bias.clone())?;
        }
        Ok(g)
    }

    /// Fills every adapter tensor with random non-zero values, so that every option of
    /// every term changes the layer's output.
    pub fn randomize_adapters(&mut self, seed: u64) -> anyhow::Result<()> {
        let mut rng = StdRng::seed_from_u64(seed);
        let rank = self.space.max_rank();
        for layer in &self.layers {
            let tensors = AdapterTensors::expected_shapes(layer.shape, rank)
                .into_iter()
                .map(|s| random_nonzero(s, &mut rng))
                .collect::<anyhow::Result<Vec<Tensor>>>()?;
            let tensors: [Tensor; 8] = tensors
                .try_into()
                .map_err(|_| anyhow::anyhow!("eight tensors per layer"))?;
            let adapters = AdapterTensors::from_tensors(&layer.name, layer.shape, rank, tensors)?;
            passes::set_adapter_tensors(&mut self.graph, &layer.name, &adapters)?;
        }
        Ok(())
    }

    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }

    pub fn shapes(&self) -> Vec<(String, LayerShape)> {
        self.layers
            .iter()
            .map(|l| (l.name.clone(), l.shape))
            .collect()
    }

    /// Checks that `config` covers exactly the adapted layers with options of the
    /// search space.
    pub fn check_config(&self, config: &ModelConfig) -> anyhow::Result<()> {
        Ok(config.validate(&self.space, &self.layer_names())?)
    }

    /// A config with each layer's options drawn uniformly from the search space.
    pub fn random_config(&self, seed: u64) -> ModelConfig {
        let mut rng = StdRng::seed_from_u64(seed);
        self.layers
            .iter()
            .map(|l| (l.name.clone(), self.space.sample(&mut rng)))
            .collect()
    }

    pub fn param_counts(&self) -> ParamCounts {
        let rank = self.space.max_rank();
        ParamCounts {
            supernet: self
                .layers
                .iter()
                .map(|l| supernet_params(l.shape, rank))
                .sum(),
            configs: model_param_range(&self.space, self.layers.iter().map(|l| l.shape)),
        }
    }

    /// Adapter parameters `config` reads.
    pub fn config_params(&self, config: &ModelConfig) -> anyhow::Result<usize> {
        Ok(model_params(&self.shapes(), config)?)
    }

    /// The deployable model: every adapter folded into its layer's weight and bias
    /// under `config`, leaving the base model's ops.
    pub fn merged(&self, config: &ModelConfig) -> anyhow::Result<Graph> {
        self.check_config(config)?;
        let mut g = self.with_head(self.graph.clone())?;
        passes::reparameterize(&mut g, config)?;
        passes::eliminate_dead_code(&mut g)?;
        passes::rename_head_for_export(&mut g);
        Ok(g)
    }

    /// The adapted model under `config`, with each adapted layer written out in
    /// standard ops rather than folded.
    pub fn unmerged(&self, config: &ModelConfig) -> anyhow::Result<Graph> {
        self.check_config(config)?;
        let mut g = self.with_head(self.graph.clone())?;
        passes::expand_glora(&mut g, config)?;
        passes::eliminate_dead_code(&mut g)?;
        passes::rename_head_for_export(&mut g);
        Ok(g)
    }

    /// Runs the adapted graph under `config` on the CPU executor, with the graph's
    /// input shapes fixed to those of `inputs` so that shape computations fold.
    /// Returns the outputs and their names.
    pub fn run_adapted(
        &self,
        config: &ModelConfig,
        inputs: &[(String, Tensor)],
    ) -> anyhow::Result<(Vec<Tensor>, Vec<String>)> {
        self.check_config(config)?;
        let mut g = self.with_head(self.graph.clone())?;
        for (name, t) in inputs {
            g.set_input_shape(name, Shape::known(t.shape()))?;
        }
        passes::optimize(&mut g, &CpuBackend)?;
        let mut session = Session::new(&g, CpuBackend)?;
        session.set_glora_configs(config)?;
        let outputs = session.run(inputs)?;
        Ok((outputs, session.output_names()))
    }
}

#[cfg(test)]
mod tests;
