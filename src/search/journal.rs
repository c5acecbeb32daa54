//! A fitness that remembers: every score is appended to a journal file as it is
//! computed, and a config the journal already holds is answered from it.
//!
//! The search is deterministic for its seed and visits genomes in an order that
//! depends only on the scores it has seen, so a search killed part-way and started
//! again with the same settings replays the same genomes; with the journal the
//! replayed ones cost nothing and the search continues where it stopped. Lines are
//! `{"config_sha256": …, "accuracy": …}`, keyed by the SHA-256 of the config's
//! compact JSON; a last line cut short by the kill is dropped when the journal opens.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::Fitness;
use crate::glora::ModelConfig;

/// `inner` with its scores recorded in (and replayed from) a journal file.
pub struct JournaledFitness<F> {
    inner: F,
    path: PathBuf,
    file: File,
    known: HashMap<String, f64>,
    replayed: usize,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    config_sha256: String,
    accuracy: f64,
}

fn config_key(config: &ModelConfig) -> anyhow::Result<String> {
    let json = serde_json::to_string(config)?;
    Ok(Sha256::digest(json.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl<F: Fitness> JournaledFitness<F> {
    /// Opens (or creates) the journal at `path`.
    pub fn open(path: &Path, inner: F) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        let mut known = HashMap::new();
        let mut good_bytes = 0;
        for line in text.split_inclusive('\n') {
            let Ok(entry) = serde_json::from_str::<Entry>(line.trim_end()) else {
                break;
            };
            if !line.ends_with('\n') || !entry.accuracy.is_finite() {
                break;
            }
            known.insert(entry.config_sha256, entry.accuracy);
            good_bytes += line.len();
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| path.display().to_string())?;
        // Drop whatever follows the last complete entry, so appends start on a line.
        file.set_len(good_bytes as u64)
            .with_context(|| path.display().to_string())?;
        Ok(JournaledFitness {
            inner,
            path: path.to_path_buf(),
            file,
            known,
            replayed: 0,
        })
    }

    /// How many scores were answered from the journal so far.
    pub fn replayed(&self) -> usize {
        self.replayed
    }
}

impl<F: Fitness> Fitness for JournaledFitness<F> {
    fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64> {
        let key = config_key(config)?;
        if let Some(&accuracy) = self.known.get(&key) {
            self.replayed += 1;
            return Ok(accuracy);
        }
        let accuracy = self.inner.evaluate(config)?;
        let mut line = serde_json::to_string(&Entry {
            config_sha256: key.clone(),
            accuracy,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| self.path.display().to_string())?;
        self.known.insert(key, accuracy);
        Ok(accuracy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glora::LayerConfig;

    struct Counting(usize);

    impl Fitness for Counting {
        fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64> {
            self.0 += 1;
            Ok(config.len() as f64 / 10.0)
        }
    }

    fn config(layers: usize) -> ModelConfig {
        let mut c = ModelConfig::new();
        for i in 0..layers {
            c.insert(format!("l{i}"), LayerConfig::NONE);
        }
        c
    }

    #[test]
    fn scores_are_recorded_once_and_replayed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = JournaledFitness::open(&path, Counting(0)).unwrap();
        assert_eq!(j.evaluate(&config(2)).unwrap(), 0.2);
        assert_eq!(j.evaluate(&config(3)).unwrap(), 0.3);
        assert_eq!(j.evaluate(&config(2)).unwrap(), 0.2);
        assert_eq!((j.inner.0, j.replayed()), (2, 1));
        drop(j);
        let mut j = JournaledFitness::open(&path, Counting(0)).unwrap();
        assert_eq!(j.evaluate(&config(3)).unwrap(), 0.3);
        assert_eq!(j.evaluate(&config(4)).unwrap(), 0.4);
        assert_eq!((j.inner.0, j.replayed()), (1, 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_appends_start_on_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = JournaledFitness::open(&path, Counting(0)).unwrap();
        j.evaluate(&config(1)).unwrap();
        drop(j);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"config_sha256\":\"00\",\"accur");
        std::fs::write(&path, &text).unwrap();
        let mut j = JournaledFitness::open(&path, Counting(0)).unwrap();
        j.evaluate(&config(5)).unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }
}
