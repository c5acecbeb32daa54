//! Validation accuracy as the search's fitness, or for a language model the
//! negative validation loss per target token (lower loss is better; the search
//! maximises).
//!
//! [`ValidationFitness`] builds the supernet's forward graph with its head once, at a
//! fixed batch size, and opens one CPU session on it. Each candidate config is
//! written into the session's GLoRA layers and the whole validation split is run in
//! the same order, in the same batches, through [`crate::train::trainer::evaluate`],
//! so every candidate is scored on exactly the same samples.

use anyhow::{Context, bail};

use super::Fitness;
use crate::data::{Dataset, InputLayout};
use crate::exec::{Device, DeviceSession};
use crate::glora::ModelConfig;
use crate::supernet::Supernet;
use crate::train::graph::build_eval_graph;
use crate::train::mode::Mode;
use crate::train::trainer::{evaluate, forward_graph, layout_for};

/// Images per validation batch unless the caller asks otherwise.
pub const DEFAULT_EVAL_BATCH: usize = 64;

/// What a fitness value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// Top-1 accuracy, a fraction.
    Accuracy,
    /// A language model's validation loss per target token, negated.
    NegativeLoss,
}

impl Score {
    /// What the value is, for records and charts.
    pub fn describe(self) -> &'static str {
        match self {
            Score::Accuracy => "validation accuracy",
            Score::NegativeLoss => "negative validation loss per token",
        }
    }

    /// A fitness value for people: `accuracy 0.9120` or `loss 2.3120 (perplexity
    /// 10.095)`.
    pub fn show(self, fitness: f64) -> String {
        match self {
            Score::Accuracy => format!("accuracy {fitness:.4}"),
            Score::NegativeLoss => {
                format!("loss {:.4} (perplexity {:.3})", -fitness, (-fitness).exp())
            }
        }
    }
}

/// Top-1 accuracy (a fraction) of the supernet under a config on a validation split,
/// or a language model's negative loss per target token.
pub struct ValidationFitness<'d> {
    session: DeviceSession,
    layout: InputLayout,
    data: &'d Dataset,
    batch: usize,
    score: Score,
}

impl<'d> ValidationFitness<'d> {
    /// Builds the evaluation graph of `net` (which must have a head) for batches of
    /// `batch` images (at most the split's size), run on `device`.
    pub fn new(
        net: &Supernet,
        data: &'d Dataset,
        batch: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        if data.n == 0 {
            bail!("the validation split is empty");
        }
        let forward = forward_graph(net, &Mode::Supernet)?;
        let batch = batch.clamp(1, data.n);
        let layout = layout_for(&forward, &[data])?;
        let graph = build_eval_graph(&forward, &layout.shapes(batch))
            .context("building the validation graph")?;
        let session = device.session(&graph)?;
        let score = if layout.label_shape(1)[0] > 1 {
            Score::NegativeLoss
        } else {
            Score::Accuracy
        };
        Ok(ValidationFitness {
            session,
            layout,
            data,
            batch,
            score,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn score(&self) -> Score {
        self.score
    }
}

impl Fitness for ValidationFitness<'_> {
    fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64> {
        self.session.set_glora_configs(config)?;
        let (accuracy, loss) = evaluate(&self.session, &self.layout, self.data, self.batch)?;
        Ok(match self.score {
            Score::Accuracy => f64::from(accuracy),
            Score::NegativeLoss => -f64::from(loss),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use crate::search::testing::tiny_supernet;

    const CLASSES: usize = 3;
    const SAMPLES: usize = 10;

    /// The tiny supernet with a head and adapters large enough that different
    /// configs predict different classes.
    fn net_with_head() -> Supernet {
        let mut net = tiny_supernet().clone();
        net.randomize_adapters(21).unwrap();
        let scaled: Vec<(String, Tensor)> = net
            .adapters()
            .unwrap()
            .into_iter()
            .map(|(name, t)| {
                let values = t.to_f32_vec().iter().map(|v| v * 40.0).collect();
                (name, Tensor::from_f32(t.shape().to_vec(), values).unwrap())
            })
            .collect();
        crate::train::trainer::store_trained(&mut net, &scaled).unwrap();
        net.attach_new_head(None, None, CLASSES, 4).unwrap();
        net
    }

    fn images() -> Vec<f32> {
        (0..SAMPLES * 16)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect()
    }

    /// The predicted class of every sample, one sample at a time through
    /// `Supernet::run_adapted`, a path that shares no session or batching with the
    /// fitness.
    fn predictions(net: &Supernet, config: &ModelConfig) -> Vec<u32> {
        let x = images();
        (0..SAMPLES)
            .map(|i| {
                let t =
                    Tensor::from_f32(vec![1, 1, 4, 4], x[i * 16..(i + 1) * 16].to_vec()).unwrap();
                let (out, _) = net.run_adapted(config, &[("image".into(), t)]).unwrap();
                let logits = out[0].to_f32_vec();
                assert_eq!(logits.len(), CLASSES);
                let best = (0..CLASSES)
                    .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                    .unwrap();
                best as u32
            })
            .collect()
    }

    fn dataset(labels: Vec<u32>) -> Dataset {
        let images = crate::data::Images {
            values: images(),
            channels: 1,
            height: 4,
            width: 4,
        };
        Dataset {
            features: crate::data::Features::Images(images),
            labels,
            n: SAMPLES,
            num_classes: CLASSES,
            label_names: crate::data::numbered_labels(CLASSES),
        }
    }

    #[test]
    fn accuracy_matches_predictions_made_one_sample_at_a_time() {
        let net = net_with_head();
        let first = net.random_config(1);
        let labels = predictions(&net, &first);
        let data = dataset(labels.clone());
        // A batch of 4 leaves a padded last batch of 2.
        let mut fitness = ValidationFitness::new(&net, &data, 4, &Device::Cpu).unwrap();
        assert_eq!(fitness.batch(), 4);
        assert_eq!(fitness.evaluate(&first).unwrap(), 1.0);
        let mut scores = Vec::new();
        for seed in 2..6 {
            let config = net.random_config(seed);
            let other = predictions(&net, &config);
            let agree = other.iter().zip(&labels).filter(|(a, b)| a == b).count();
            let expected = f64::from(agree as f32 / SAMPLES as f32);
            let got = fitness.evaluate(&config).unwrap();
            assert!(
                (got - expected).abs() < 1e-6,
                "seed {seed}: {got} vs {expected}"
            );
            scores.push(agree);
        }
        assert!(
            scores.iter().any(|&a| a < SAMPLES),
            "the configs must disagree somewhere for the test to bite"
        );
        // Scoring again after other configs gives the same answer.
        assert_eq!(fitness.evaluate(&first).unwrap(), 1.0);
    }

    #[test]
    fn a_supernet_without_a_head_or_data_is_refused() {
        let data = dataset(vec![0; SAMPLES]);
        let err = ValidationFitness::new(tiny_supernet(), &data, 4, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("head"), "{err}");
        let full = dataset(vec![0; SAMPLES]);
        let empty = full.subset(&[]).unwrap();
        let net = net_with_head();
        assert!(ValidationFitness::new(&net, &empty, 4, &Device::Cpu).is_err());
    }
}
