//! Counting GLoRA parameters: what a config reads, and what a supernet stores.
//!
//! The search compares a config's count with the user's budget; reports print the
//! supernet's size beside the head's. Counts follow the reference's table
//! (glora-spec §7), with one departure: on a layer without a bias, D scales a bias
//! that is zero and is never read, so D counts 0 there. The reference counts D's
//! `d_out` (or 1) regardless; its ViT layers all have biases, where both agree.

use serde::{Deserialize, Serialize};

use super::config::{ConfigError, LayerConfig, ModelConfig};
use super::options::{AbOption, COption, DeOption};
use super::space::SearchSpace;

/// The dimensions of an adapted linear layer: `y = x·W0ᵀ (+ b0)`, W0 of shape
/// `(d_out, d_in)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerShape {
    pub d_in: usize,
    pub d_out: usize,
    pub has_bias: bool,
}

impl LayerShape {
    pub const fn new(d_in: usize, d_out: usize, has_bias: bool) -> LayerShape {
        LayerShape {
            d_in,
            d_out,
            has_bias,
        }
    }
}

/// Parameters an A or B option reads.
pub fn ab_params(shape: LayerShape, option: AbOption) -> usize {
    match option {
        AbOption::Lora(r) => r * (shape.d_out + shape.d_in),
        AbOption::Vector => shape.d_out,
        AbOption::Constant => 1,
        AbOption::None => 0,
    }
}

/// Parameters a C option reads: `Cd[:, :r]` and `Cu[:r]` for `LoRA_r`.
pub fn c_params(shape: LayerShape, option: COption) -> usize {
    match option {
        COption::Lora(r) => r * shape.d_in + r,
        COption::Vector => shape.d_in,
        COption::None => 0,
    }
}

/// Parameters a D option reads; 0 on a layer without a bias, where D is never read.
pub fn d_params(shape: LayerShape, option: DeOption) -> usize {
    if shape.has_bias {
        e_params(shape, option)
    } else {
        0
    }
}

/// Parameters an E option reads.
pub fn e_params(shape: LayerShape, option: DeOption) -> usize {
    match option {
        DeOption::Vector => shape.d_out,
        DeOption::Constant => 1,
        DeOption::None => 0,
    }
}

/// Adapter parameters one layer's config reads.
pub fn layer_params(shape: LayerShape, config: &LayerConfig) -> usize {
    ab_params(shape, config.a)
        + ab_params(shape, config.b)
        + c_params(shape, config.c)
        + d_params(shape, config.d)
        + e_params(shape, config.e)
}

/// Entries of all eight stored supernet tensors at rank `max_rank`:
/// Ad, Bd `(d_out, R)`; Au, Bu `(R, d_in)`; Cd `(d_in, R)`; Cu `(R, 1)`; D, E `(d_out)`.
/// D is stored even on a bias-less layer, so it counts here.
pub fn supernet_params(shape: LayerShape, max_rank: usize) -> usize {
    let ab = 2 * max_rank * (shape.d_out + shape.d_in);
    let c = max_rank * shape.d_in + max_rank;
    let de = 2 * shape.d_out;
    ab + c + de
}

/// Adapter parameters of a whole model under `config`, in the order of `layers`.
/// Fails on a layer the config does not cover.
pub fn model_params(
    layers: &[(String, LayerShape)],
    config: &ModelConfig,
) -> Result<usize, ConfigError> {
    layers.iter().try_fold(0, |total, (name, shape)| {
        let layer_config = config.get(name).ok_or_else(|| ConfigError::MissingLayer {
            layer: name.clone(),
        })?;
        Ok(total + layer_params(*shape, layer_config))
    })
}

/// The smallest and largest parameter count over the configs of a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamRange {
    pub min: usize,
    pub max: usize,
}

/// Each term's count depends on that term alone, so the extremes of the sum are the
/// sums of each term's extremes.
fn term_extremes(counts: impl Iterator<Item = usize>) -> ParamRange {
    counts.fold(
        ParamRange {
            min: usize::MAX,
            max: 0,
        },
        |range, n| ParamRange {
            min: range.min.min(n),
            max: range.max.max(n),
        },
    )
}

fn add_ranges(x: ParamRange, y: ParamRange) -> ParamRange {
    ParamRange {
        min: x.min + y.min,
        max: x.max + y.max,
    }
}

/// The parameter range of one layer over every config of `space`.
pub fn layer_param_range(space: &SearchSpace, shape: LayerShape) -> ParamRange {
    let ab = term_extremes(space.ab_options().into_iter().map(|o| ab_params(shape, o)));
    let c = term_extremes(space.c_options().into_iter().map(|o| c_params(shape, o)));
    let d = term_extremes(space.de_options().into_iter().map(|o| d_params(shape, o)));
    let e = term_extremes(space.de_options().into_iter().map(|o| e_params(shape, o)));
    [ab, ab, c, d, e]
        .into_iter()
        .fold(ParamRange { min: 0, max: 0 }, add_ranges)
}

/// The parameter range of a model over every per-layer choice of configs.
pub fn model_param_range(
    space: &SearchSpace,
    shapes: impl IntoIterator<Item = LayerShape>,
) -> ParamRange {
    shapes
        .into_iter()
        .map(|shape| layer_param_range(space, shape))
        .fold(ParamRange { min: 0, max: 0 }, add_ranges)
}

fn mean_of(counts: impl ExactSizeIterator<Item = usize>) -> f64 {
    let n = counts.len().max(1) as f64;
    counts.map(|c| c as f64).sum::<f64>() / n
}

/// The mean parameter count of a uniformly drawn config of one layer (the terms are
/// drawn independently, so the means add). The search uses it to judge whether a
/// budget can be met by random sampling.
pub fn layer_param_mean(space: &SearchSpace, shape: LayerShape) -> f64 {
    let ab = mean_of(space.ab_options().into_iter().map(|o| ab_params(shape, o)));
    let c = mean_of(space.c_options().into_iter().map(|o| c_params(shape, o)));
    let d = mean_of(space.de_options().into_iter().map(|o| d_params(shape, o)));
    let e = mean_of(space.de_options().into_iter().map(|o| e_params(shape, o)));
    2.0 * ab + c + d + e
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn shape(d_in: usize, d_out: usize, has_bias: bool) -> LayerShape {
        LayerShape::new(d_in, d_out, has_bias)
    }

    /// DINOv2 ViT-S: 12 blocks of q, k, v, o (384→384), fc1 (384→1536), fc2 (1536→384).
    fn vit_s_layers() -> Vec<LayerShape> {
        let block = [
            shape(384, 384, true),
            shape(384, 384, true),
            shape(384, 384, true),
            shape(384, 384, true),
            shape(384, 1536, true),
            shape(1536, 384, true),
        ];
        (0..12).flat_map(|_| block).collect()
    }

    /// ViT-B/16: 12 blocks of qkv (768→2304), proj (768→768), fc1 (768→3072), fc2 (3072→768).
    fn vit_b_layers() -> Vec<LayerShape> {
        let block = [
            shape(768, 2304, true),
            shape(768, 768, true),
            shape(768, 3072, true),
            shape(3072, 768, true),
        ];
        (0..12).flat_map(|_| block).collect()
    }

    #[test]
    fn hand_counted_configs() {
        let s = shape(10, 6, true);
        // A LoRA_4: 4·(6+10) = 64; B vector: 6; C LoRA_4: 4·10+4 = 44; D constant: 1;
        // E vector: 6.
        let config = LayerConfig {
            a: AbOption::Lora(4),
            b: AbOption::Vector,
            c: COption::Lora(4),
            d: DeOption::Constant,
            e: DeOption::Vector,
        };
        assert_eq!(layer_params(s, &config), 64 + 6 + 44 + 1 + 6);

        // A constant: 1; B LoRA_2: 2·16 = 32; C vector: 10; D vector: 6; E none.
        let config = LayerConfig {
            a: AbOption::Constant,
            b: AbOption::Lora(2),
            c: COption::Vector,
            d: DeOption::Vector,
            e: DeOption::None,
        };
        assert_eq!(layer_params(s, &config), 1 + 32 + 10 + 6);
        // Without a bias, D's 6 drop out.
        assert_eq!(layer_params(shape(10, 6, false), &config), 1 + 32 + 10);

        assert_eq!(layer_params(s, &LayerConfig::NONE), 0);
    }

    #[test]
    fn supernet_sizes_match_known_models() {
        let vit_s: usize = vit_s_layers().iter().map(|&s| supernet_params(s, 4)).sum();
        assert_eq!(vit_s, 912_672);
        let vit_b: usize = vit_b_layers().iter().map(|&s| supernet_params(s, 4)).sum();
        assert_eq!(vit_b, 1_603_776);
        // glora-spec §7: 0.885M at R=2 and 3.042M at R=8.
        let at = |r| {
            vit_b_layers()
                .iter()
                .map(|&s| supernet_params(s, r))
                .sum::<usize>()
        };
        assert_eq!((at(2) as f64 / 1e3).round(), 885.0);
        assert_eq!((at(8) as f64 / 1e3).round(), 3042.0);
    }

    #[test]
    fn supernet_size_of_a_small_layer_by_hand() {
        // Ad 3·2 + Au 2·5 + Bd 6 + Bu 10 + Cd 5·2 + Cu 2 + D 3 + E 3 = 50.
        assert_eq!(supernet_params(shape(5, 3, true), 2), 50);
        assert_eq!(supernet_params(shape(5, 3, false), 2), 50);
    }

    #[test]
    fn random_config_means_match_the_reported_vit_b_figures() {
        // glora-spec §1.4: 0.309M, 0.499M and 0.880M at R = 2, 4, 8.
        for (rank, millions) in [(2, 0.309), (4, 0.499), (8, 0.880)] {
            let space = SearchSpace::new([rank]).unwrap();
            let mean: f64 = vit_b_layers()
                .iter()
                .map(|&s| layer_param_mean(&space, s))
                .sum();
            assert!((mean / 1e6 - millions).abs() < 0.0005, "R={rank}: {mean}");
        }
    }

    #[test]
    fn ranges_agree_with_enumeration() {
        for space in [SearchSpace::default(), SearchSpace::new([2, 4, 8]).unwrap()] {
            for s in [shape(5, 3, true), shape(5, 3, false), shape(2, 7, true)] {
                let counts: Vec<usize> = space.all_configs().map(|c| layer_params(s, &c)).collect();
                let range = layer_param_range(&space, s);
                assert_eq!(range.min, *counts.iter().min().unwrap());
                assert_eq!(range.max, *counts.iter().max().unwrap());
                let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
                assert!((layer_param_mean(&space, s) - mean).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn model_range_and_totals() {
        let space = SearchSpace::default();
        let layers = [shape(5, 3, true), shape(4, 4, false)];
        let range = model_param_range(&space, layers);
        // Largest: A and B LoRA_4 (4·8 each on both layers), C LoRA_4 (4·5+4, 4·4+4),
        // D vector (3, 0 without bias), E vector (3, 4).
        assert_eq!(range.min, 0);
        assert_eq!(range.max, (64 + 24 + 3 + 3) + (64 + 20 + 4));

        let names = vec![
            ("fc".to_string(), layers[0]),
            ("proj".to_string(), layers[1]),
        ];
        let config: ModelConfig = [
            ("fc".to_string(), LayerConfig::NONE),
            (
                "proj".to_string(),
                LayerConfig {
                    e: DeOption::Vector,
                    ..LayerConfig::NONE
                },
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(model_params(&names, &config).unwrap(), 4);
        let partial: ModelConfig = [("fc".to_string(), LayerConfig::NONE)]
            .into_iter()
            .collect();
        let err = model_params(&names, &partial).unwrap_err();
        assert!(err.to_string().contains("proj"), "{err}");
    }
}
