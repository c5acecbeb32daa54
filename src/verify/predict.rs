//! Running an exported classifier as a user would: texts are tokenised with the
//! model's tokenizer, padded into one batch as training fed them, run in tract (the
//! independent runtime), and each text's logits become probabilities over the label
//! names the export carries in its `id2label` metadata.

use std::path::Path;

use anyhow::{Context, bail};

use super::TractModel;
use crate::data::{Dataset, Features, InputLayout, TextTokenizer, Tokens};

/// One text's prediction: every label with its probability, most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub ranked: Vec<(String, f32)>,
}

impl Prediction {
    /// The most likely label.
    pub fn label(&self) -> &str {
        self.ranked.first().map_or("", |(l, _)| l.as_str())
    }
}

/// The label names in the export's `id2label` metadata, by class index; `None`
/// when the file has none.
pub fn exported_labels(model: &Path) -> anyhow::Result<Option<Vec<String>>> {
    let meta = crate::onnx::read_metadata(model)?;
    let Some((_, json)) = meta.iter().find(|(k, _)| k == "id2label") else {
        return Ok(None);
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(json)
        .with_context(|| format!("{}: metadata id2label is not a JSON map", model.display()))?;
    let mut pairs: Vec<(usize, String)> = map
        .into_iter()
        .map(|(k, v)| Ok((k.parse::<usize>()?, v)))
        .collect::<Result<_, std::num::ParseIntError>>()
        .with_context(|| {
            format!(
                "{}: metadata id2label has a key that is not an index",
                model.display()
            )
        })?;
    pairs.sort();
    Ok(Some(pairs.into_iter().map(|(_, v)| v).collect()))
}

/// Numerically stable softmax of one row.
fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Classifies `texts` (with optional second texts of a pair task) with the exported
/// model at `model`, cutting each to `max_length` tokens.
pub fn predict_texts(
    model: &Path,
    tokenizer: &TextTokenizer,
    texts: &[(String, Option<String>)],
    max_length: usize,
) -> anyhow::Result<Vec<Prediction>> {
    if texts.is_empty() {
        bail!("no texts to classify");
    }
    let g = crate::onnx::import_file(model)?;
    let mut ids = Vec::with_capacity(texts.len());
    let mut type_ids = Vec::with_capacity(texts.len());
    for (text, pair) in texts {
        let e = tokenizer.encode(text, pair.as_deref(), max_length)?;
        ids.push(e.input_ids);
        type_ids.push(e.token_type_ids);
    }
    let data = Dataset::numbered(
        Features::Tokens(Tokens {
            ids,
            type_ids: Some(type_ids),
            targets: None,
            pad_id: tokenizer.pad_id().unwrap_or(0),
            max_length,
        }),
        vec![0; texts.len()],
    );
    let layout = InputLayout::for_model(&g, &data)
        .with_context(|| format!("{}: not a text classifier", model.display()))?;
    let all: Vec<usize> = (0..texts.len()).collect();
    let inputs = layout.batch(&data, &all)?;
    let tract = TractModel::load(model, &inputs)?;
    let out = tract.run(&inputs)?;
    let logits = out
        .first()
        .with_context(|| format!("{}: the model has no outputs", model.display()))?;
    let shape = logits.shape();
    if shape.len() != 2 || shape[0] != texts.len() {
        bail!(
            "{}: the first output is {shape:?}, not [texts, classes] logits",
            model.display()
        );
    }
    let k = shape[1];
    let names = exported_labels(model)?.unwrap_or_else(|| crate::data::numbered_labels(k));
    if names.len() != k {
        bail!(
            "{}: the model gives {k} logits but its id2label names {} labels",
            model.display(),
            names.len()
        );
    }
    let values = logits.to_f32_vec();
    Ok(values
        .chunks_exact(k)
        .map(|row| {
            let mut ranked: Vec<(String, f32)> = names.iter().cloned().zip(softmax(row)).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            Prediction { ranked }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::softmax;

    #[test]
    fn softmax_by_hand() {
        let p = softmax(&[0.0, (3.0f32).ln()]);
        assert!(
            (p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6,
            "{p:?}"
        );
        let big = softmax(&[1000.0, 1000.0]);
        assert_eq!(big, [0.5, 0.5]);
    }
}
