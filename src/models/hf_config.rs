//! Reading a Hugging Face checkpoint folder's `config.json`: the `model_type` that
//! picks the family, the typed configuration each family deserialises from the same
//! JSON (serde defaults for absent keys, as transformers' own defaults), and the
//! pieces several families share: activations by their config spelling and the
//! label names of a fine-tuned checkpoint.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::ModelError;
use super::builder::Scope;
use crate::ir::{GeluApprox, Op, Port, Tensor, UnaryOp};

pub const CONFIG_FILE: &str = "config.json";

/// A parsed `config.json` with the file it came from.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub path: PathBuf,
    pub json: serde_json::Value,
    pub model_type: String,
}

impl HfConfig {
    /// Reads `dir/config.json`; `model_type` must be present.
    pub fn read(dir: &Path) -> Result<HfConfig, ModelError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::File {
            path: path.clone(),
            what: format!("cannot read: {e}"),
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::File {
                path: path.clone(),
                what: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::File {
                path: path.clone(),
                what: "no \"model_type\" string".into(),
            })?
            .to_string();
        Ok(HfConfig {
            path,
            json,
            model_type,
        })
    }

    /// The family's typed view of the same JSON.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, ModelError> {
        T::deserialize(&self.json).map_err(|e| ModelError::File {
            path: self.path.clone(),
            what: e.to_string(),
        })
    }

    /// An error about key `key` of this file.
    pub fn error(&self, key: &str, what: impl std::fmt::Display) -> ModelError {
        ModelError::File {
            path: self.path.clone(),
            what: format!("\"{key}\": {what}"),
        }
    }

    /// The label names of a fine-tuned checkpoint (`id2label`), in id order, when
    /// they are not transformers' placeholder `LABEL_0`, `LABEL_1`, ….
    pub fn label_names(&self) -> Option<Vec<String>> {
        let map = self.json.get("id2label")?.as_object()?;
        let mut pairs: Vec<(usize, String)> = map
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
            .collect();
        pairs.sort();
        let placeholder = pairs.iter().all(|(i, n)| *n == format!("LABEL_{i}"));
        (!pairs.is_empty() && !placeholder).then(|| pairs.into_iter().map(|(_, n)| n).collect())
    }
}

/// A hidden activation by its `config.json` spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    Relu,
    /// `x·σ(x)`: `silu`, `swish`.
    Silu,
    /// `x·σ(1.702·x)`: `quick_gelu`.
    QuickGelu,
}

impl Activation {
    pub const SPELLINGS: &'static str =
        "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, quick_gelu";

    pub fn parse(cfg: &HfConfig, key: &str, s: &str) -> Result<Activation, ModelError> {
        Ok(match s {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "quick_gelu" => Activation::QuickGelu,
            other => {
                return Err(cfg.error(
                    key,
                    format!(
                        "activation {other:?} is not supported (supported: {})",
                        Activation::SPELLINGS
                    ),
                ));
            }
        })
    }

    /// Emits the activation of `x` in scope `s`.
    pub fn apply(self, s: &mut Scope<'_, '_>, x: Port) -> Port {
        match self {
            Activation::Gelu => s.op(
                "Gelu",
                Op::Gelu {
                    approximate: GeluApprox::None,
                },
                &[x],
            ),
            Activation::GeluTanh => s.op(
                "Gelu",
                Op::Gelu {
                    approximate: GeluApprox::Tanh,
                },
                &[x],
            ),
            Activation::Relu => s.unary(UnaryOp::Relu, x),
            Activation::Silu => {
                let g = s.unary(UnaryOp::Sigmoid, x);
                s.mul(x, g)
            }
            Activation::QuickGelu => {
                let k = s.constant("quick_gelu_scale", Tensor::scalar_f32(1.702));
                let kx = s.mul(x, k);
                let g = s.unary(UnaryOp::Sigmoid, kx);
                s.mul(x, g)
            }
        }
    }
}

// Defaults of `config.json` keys, named by value, for serde's `default = "…"`.
pub fn d2() -> usize {
    2
}
pub fn d3() -> usize {
    3
}
pub fn d6() -> usize {
    6
}
pub fn d12() -> usize {
    12
}
pub fn d512() -> usize {
    512
}
pub fn d768() -> usize {
    768
}
pub fn d3072() -> usize {
    3072
}
pub fn gelu() -> String {
    "gelu".into()
}
pub fn yes() -> bool {
    true
}

pub fn default_init_range() -> f64 {
    0.02
}

pub fn default_layer_norm_eps() -> f64 {
    1e-12
}
