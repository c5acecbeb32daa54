//! Per-layer and whole-model GLoRA configurations.
//!
//! A [`LayerConfig`] fixes one option for each of the terms A to E of one adapted
//! layer; a [`ModelConfig`] maps layer names, in model order, to their configs. The
//! search produces a `ModelConfig`, writes it as JSON
//! (`{"layers": {"<name>": {"A": "LoRA_4", ...}}}`), and merge and export read it back;
//! [`ModelConfig::validate`] checks a loaded one against the model's layers and the
//! supernet's search space.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::options::{AbOption, COption, DeOption, Slot};
use super::space::SearchSpace;

/// The options of the five terms of one adapted layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    #[serde(rename = "A")]
    pub a: AbOption,
    #[serde(rename = "B")]
    pub b: AbOption,
    #[serde(rename = "C")]
    pub c: COption,
    #[serde(rename = "D")]
    pub d: DeOption,
    #[serde(rename = "E")]
    pub e: DeOption,
}

impl LayerConfig {
    /// Every term off: the layer computes exactly its base linear map.
    pub const NONE: LayerConfig = LayerConfig {
        a: AbOption::None,
        b: AbOption::None,
        c: COption::None,
        d: DeOption::None,
        e: DeOption::None,
    };

    /// The string form of one term's option, as configs and logs write it.
    pub fn option_string(&self, slot: Slot) -> String {
        match slot {
            Slot::A => self.a.to_string(),
            Slot::B => self.b.to_string(),
            Slot::C => self.c.to_string(),
            Slot::D => self.d.to_string(),
            Slot::E => self.e.to_string(),
        }
    }

    /// The LoRA rank each term reads, for the terms that have one.
    pub fn lora_ranks(&self) -> impl Iterator<Item = (Slot, usize)> {
        [
            (Slot::A, self.a.rank()),
            (Slot::B, self.b.rank()),
            (Slot::C, self.c.rank()),
        ]
        .into_iter()
        .filter_map(|(slot, rank)| rank.map(|r| (slot, r)))
    }

    /// The largest LoRA rank any term reads; 0 when no term is a LoRA option.
    pub fn max_rank(&self) -> usize {
        self.lora_ranks().map(|(_, r)| r).max().unwrap_or(0)
    }
}

impl fmt::Display for LayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "A={} B={} C={} D={} E={}",
            self.a, self.b, self.c, self.d, self.e
        )
    }
}

/// A config that does not fit the model or the search space.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid GLoRA config JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the config names layer {layer:?}, which is not an adapted layer of the model")]
    UnknownLayer { layer: String },
    #[error("adapted layer {layer:?} has no entry in the config")]
    MissingLayer { layer: String },
    #[error(
        "layer {layer:?}, option {slot}: rank {rank} of {option:?} is not in the supernet's ranks {ranks:?}"
    )]
    RankNotInSpace {
        layer: String,
        slot: Slot,
        option: String,
        rank: usize,
        ranks: Vec<usize>,
    },
    #[error("layer {layer:?}, option {slot}: {option:?} is not in the search space {allowed:?}")]
    OptionNotInSpace {
        layer: String,
        slot: Slot,
        option: String,
        allowed: Vec<String>,
    },
}

/// Layer name → [`LayerConfig`], kept in the order the layers were inserted (model
/// order), which is also the order JSON is written and read in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelConfig {
    layers: Vec<(String, LayerConfig)>,
}

impl ModelConfig {
    pub fn new() -> ModelConfig {
        ModelConfig::default()
    }

    /// Sets the config of `layer`, keeping its position if it is already present, and
    /// returns the config it replaced.
    pub fn insert(&mut self, layer: impl Into<String>, config: LayerConfig) -> Option<LayerConfig> {
        let layer = layer.into();
        match self.layers.iter_mut().find(|(name, _)| *name == layer) {
            Some((_, slot)) => Some(std::mem::replace(slot, config)),
            None => {
                self.layers.push((layer, config));
                None
            }
        }
    }

    pub fn get(&self, layer: &str) -> Option<&LayerConfig> {
        self.layers
            .iter()
            .find(|(name, _)| name == layer)
            .map(|(_, config)| config)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &LayerConfig)> {
        self.layers
            .iter()
            .map(|(name, config)| (name.as_str(), config))
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Checks that the config covers exactly `layer_names` and that every option is
    /// one `space` offers. Reports the first problem, naming the layer and term.
    pub fn validate<S: AsRef<str>>(
        &self,
        space: &SearchSpace,
        layer_names: &[S],
    ) -> Result<(), ConfigError> {
        let known: HashSet<&str> = layer_names.iter().map(|n| n.as_ref()).collect();
        for (layer, config) in &self.layers {
            if !known.contains(layer.as_str()) {
                return Err(ConfigError::UnknownLayer {
                    layer: layer.clone(),
                });
            }
            check_in_space(layer, config, space)?;
        }
        for name in layer_names {
            let name = name.as_ref();
            if self.get(name).is_none() {
                return Err(ConfigError::MissingLayer {
                    layer: name.to_string(),
                });
            }
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<ModelConfig, ConfigError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Pretty-printed JSON, one layer per block, in layer order.
    pub fn to_json(&self) -> String {
        // Serialising strings and maps of strings into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn check_in_space(
    layer: &str,
    config: &LayerConfig,
    space: &SearchSpace,
) -> Result<(), ConfigError> {
    for slot in Slot::ALL {
        let option = config.option_string(slot);
        let allowed = space.option_names(slot);
        if allowed.contains(&option) {
            continue;
        }
        let rank = config
            .lora_ranks()
            .find(|(s, _)| *s == slot)
            .map(|(_, r)| r);
        return Err(match rank {
            Some(rank) => ConfigError::RankNotInSpace {
                layer: layer.to_string(),
                slot,
                option,
                rank,
                ranks: space.ranks().to_vec(),
            },
            None => ConfigError::OptionNotInSpace {
                layer: layer.to_string(),
                slot,
                option,
                allowed,
            },
        });
    }
    Ok(())
}

impl FromIterator<(String, LayerConfig)> for ModelConfig {
    fn from_iter<I: IntoIterator<Item = (String, LayerConfig)>>(iter: I) -> ModelConfig {
        let mut config = ModelConfig::new();
        for (layer, layer_config) in iter {
            config.insert(layer, layer_config);
        }
        config
    }
}

/// The `layers` object, serialised in order.
struct LayersRef<'a>(&'a [(String, LayerConfig)]);

impl Serialize for LayersRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (layer, config) in self.0 {
            map.serialize_entry(layer, config)?;
        }
        map.end()
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("layers", &LayersRef(&self.layers))?;
        map.end()
    }
}

/// The `layers` object read in document order; a repeated name is an error rather
/// than a silent overwrite.
struct OrderedLayers(Vec<(String, LayerConfig)>);

impl<'de> Deserialize<'de> for OrderedLayers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedLayersVisitor)
    }
}

struct OrderedLayersVisitor;

impl<'de> Visitor<'de> for OrderedLayersVisitor {
    type Value = OrderedLayers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object mapping layer names to {\"A\": .., \"B\": .., \"C\": .., \"D\": .., \"E\": ..}")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<OrderedLayers, M::Error> {
        let mut layers: Vec<(String, LayerConfig)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(layer) = map.next_key::<String>()? {
            let config = map
                .next_value::<LayerConfig>()
                .map_err(|e| de::Error::custom(format!("layer {layer:?}: {e}")))?;
            if !seen.insert(layer.clone()) {
                return Err(de::Error::custom(format!("layer {layer:?} appears twice")));
            }
            layers.push((layer, config));
        }
        Ok(OrderedLayers(layers))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelConfigFile {
    layers: OrderedLayers,
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = ModelConfigFile::deserialize(deserializer)?;
        Ok(ModelConfig {
            layers: file.layers.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_layer() -> LayerConfig {
        LayerConfig {
            a: AbOption::Lora(4),
            b: AbOption::None,
            c: COption::Vector,
            d: DeOption::Constant,
            e: DeOption::None,
        }
    }

    #[test]
    fn layer_config_json_uses_the_reference_strings() {
        let json = serde_json::to_string(&sample_layer()).unwrap();
        assert_eq!(
            json,
            r#"{"A":"LoRA_4","B":"none","C":"vector","D":"constant","E":"none"}"#
        );
        let back: LayerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample_layer());
    }

    #[test]
    fn layer_config_rejects_missing_and_extra_terms() {
        let missing = r#"{"A":"none","B":"none","C":"none","D":"none"}"#;
        assert!(serde_json::from_str::<LayerConfig>(missing).is_err());
        let extra = r#"{"A":"none","B":"none","C":"none","D":"none","E":"none","F":"none"}"#;
        assert!(serde_json::from_str::<LayerConfig>(extra).is_err());
    }

    fn two_layer_config() -> ModelConfig {
        [
            ("blocks.1.fc".to_string(), sample_layer()),
            ("blocks.0.qkv".to_string(), LayerConfig::NONE),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn model_config_round_trips_and_keeps_order() {
        let config = two_layer_config();
        let json = config.to_json();
        // Insertion order, not alphabetical order, survives the trip.
        let first = json.find("blocks.1.fc").unwrap();
        let second = json.find("blocks.0.qkv").unwrap();
        assert!(first < second, "{json}");
        let back = ModelConfig::from_json(&json).unwrap();
        assert_eq!(back, config);
        let names: Vec<&str> = back.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["blocks.1.fc", "blocks.0.qkv"]);
    }

    #[test]
    fn model_config_reads_the_documented_form() {
        let text = r#"{"layers": {"fc1": {"A":"LoRA_4","B":"none","C":"vector","D":"constant","E":"none"}}}"#;
        let config = ModelConfig::from_json(text).unwrap();
        assert_eq!(config.len(), 1);
        assert_eq!(config.get("fc1"), Some(&sample_layer()));
    }

    #[test]
    fn json_errors_name_the_layer() {
        let text =
            r#"{"layers": {"fc1": {"A":"none","B":"none","C":"constant","D":"none","E":"none"}}}"#;
        let msg = ModelConfig::from_json(text).unwrap_err().to_string();
        assert!(msg.contains("fc1") && msg.contains("constant"), "{msg}");

        let twice = r#"{"layers": {"fc1": {"A":"none","B":"none","C":"none","D":"none","E":"none"},
                                     "fc1": {"A":"none","B":"none","C":"none","D":"none","E":"none"}}}"#;
        let msg = ModelConfig::from_json(twice).unwrap_err().to_string();
        assert!(msg.contains("fc1") && msg.contains("twice"), "{msg}");

        assert!(ModelConfig::from_json(r#"{"layer": {}}"#).is_err());
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut config = two_layer_config();
        let old = config.insert("blocks.1.fc", LayerConfig::NONE);
        assert_eq!(old, Some(sample_layer()));
        assert_eq!(config.len(), 2);
        assert_eq!(config.iter().next().unwrap().0, "blocks.1.fc");
        assert_eq!(config.get("blocks.1.fc"), Some(&LayerConfig::NONE));
    }

    #[test]
    fn validation_accepts_a_matching_config() {
        let space = SearchSpace::default();
        two_layer_config()
            .validate(&space, &["blocks.0.qkv", "blocks.1.fc"])
            .unwrap();
    }

    #[test]
    fn validation_names_unknown_and_missing_layers() {
        let space = SearchSpace::default();
        let config = two_layer_config();
        match config.validate(&space, &["blocks.0.qkv"]) {
            Err(ConfigError::UnknownLayer { layer }) => assert_eq!(layer, "blocks.1.fc"),
            other => panic!("expected an unknown layer, got {other:?}"),
        }
        match config.validate(&space, &["blocks.0.qkv", "blocks.1.fc", "head.pre"]) {
            Err(e @ ConfigError::MissingLayer { .. }) => {
                assert!(e.to_string().contains("head.pre"), "{e}")
            }
            other => panic!("expected a missing layer, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_layer_and_term_of_a_rank_outside_the_space() {
        let space = SearchSpace::new([2, 8]).unwrap();
        let mut config = ModelConfig::new();
        config.insert(
            "attn.proj",
            LayerConfig {
                c: COption::Lora(4),
                ..LayerConfig::NONE
            },
        );
        let err = config.validate(&space, &["attn.proj"]).unwrap_err();
        match &err {
            ConfigError::RankNotInSpace {
                layer, slot, rank, ..
            } => {
                assert_eq!(layer, "attn.proj");
                assert_eq!(*slot, Slot::C);
                assert_eq!(*rank, 4);
            }
            other => panic!("expected a rank error, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("attn.proj") && msg.contains("LoRA_4") && msg.contains("[2, 8]"));
    }

    #[test]
    fn max_rank_reads_the_lora_terms() {
        let config = LayerConfig {
            a: AbOption::Lora(2),
            c: COption::Lora(8),
            ..LayerConfig::NONE
        };
        assert_eq!(config.max_rank(), 8);
        assert_eq!(LayerConfig::NONE.max_rank(), 0);
        assert_eq!(config.to_string(), "A=LoRA_2 B=none C=LoRA_8 D=none E=none");
    }
}
