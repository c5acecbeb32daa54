//! Where a model builder's weights come from, behind one trait: the safetensors files
//! of a Hugging Face checkpoint folder (one file or shards listed in
//! `model.safetensors.index.json`, memory-mapped, f32/f16/bf16), or a seeded random
//! initialisation for tests and benchmarks. Builders ask for a tensor by its Hugging
//! Face name and shape and get f32 values; the source checks that the stored shape is
//! the one the configuration implies, so a checkpoint that does not match its
//! `config.json` fails on the first tensor that differs, by name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use safetensors::{Dtype, SafeTensors};

use super::ModelError;
use crate::ir::Tensor;

/// How a random source fills a tensor; a checkpoint ignores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Truncated normal with this standard deviation.
    Normal(f64),
    Zeros,
    Ones,
    /// Every entry this value.
    Fill(f32),
}

/// A provider of named f32 weights.
pub trait WeightSource {
    /// The tensor called `name` (a Hugging Face parameter name without the task
    /// model's prefix), which must have `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ModelError>;
    /// Whether the source holds `name` (a random source holds everything it is asked
    /// for only when `optional` parts are wanted; see [`RandomWeights::without`]).
    fn has(&self, name: &str) -> bool;
    /// Where the weights come from, for messages.
    fn describe(&self) -> String;
    /// Whether linear layer `layer` (a module path) has a bias here that its
    /// configuration does not give it: an adapter folded into a bias-less layer.
    fn bias_added(&self, _layer: &str) -> bool {
        false
    }
}

/// Seeded random weights. Each tensor's values depend only on the seed and its name,
/// so the same model comes out whatever order a builder asks in.
pub struct RandomWeights {
    seed: u64,
    /// Names (by suffix) this source reports as absent, to build variants without an
    /// optional part (a pooler).
    absent: Vec<String>,
}

impl RandomWeights {
    pub fn new(seed: u64) -> RandomWeights {
        RandomWeights {
            seed,
            absent: Vec::new(),
        }
    }

    /// The same source, reporting every name that starts with `prefix` as absent.
    pub fn without(mut self, prefix: &str) -> RandomWeights {
        self.absent.push(prefix.to_string());
        self
    }
}

/// FNV-1a, so that a tensor's stream does not depend on std's hasher.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A normal sample with standard deviation `std`, redrawn until it lies within two
/// standard deviations (Box–Muller on two uniforms).
pub fn truncated_normal(rng: &mut StdRng, std: f64) -> f32 {
    loop {
        // 1 − U lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        if z.abs() <= 2.0 {
            return (z * std) as f32;
        }
    }
}

impl WeightSource for RandomWeights {
    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ModelError> {
        let n: usize = shape.iter().product();
        let values = match init {
            Init::Normal(std) => {
                let mut rng = StdRng::seed_from_u64(self.seed ^ name_hash(name));
                (0..n).map(|_| truncated_normal(&mut rng, std)).collect()
            }
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Fill(v) => vec![v; n],
        };
        Tensor::from_f32(shape.to_vec(), values).map_err(|source| ModelError::Tensor {
            name: name.to_string(),
            source,
        })
    }

    fn has(&self, name: &str) -> bool {
        !self.absent.iter().any(|p| name.starts_with(p.as_str()))
    }

    fn describe(&self) -> String {
        format!("random weights (seed {})", self.seed)
    }
}

/// A source that hands out another's tensors and keeps a copy of each under the
/// name it was asked for: building a model through it records a checkpoint of that
/// model (tests write random checkpoint folders this way).
pub struct RecordingWeights<W: WeightSource> {
    pub inner: W,
    pub seen: Vec<(String, Tensor)>,
}

impl<W: WeightSource> RecordingWeights<W> {
    pub fn new(inner: W) -> RecordingWeights<W> {
        RecordingWeights {
            inner,
            seen: Vec::new(),
        }
    }
}

impl<W: WeightSource> WeightSource for RecordingWeights<W> {
    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ModelError> {
        let t = self.inner.tensor(name, shape, init)?;
        self.seen.push((name.to_string(), t.clone()));
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// One memory-mapped safetensors file and the tensors in it.
struct MappedFile {
    path: PathBuf,
    map: Mmap,
    /// Offset of the data section in the file.
    data_start: usize,
    tensors: HashMap<String, StoredTensor>,
}

/// Where one tensor lies in a mapped file.
#[derive(Clone)]
struct StoredTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range within the data section.
    range: (usize, usize),
}

impl MappedFile {
    fn open(path: &Path) -> Result<MappedFile, ModelError> {
        let file_err = |what: String| ModelError::File {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(|e| file_err(format!("cannot open: {e}")))?;
        // SAFETY: the file is only read; a checkpoint changed under a running process
        // is outside what any loader can guard against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| file_err(format!("cannot map: {e}")))?;
        let (header, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| file_err(format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header;
        let data_len = map.len().saturating_sub(data_start);
        let mut tensors = HashMap::new();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            if a > b || b > data_len {
                return Err(file_err(format!(
                    "tensor '{name}' lies outside the file (bytes {a}..{b} of {data_len})"
                )));
            }
            tensors.insert(
                name,
                StoredTensor {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: (a, b),
                },
            );
        }
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
            data_start,
            tensors,
        })
    }

    fn f32_values(
        &self,
        name: &str,
        dtype: Dtype,
        range: (usize, usize),
    ) -> Result<Vec<f32>, ModelError> {
        let bytes = &self.map[self.data_start + range.0..self.data_start + range.1];
        // The mapped bytes carry no alignment guarantee: decode element by element.
        let values = match dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::File {
                    path: self.path.clone(),
                    what: format!("tensor '{name}' is {other:?}; weights must be F32, F16 or BF16"),
                });
            }
        };
        Ok(values)
    }
}

/// The weights of a Hugging Face checkpoint folder.
pub struct SafetensorsWeights {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// Name → index into `files`.
    index: HashMap<String, usize>,
    /// The prefix a task model puts before the base model's names (`bert.` in a
    /// `BertForSequenceClassification` checkpoint), found on first use.
    prefixes: Vec<String>,
}

/// The JSON index of a sharded checkpoint.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsWeights {
    /// Opens `dir/model.safetensors`, or the shards named by
    /// `dir/model.safetensors.index.json`. `prefixes` are the task-model prefixes to
    /// try (`["bert."]`) when a name is not found as it is.
    pub fn open(dir: &Path, prefixes: &[&str]) -> Result<SafetensorsWeights, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let shard_names: Vec<String> = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::File {
                path: index_path.clone(),
                what: format!("cannot read: {e}"),
            })?;
            let idx: ShardIndex = serde_json::from_str(&text).map_err(|e| ModelError::File {
                path: index_path.clone(),
                what: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
            let mut names: Vec<String> = idx.weight_map.into_values().collect();
            names.sort();
            names.dedup();
            for n in &names {
                if n.contains('/') || n.contains('\\') || n.starts_with('.') {
                    return Err(ModelError::File {
                        path: index_path.clone(),
                        what: format!("shard name {n:?} is not a file name in the folder"),
                    });
                }
            }
            names
        } else if single.is_file() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(ModelError::File {
                path: dir.to_path_buf(),
                what: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            });
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for n in &shard_names {
            let f = MappedFile::open(&dir.join(n))?;
            for name in f.tensors.keys() {
                index.insert(name.clone(), files.len());
            }
            files.push(f);
        }
        Ok(SafetensorsWeights {
            dir: dir.to_path_buf(),
            files,
            index,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        })
    }

    /// The stored name of `name`: as it is, or under one of the task prefixes.
    fn resolve(&self, name: &str) -> Option<String> {
        if self.index.contains_key(name) {
            return Some(name.to_string());
        }
        self.prefixes
            .iter()
            .map(|p| format!("{p}{name}"))
            .find(|n| self.index.contains_key(n))
    }

    /// Every stored tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }
}

impl WeightSource for SafetensorsWeights {
    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor, ModelError> {
        let stored = self.resolve(name).ok_or_else(|| ModelError::File {
            path: self.dir.clone(),
            what: format!("the checkpoint has no tensor '{name}'"),
        })?;
        let file = &self.files[self.index[&stored]];
        let StoredTensor {
            dtype,
            shape: found,
            range,
        } = file.tensors[&stored].clone();
        if found != shape {
            return Err(ModelError::File {
                path: file.path.clone(),
                what: format!("tensor '{stored}' is {found:?} but config.json implies {shape:?}"),
            });
        }
        let values = file.f32_values(&stored, dtype, range)?;
        Tensor::from_f32(shape.to_vec(), values).map_err(|source| ModelError::Tensor {
            name: stored,
            source,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}
