//! A training checkpoint: everything a resumed run needs to repeat the steps an
//! uninterrupted run would take — the trainable tensors, the AdamW moments and step
//! counts, the number of steps done, the run's seed (from which every per-step config
//! and per-epoch sample order derive) and the current epoch's sample order. One
//! safetensors file, written atomically: `param/<name>`, `adamw/<name>.{m,v,step}`,
//! `state/step`, `state/seed`, `state/data_order`.

use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::ir::Tensor;

/// The checkpoint's file name inside the artifact directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Steps completed.
    pub step: u64,
    pub seed: u64,
    pub data_order: Vec<i64>,
    pub params: Vec<(String, Tensor)>,
    /// As [`super::optim::AdamW::export_state`] writes it.
    pub optimizer: Vec<(String, Tensor)>,
}

impl Checkpoint {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut tensors = Vec::with_capacity(self.params.len() + self.optimizer.len() + 3);
        for (n, t) in &self.params {
            tensors.push((format!("param/{n}"), t.clone()));
        }
        for (n, t) in &self.optimizer {
            tensors.push((format!("adamw/{n}"), t.clone()));
        }
        tensors.push(("state/step".into(), Tensor::scalar_i64(self.step as i64)));
        // The seed's bits, stored as the i64 with the same bit pattern.
        tensors.push(("state/seed".into(), Tensor::scalar_i64(self.seed as i64)));
        tensors.push((
            "state/data_order".into(),
            Tensor::vec_i64(self.data_order.clone()),
        ));
        crate::io::write_safetensors(path, &tensors)
            .with_context(|| format!("writing checkpoint {}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Checkpoint> {
        if !path.is_file() {
            bail!(
                "{}: no checkpoint to resume from (train without --resume first)",
                path.display()
            );
        }
        let tensors = crate::io::read_safetensors(path)?;
        let mut ck = Checkpoint {
            step: 0,
            seed: 0,
            data_order: Vec::new(),
            params: Vec::new(),
            optimizer: Vec::new(),
        };
        let (mut have_step, mut have_seed) = (false, false);
        let scalar = |n: &str, t: &Tensor| -> anyhow::Result<i64> {
            t.as_i64()
                .filter(|v| v.len() == 1)
                .map(|v| v[0])
                .ok_or_else(|| anyhow!("{}: {n} is not an i64 scalar", path.display()))
        };
        for (n, t) in tensors {
            if let Some(p) = n.strip_prefix("param/") {
                ck.params.push((p.to_string(), t));
            } else if let Some(o) = n.strip_prefix("adamw/") {
                ck.optimizer.push((o.to_string(), t));
            } else if n == "state/step" {
                ck.step = u64::try_from(scalar(&n, &t)?)
                    .map_err(|_| anyhow!("{}: negative step", path.display()))?;
                have_step = true;
            } else if n == "state/seed" {
                ck.seed = scalar(&n, &t)? as u64;
                have_seed = true;
            } else if n == "state/data_order" {
                ck.data_order = t.to_i64_vec();
            } else {
                bail!("{}: unexpected tensor {n}", path.display());
            }
        }
        if !have_step || !have_seed {
            bail!("{}: the checkpoint lacks its step or seed", path.display());
        }
        Ok(ck)
    }

    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// A resumed run must use the same seed and train the same tensors.
    pub fn check_compatible(&self, seed: u64, names: &[String]) -> anyhow::Result<()> {
        if self.seed != seed {
            bail!(
                "the checkpoint was written by a run with --seed {}, not {seed}",
                self.seed
            );
        }
        let mut mine: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut theirs: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        mine.sort_unstable();
        theirs.sort_unstable();
        if mine != theirs {
            bail!(
                "the checkpoint trains {} tensors, this run {}; resume with the same --mode and model",
                theirs.len(),
                mine.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let ck = Checkpoint {
            step: 7,
            seed: u64::MAX - 3,
            data_order: vec![2, 0, 1],
            params: vec![(
                "a.Ad".into(),
                Tensor::from_f32(vec![2], vec![1.5, -2.0]).unwrap(),
            )],
            optimizer: vec![("a.Ad.step".into(), Tensor::scalar_i64(7))],
        };
        ck.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), ck);
        assert!(ck.check_compatible(1, &["a.Ad".into()]).is_err());
        assert!(ck.check_compatible(u64::MAX - 3, &["b".into()]).is_err());
        ck.check_compatible(u64::MAX - 3, &["a.Ad".into()]).unwrap();
        let missing = Checkpoint::read(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("no checkpoint"), "{missing}");
    }
}
