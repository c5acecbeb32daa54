//! Evolutionary search for a per-layer GLoRA config under a parameter budget.
//!
//! The search reads a trained [`Supernet`](crate::supernet::Supernet) (its layers,
//! shapes and search space) and scores candidate configs through a [`Fitness`]:
//! in practice [`fitness::ValidationFitness`], the accuracy of the supernet under the
//! candidate on a validation split carved from the training data. [`evolution`]
//! holds the algorithm (the reference's, with the departures listed there), and
//! [`sampler`] the budget-aware random draws it starts from. The outcome goes to
//! `search.json` through [`record`], and the chosen config into the supernet's
//! manifest, where `glora export` finds it.

pub mod evolution;
pub mod fitness;
pub mod journal;
pub mod record;
pub mod sampler;
#[cfg(test)]
mod testing;

pub use evolution::{
    Budget, Evaluated, GenerationStats, Genome, Progress, SearchOutcome, SearchSettings,
    check_budget, search, uniform_mean_params,
};
pub use fitness::ValidationFitness;
pub use journal::JournaledFitness;
pub use record::{SEARCH_FILE, search_record, write_search_record};
pub use sampler::{OptionSampler, Sampling};

use crate::glora::ModelConfig;

/// Scores one candidate config; higher is better. The search calls it once per
/// distinct legal genome.
pub trait Fitness {
    fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64>;
}

/// Reads a parameter count: a plain integer, or a decimal with a `k` (thousand) or
/// `M` (million) suffix, e.g. `5000`, `5k`, `0.5M`, `1.25m`.
pub fn parse_param_count(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let bad = || format!("{text:?} is not a parameter count (e.g. 5000, 5k, 0.5M)");
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let count = (value * scale).round();
    if !count.is_finite() || count > usize::MAX as f64 {
        return Err(bad());
    }
    Ok(count as usize)
}

/// A parameter count for people, to three significant digits at most:
/// `1234` → `1.23k`, `5000` → `5k`, `2500000` → `2.5M`.
pub fn format_param_count(n: usize) -> String {
    let (value, suffix) = match n {
        0..1_000 => return n.to_string(),
        1_000..1_000_000 => (n as f64 / 1e3, "k"),
        _ => (n as f64 / 1e6, "M"),
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_counts_parse_with_suffixes() {
        assert_eq!(parse_param_count("5000"), Ok(5000));
        assert_eq!(parse_param_count("5k"), Ok(5000));
        assert_eq!(parse_param_count("5K"), Ok(5000));
        assert_eq!(parse_param_count("0.5M"), Ok(500_000));
        assert_eq!(parse_param_count("1.25m"), Ok(1_250_000));
        assert_eq!(parse_param_count(" 12 "), Ok(12));
        assert_eq!(parse_param_count("0"), Ok(0));
        assert_eq!(parse_param_count("2.5"), Ok(3));
    }

    #[test]
    fn malformed_param_counts_are_rejected() {
        for bad in [
            "", "k", "M", "-5k", "5x", "1e3", "five", "5kk", "1.2.3k", "nan",
        ] {
            let err = parse_param_count(bad).unwrap_err();
            assert!(err.contains("parameter count"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn param_counts_format_for_people() {
        assert_eq!(format_param_count(999), "999");
        assert_eq!(format_param_count(1234), "1.23k");
        assert_eq!(format_param_count(5000), "5k");
        assert_eq!(format_param_count(12_340), "12.3k");
        assert_eq!(format_param_count(123_456), "123k");
        assert_eq!(format_param_count(2_500_000), "2.5M");
        assert_eq!(format_param_count(10_000_000), "10M");
    }
}
