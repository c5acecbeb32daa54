//! What a training run trains: the GLoRA supernet (a random config per layer per
//! step), one fixed config (a file or a named method: LoRA, SSF, BitFit), the head
//! alone, or every weight of the base model. Also which adapter tensors a config
//! reads, so that a step updates only the tensors that took part in it (the others
//! have no gradient, as in the reference training, and keep their optimiser state).

use std::fmt;
use std::str::FromStr;

use crate::glora::{AbOption, COption, DeOption, LayerConfig, ModelConfig};

/// A training method.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Uniformly random config per layer per step, from the seeded step RNG.
    Supernet,
    /// One config for every step.
    Fixed(ModelConfig),
    /// Only the classification head trains; the base model is frozen, no adapters.
    HeadOnly,
    /// Every weight of the base model and the head train; no adapters.
    Full,
}

/// The named methods that `--mode` accepts besides `supernet`, `fixed`, `head-only`
/// and `full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Supernet,
    /// Needs `--config FILE`.
    Fixed,
    /// B as LoRA at the largest rank, everything else none.
    Lora,
    /// Scale and shift: A, D and E as vectors.
    Ssf,
    /// The bias term E as a vector.
    Bitfit,
    HeadOnly,
    Full,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        Ok(match s {
            "supernet" => Method::Supernet,
            "fixed" => Method::Fixed,
            "lora" => Method::Lora,
            "ssf" => Method::Ssf,
            "bitfit" => Method::Bitfit,
            "head-only" => Method::HeadOnly,
            "full" => Method::Full,
            other => {
                return Err(format!(
                    "unknown mode '{other}' (expected supernet, fixed, lora, ssf, bitfit, head-only or full)"
                ));
            }
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Supernet => "supernet",
            Method::Fixed => "fixed",
            Method::Lora => "lora",
            Method::Ssf => "ssf",
            Method::Bitfit => "bitfit",
            Method::HeadOnly => "head-only",
            Method::Full => "full",
        })
    }
}

/// The per-layer config of a named method, at LoRA rank `rank`.
pub fn preset_config(method: Method, rank: usize) -> Option<LayerConfig> {
    let none = LayerConfig::NONE;
    match method {
        Method::Lora => Some(LayerConfig {
            b: AbOption::Lora(rank),
            ..none
        }),
        Method::Ssf => Some(LayerConfig {
            a: AbOption::Vector,
            d: DeOption::Vector,
            e: DeOption::Vector,
            ..none
        }),
        Method::Bitfit => Some(LayerConfig {
            e: DeOption::Vector,
            ..none
        }),
        _ => None,
    }
}

/// The same config for every layer in `layers`.
pub fn uniform_config<'a>(
    layers: impl IntoIterator<Item = &'a str>,
    config: LayerConfig,
) -> ModelConfig {
    let mut m = ModelConfig::new();
    for l in layers {
        m.insert(l, config);
    }
    m
}

/// Whether `config` reads adapter tensor `k` (0..8: Ad, Au, Bd, Bu, Cd, Cu, D, E) of a
/// layer with or without a base bias.
pub fn reads_tensor(config: &LayerConfig, k: usize, has_bias: bool) -> bool {
    let ab = |o: AbOption, up: bool| match o {
        AbOption::Lora(_) => true,
        AbOption::Vector | AbOption::Constant => !up,
        AbOption::None => false,
    };
    match k {
        0 => ab(config.a, false),
        1 => ab(config.a, true),
        2 => ab(config.b, false),
        3 => ab(config.b, true),
        4 => config.c != COption::None,
        5 => matches!(config.c, COption::Lora(_)),
        6 => config.d != DeOption::None && has_bias,
        7 => config.e != DeOption::None,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_method_definitions() {
        let lora = preset_config(Method::Lora, 4).unwrap();
        assert_eq!(lora.b, AbOption::Lora(4));
        assert_eq!((lora.a, lora.c), (AbOption::None, COption::None));
        let ssf = preset_config(Method::Ssf, 4).unwrap();
        assert_eq!(
            (ssf.a, ssf.b, ssf.d, ssf.e),
            (
                AbOption::Vector,
                AbOption::None,
                DeOption::Vector,
                DeOption::Vector
            )
        );
        assert_eq!(
            preset_config(Method::Bitfit, 4).unwrap().e,
            DeOption::Vector
        );
        assert!(preset_config(Method::Full, 4).is_none());
        assert_eq!("head-only".parse::<Method>().unwrap(), Method::HeadOnly);
        assert!("nope".parse::<Method>().is_err());
    }

    #[test]
    fn tensors_read_by_each_option() {
        let c = LayerConfig {
            a: AbOption::Vector,
            b: AbOption::Lora(2),
            c: COption::Vector,
            d: DeOption::Constant,
            e: DeOption::None,
        };
        let read: Vec<bool> = (0..8).map(|k| reads_tensor(&c, k, true)).collect();
        assert_eq!(read, [true, false, true, true, true, false, true, false]);
        assert!(
            !reads_tensor(&c, 6, false),
            "D is not read without a base bias"
        );
        assert!((0..8).all(|k| !reads_tensor(&LayerConfig::NONE, k, true)));
    }
}
