//! Rotary position embeddings of the decoder families: the inverse frequencies of a
//! `config.json`'s RoPE parameters (`default`, `linear`, `llama3`; transformers 5's
//! `rope_parameters` as well as transformers 4's `rope_theta` + `rope_scaling`), in
//! f32 exactly as transformers computes them, and the signs that fold `rotate_half`
//! into the sine. The graph multiplies positions by these frequencies and takes
//! cos/sin at run time, as transformers does, so long positions round alike.

use super::ModelError;
use super::hf_config::HfConfig;

/// How the inverse frequencies are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// The original RoPE.
    None,
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear { factor: f64 },
    /// Llama 3.1's band-wise scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
}

/// A model's RoPE: the base wavelength and its scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// The RoPE types this module computes.
pub const ROPE_TYPES: &str = "default, linear, llama3";

impl Rope {
    /// Reads `rope_parameters` (transformers 5) or `rope_scaling` and `rope_theta`
    /// (transformers 4) from a config; `default_theta` where neither names a base.
    pub fn from_config(
        cfg: &HfConfig,
        default_theta: f64,
        max_positions: usize,
    ) -> Result<Rope, ModelError> {
        let j = &cfg.json;
        let (key, params) = match (j.get("rope_parameters"), j.get("rope_scaling")) {
            (Some(p), _) if !p.is_null() => ("rope_parameters", Some(p)),
            (_, Some(p)) if !p.is_null() => ("rope_scaling", Some(p)),
            _ => ("rope_theta", None),
        };
        if let Some(p) = params
            && !p.is_object()
        {
            return Err(cfg.error(key, "must be an object"));
        }
        let get = |k: &str| params.and_then(|p| p.get(k));
        let num = |k: &str| -> Result<Option<f64>, ModelError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| cfg.error(key, format!("\"{k}\" must be a number"))),
            }
        };
        let theta = match num("rope_theta")? {
            Some(t) => t,
            None => match j.get("rope_theta") {
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| cfg.error("rope_theta", "must be a number"))?,
                None => default_theta,
            },
        };
        if !(theta > 1.0 && theta.is_finite()) {
            return Err(cfg.error(key, format!("rope_theta {theta} must be a number above 1")));
        }
        let partial = num("partial_rotary_factor")?
            .or_else(|| j.get("partial_rotary_factor").and_then(|v| v.as_f64()));
        if let Some(f) = partial
            && f != 1.0
        {
            return Err(cfg.error(
                key,
                format!("partial_rotary_factor {f} is not supported (only 1)"),
            ));
        }
        let kind = get("rope_type")
            .or_else(|| get("type"))
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| cfg.error(key, "\"rope_type\" must be a string"))
            })
            .transpose()?
            .unwrap_or("default");
        let need = |k: &str| -> Result<f64, ModelError> {
            num(k)?.ok_or_else(|| cfg.error(key, format!("rope type {kind:?} needs \"{k}\"")))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: positive(cfg, key, "factor", need("factor")?)?,
            },
            "llama3" => {
                let low = positive(cfg, key, "low_freq_factor", need("low_freq_factor")?)?;
                let high = positive(cfg, key, "high_freq_factor", need("high_freq_factor")?)?;
                if high <= low {
                    return Err(cfg.error(
                        key,
                        format!("high_freq_factor {high} must exceed low_freq_factor {low}"),
                    ));
                }
                let original = match num("original_max_position_embeddings")? {
                    Some(n) => n,
                    None => j
                        .get("original_max_position_embeddings")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(max_positions as f64),
                };
                RopeScaling::Llama3 {
                    factor: positive(cfg, key, "factor", need("factor")?)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_positions: positive(
                        cfg,
                        key,
                        "original_max_position_embeddings",
                        original,
                    )?,
                }
            }
            other => {
                return Err(cfg.error(
                    key,
                    format!("rope type {other:?} is not supported (supported: {ROPE_TYPES})"),
                ));
            }
        };
        Ok(Rope { theta, scaling })
    }

    /// The `head_dim / 2` inverse frequencies, in f32 as transformers computes them.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let plain = (0..head_dim / 2).map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            1.0f32 / base.powf(e)
        });
        match self.scaling {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_positions: old,
            } => plain
                .map(|f| {
                    let (f, factor) = (f as f64, factor);
                    let wavelen = std::f64::consts::TAU / f;
                    let (low_wavelen, high_wavelen) = (old / low, old / high);
                    let scaled = if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    scaled as f32
                })
                .collect(),
        }
    }

    /// The sign `rotate_half` gives each of the `head_dim` sines: −1 over the first
    /// half, +1 over the second, so that `x·cos + swap_halves(x)·(sin·signs)` is
    /// transformers' `x·cos + rotate_half(x)·sin`.
    pub fn signs(head_dim: usize) -> Vec<f32> {
        (0..head_dim)
            .map(|i| if i < head_dim / 2 { -1.0 } else { 1.0 })
            .collect()
    }
}

fn positive(cfg: &HfConfig, key: &str, what: &str, v: f64) -> Result<f64, ModelError> {
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(cfg.error(key, format!("\"{what}\" {v} must be a positive number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> HfConfig {
        HfConfig {
            path: "config.json".into(),
            json: serde_json::from_str(json).unwrap(),
            model_type: "llama".into(),
        }
    }

    #[test]
    fn reads_both_spellings_and_defaults() {
        let r = Rope::from_config(&cfg(r#"{"rope_theta": 500000.0}"#), 1e4, 64).unwrap();
        assert_eq!(r.theta, 500000.0);
        assert_eq!(r.scaling, RopeScaling::None);
        let r = Rope::from_config(
            &cfg(r#"{"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100.0}}"#),
            1e4,
            64,
        )
        .unwrap();
        assert_eq!(r.theta, 100.0);
        assert_eq!(r.scaling, RopeScaling::Linear { factor: 2.0 });
        let r = Rope::from_config(
            &cfg(r#"{"rope_theta": 50.0, "rope_scaling": {"type": "linear", "factor": 4}}"#),
            1e4,
            64,
        )
        .unwrap();
        assert_eq!(r.theta, 50.0);
        assert_eq!(r.scaling, RopeScaling::Linear { factor: 4.0 });
        let r = Rope::from_config(&cfg("{}"), 1e4, 64).unwrap();
        assert_eq!(r.theta, 1e4);
        let r = Rope::from_config(
            &cfg(
                r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4}}"#,
            ),
            1e4,
            64,
        )
        .unwrap();
        assert_eq!(
            r.scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_positions: 64.0
            }
        );
    }

    #[test]
    fn bad_rope_parameters_are_named() {
        let e = |j: &str| Rope::from_config(&cfg(j), 1e4, 64).unwrap_err().to_string();
        let m = e(r#"{"rope_parameters": {"rope_type": "yarn", "factor": 2}}"#);
        assert!(
            m.contains("config.json") && m.contains("yarn") && m.contains("llama3"),
            "{m}"
        );
        let m = e(r#"{"rope_scaling": {"type": "linear"}}"#);
        assert!(m.contains("rope_scaling") && m.contains("factor"), "{m}");
        let m = e(r#"{"rope_theta": "big"}"#);
        assert!(m.contains("rope_theta"), "{m}");
        let m = e(r#"{"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.5}}"#);
        assert!(m.contains("partial_rotary_factor"), "{m}");
    }

    /// Hand-worked: θ = 100, head_dim 4 → inverse frequencies 1 and 100^(-1/2) = 0.1.
    #[test]
    fn inverse_frequencies_by_hand() {
        let plain = Rope {
            theta: 100.0,
            scaling: RopeScaling::None,
        };
        let f = plain.inv_freq(4);
        assert!(
            (f[0] - 1.0).abs() < 1e-7 && (f[1] - 0.1).abs() < 1e-7,
            "{f:?}"
        );
        let lin = Rope {
            theta: 100.0,
            scaling: RopeScaling::Linear { factor: 2.0 },
        };
        let f = lin.inv_freq(4);
        assert!(
            (f[0] - 0.5).abs() < 1e-7 && (f[1] - 0.05).abs() < 1e-7,
            "{f:?}"
        );
        // Llama 3 with an original context of 20 and factors 1 and 4: the wavelength
        // 2π ≈ 6.28 lies between 20/4 = 5 and 20/1 = 20, so it is smoothed; 2π/0.1 ≈
        // 62.8 lies above 20, so that frequency is divided by the factor 8.
        let l3 = Rope {
            theta: 100.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_positions: 20.0,
            },
        };
        let f = l3.inv_freq(4);
        let smooth = (20.0 / std::f64::consts::TAU - 1.0) / 3.0;
        let want0 = (1.0 - smooth) / 8.0 + smooth;
        assert!((f64::from(f[0]) - want0).abs() < 1e-6, "{f:?} vs {want0}");
        assert!((f[1] - 0.1 / 8.0).abs() < 1e-7, "{f:?}");
    }

    #[test]
    fn signs_negate_the_first_half() {
        assert_eq!(Rope::signs(4), [-1.0, -1.0, 1.0, 1.0]);
    }
}
