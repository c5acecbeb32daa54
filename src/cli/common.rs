//! What several subcommands share: input, device, data, layer and head flags (each defined
//! once, so that `train`, `search` and `pipeline` read the same data the same way),
//! loading a model with optional concrete input shapes, choosing inputs, and progress
//! spinners.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ir::{Graph, Shape, Tensor};
use crate::passes::Pool;
use crate::train::prepare::DataPlan;
use crate::verify::{concrete_input_shapes, parse_shape, random_inputs};

/// Flags that choose a model's inputs.
#[derive(Debug, Clone, clap::Args)]
pub struct InputFlags {
    /// Fix an input's shape, e.g. `--shape image=8x3x224x224` (repeatable; default:
    /// symbolic dimensions take --batch and --seq).
    #[arg(long = "shape", value_name = "NAME=DIMS", value_parser = parse_shape_arg)]
    pub shapes: Vec<(String, Vec<usize>)>,
    /// Read an input from a safetensors file, e.g. `--input image=x.safetensors`; the file
    /// holds a tensor of that name or exactly one tensor (repeatable; inputs not given
    /// get seeded random data, in `run` only with --random-inputs).
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Size of symbolic batch dimensions (axis 0) when no --shape fixes them (samples).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Size of other symbolic dimensions (e.g. sequence length, in tokens) when no
    /// --shape fixes them.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub seq: usize,
    /// Seed of the random inputs generated for inputs not given with --input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags that choose where a model runs.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceFlags {
    /// Where to run: `cpu`, `cuda` (the first GPU) or `cuda:N`.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: crate::exec::DeviceSpec,
    /// On a GPU, let cuBLAS use TF32 tensor cores for f32 matrix products (faster,
    /// about 1e-3 relative error; default: full f32).
    #[arg(long)]
    pub tf32: bool,
}

/// Flags that choose the labelled images and carve them into training and validation
/// splits. `train`, `search` and `pipeline` take this one definition: the search must
/// carve exactly the validation split training held out, and --k-shot and --limit
/// shrink that split too.
#[derive(Debug, Clone, clap::Args)]
pub struct DataFlags {
    /// The labelled data. Images: a digits CSV (.csv/.csv.gz), a safetensors file with
    /// x and y (or a folder with train.safetensors and test.safetensors), a folder of
    /// IDX files, or a folder of class subfolders of images. Texts: a CSV whose header
    /// names the text column, a TSV or a JSONL file, or a folder of class subfolders of
    /// text files. Folders may hold train/ and test/ when the data comes split. For
    /// `search`, the data the supernet was trained on.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// The test split, given apart from --data (same format and classes); without it
    /// `pipeline` carves one off (--test-fraction).
    #[arg(long, value_name = "PATH")]
    pub test_data: Option<PathBuf>,
    /// Text data: the column (CSV/TSV) or key (JSONL) holding the text.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,
    /// Text data: the column holding the second text of a pair task (default: none).
    #[arg(long, value_name = "NAME")]
    pub text_pair_column: Option<String>,
    /// Text data: the column holding the label (strings or integers).
    #[arg(long, default_value = "label", value_name = "NAME")]
    pub label_column: String,
    /// Text folders: merge subfolders into classes by name pattern, first match wins,
    /// e.g. 'easy-ham-*=ham,hard-ham-*=ham,spam-*=spam' (default: one class per
    /// subfolder).
    #[arg(long, value_name = "PATTERN=CLASS,...")]
    pub class_map: Option<String>,
    /// Text folders: only files with this extension are examples, e.g. txt (default:
    /// every file but hidden ones).
    #[arg(long, value_name = "EXT")]
    pub file_extension: Option<String>,
    /// Text data: the tokenizer.json, or the folder holding it (default: the model's
    /// folder, or the folder of its ONNX file).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Text data: tokens each text is cut to, special tokens included (default: the
    /// smallest of the model's and the tokenizer's limits and 512).
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
    /// Fraction (0–1) of the training images held out for validation (0: none); use
    /// the same value for training and search.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub val_fraction: f64,
    /// Seed of the validation carve and of the --limit and --k-shot picks; use the same
    /// one for training and search so that no validation image was trained on.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub split_seed: u64,
    /// Use at most N training images, a seeded class-stratified pick; the validation
    /// split shrinks in proportion (default: every image).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Use K training images per class (few-shot; overrides --limit); the validation
    /// split shrinks in proportion (default: every image).
    #[arg(long, value_name = "K")]
    pub k_shot: Option<usize>,
    /// Resize images to SIZE×SIZE pixels (default: the model's input size when it is
    /// fixed, else the data's size); `pipeline` also re-declares the model's image
    /// input at that size before compiling it (see `glora compile --image-size`).
    #[arg(long, value_name = "SIZE")]
    pub image_size: Option<usize>,
    /// Normalise images with the ImageNet mean and standard deviation, as most
    /// pretrained vision backbones expect (default: no normalisation).
    #[arg(long)]
    pub imagenet_norm: bool,
    /// What the model is trained for: classify (a head, one label per example) or
    /// causal-lm (next-token prediction on JSONL lines with "text", "prompt" and
    /// "response", or "messages" rendered by the model's chat template; the loss is
    /// taken on the text, the response or the assistant's turns). Default:
    /// causal-lm for a decoder, classify otherwise.
    #[arg(long, value_name = "TASK")]
    pub task: Option<crate::train::Task>,
    /// Causal-LM data: pack the examples end to end into sequences of --max-length
    /// tokens instead of padding each one (default: one example per sequence).
    #[arg(long)]
    pub pack: bool,
}

impl DataFlags {
    /// The carve these flags ask for, with no test split (`pipeline` adds its own),
    /// for a model that is a decoder or not.
    pub fn plan(&self, is_decoder: bool) -> anyhow::Result<DataPlan> {
        let task = crate::train::Task::resolve(self.task, is_decoder)?;
        if self.pack && task != crate::train::Task::CausalLm {
            anyhow::bail!("--pack packs language-model data; the task is {task}");
        }
        let class_map = self
            .class_map
            .as_deref()
            .map(crate::data::ClassMap::parse)
            .transpose()?;
        Ok(DataPlan {
            image_size: self.image_size,
            imagenet_norm: self.imagenet_norm,
            val_fraction: self.val_fraction,
            test_fraction: 0.0,
            split_seed: self.split_seed,
            k_shot: self.k_shot,
            limit: self.limit,
            test_limit: None,
            test_data: self.test_data.clone(),
            text: crate::train::prepare::TextPlan {
                columns: crate::data::TextColumns {
                    text: self.text_column.clone(),
                    pair: self.text_pair_column.clone(),
                    label: self.label_column.clone(),
                },
                folder: crate::data::FolderOptions {
                    class_map,
                    extension: self.file_extension.clone(),
                },
                tokenizer: self.tokenizer.clone(),
                max_length: self.max_length,
                causal_lm: task == crate::train::Task::CausalLm,
                pack: self.pack,
            },
        })
    }
}

/// Flags that choose which linear layers get GLoRA adapters (or, in `bench gemm`, are
/// measured); `compile`, `pipeline` and the benches share them.
#[derive(Debug, Clone, clap::Args)]
pub struct LayerFlags {
    /// Adapt only these linear layers: a comma-separated list of module names as
    /// PEFT's `target_modules` takes them (`query,value` picks every layer named
    /// `query` or ending in `.query` or `.value`), or a regular expression searched
    /// in the layer name (`layer\.[0-5]\.`). Default: every linear layer; `glora
    /// inspect MODEL` lists the names.
    #[arg(long, value_name = "NAMES|REGEX")]
    pub targets: Option<String>,
    /// Leave out linear layers named by this list or regular expression, as for
    /// --targets (default: none).
    #[arg(long, value_name = "NAMES|REGEX")]
    pub exclude: Option<String>,
}

/// Flags that place a new classification head on a model.
#[derive(Debug, Clone, clap::Args)]
pub struct HeadFlags {
    /// The value the new classification head reads: an output or node name of the
    /// model (default: the model's first output).
    #[arg(long, value_name = "OUTPUT_OR_NODE")]
    pub features: Option<String>,
    /// Pooling over tokens before the head: cls (token 0; a text model's pooler where
    /// it has one), mean (over the tokens; a text model's attended tokens only) or
    /// none (features are already [batch, dim]) (default: cls for [batch, tokens, dim]
    /// features, none for [batch, dim]).
    #[arg(long, value_name = "cls|mean|none")]
    pub pool: Option<Pool>,
}

impl DeviceFlags {
    /// Opens the device; a GPU that cannot be used is a one-line error.
    pub fn open(&self) -> anyhow::Result<crate::exec::Device> {
        if self.device == crate::exec::DeviceSpec::Cpu {
            return Ok(crate::exec::Device::Cpu);
        }
        let sp = spinner(format!("opening {}", self.device));
        let d = crate::exec::Device::open(
            self.device,
            crate::exec::CudaOptions {
                tf32: self.tf32,
                ..Default::default()
            },
        );
        sp.finish_and_clear();
        let d = d.map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))?;
        eprintln!("device: {}", d.describe());
        Ok(d)
    }
}

fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), String> {
    parse_shape(s).map_err(|e| e.to_string())
}

/// Imports an ONNX file, fixing the shapes of inputs named in `shapes`.
pub fn import(path: &Path, shapes: &[(String, Vec<usize>)]) -> anyhow::Result<Graph> {
    let sp = spinner(format!("importing {}", path.display()));
    let mut g = crate::models::load_model(path)?;
    sp.finish_and_clear();
    if !shapes.is_empty() {
        let known =
            concrete_input_shapes(&g, shapes, 1, 1).with_context(|| path.display().to_string())?;
        let bound = crate::verify::bound_symbols(&g, shapes);
        for (name, _, dims) in known
            .iter()
            .filter(|(n, _, _)| shapes.iter().any(|(s, _)| s == n))
        {
            g.set_input_shape(name, Shape::known(dims))?;
        }
        // Inputs that share a symbol with a given one take its size (the mask of
        // `--shape input_ids=2x9`); their other symbols stay symbolic.
        let others: Vec<(String, Shape)> = g
            .inputs
            .iter()
            .map(|&i| g.node(i))
            .filter(|n| !shapes.iter().any(|(s, _)| *s == n.name))
            .filter_map(|n| {
                let ty = n.outputs[0].ty.as_ref()?;
                let dims = ty
                    .shape
                    .dims()
                    .iter()
                    .map(|d| match d {
                        crate::ir::Dim::Sym(s) if bound.contains_key(s) => {
                            crate::ir::Dim::Known(bound[s])
                        }
                        d => d.clone(),
                    })
                    .collect();
                Some((n.name.clone(), Shape(dims)))
            })
            .collect();
        for (name, shape) in others {
            g.set_input_shape(&name, shape)?;
        }
        crate::ir::infer::infer_types(&mut g).with_context(|| path.display().to_string())?;
    }
    Ok(g)
}

/// Runs the standard simplification passes, evaluating constants on the CPU.
pub fn optimize(g: &mut Graph, path: &Path) -> anyhow::Result<Vec<crate::passes::PassReport>> {
    let sp = spinner("simplifying the graph".to_string());
    let r = crate::passes::optimize(g, &crate::exec::CpuBackend)
        .with_context(|| path.display().to_string());
    sp.finish_and_clear();
    r
}

/// The inputs for one run: files named by --input, random data for the rest, all with
/// concrete shapes. Also returns the shapes so that other runtimes can be prepared.
pub fn inputs(g: &Graph, flags: &InputFlags) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut given: Vec<(String, Tensor)> = Vec::new();
    for spec in &flags.inputs {
        let (name, file) = spec
            .split_once('=')
            .with_context(|| format!("--input '{spec}' is not NAME=FILE.safetensors"))?;
        let tensors = crate::io::read_safetensors(Path::new(file))?;
        let t = match tensors.iter().find(|(n, _)| n == name) {
            Some((_, t)) => t.clone(),
            None if tensors.len() == 1 => tensors[0].1.clone(),
            None => anyhow::bail!(
                "{file}: no tensor named '{name}' (and more than one tensor in the file)"
            ),
        };
        given.push((name.to_string(), t));
    }
    let mut shapes = flags.shapes.clone();
    for (n, t) in &given {
        shapes.retain(|(s, _)| s != n);
        shapes.push((n.clone(), t.shape().to_vec()));
    }
    let concrete = concrete_input_shapes(g, &shapes, flags.batch, flags.seq)?;
    let mut out = random_inputs(&concrete, flags.seed);
    crate::verify::apply_index_bounds(&mut out, &crate::verify::index_bounds(g));
    for (name, t) in given {
        let slot = out
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("every named input was resolved");
        slot.1 = t;
    }
    Ok(out)
}

/// A spinner on stderr for work that takes a while; hidden when stderr is not a terminal.
pub fn spinner(msg: String) -> ProgressBar {
    let sp = ProgressBar::new_spinner();
    sp.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    sp.set_message(msg);
    sp.enable_steady_tick(Duration::from_millis(120));
    sp
}

/// A progress bar over `n` steps on stderr.
pub fn bar(n: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// One-line statistics of a tensor: shape, dtype, min, max, mean, std.
pub fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    if v.is_empty() {
        return format!("{}{:?} (empty)", t.dtype(), t.shape());
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{}{:?}  min {min:.6}  max {max:.6}  mean {mean:.6}  std {:.6}",
        t.dtype(),
        t.shape(),
        var.sqrt()
    )
}
