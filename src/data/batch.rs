//! How a dataset's examples become a model's named input tensors. An
//! [`InputLayout`] is worked out once from the model's inputs and the data (an image
//! input `[B, C, H, W]`, or token ids with their attention mask and token types,
//! padded to one length), gives the input shapes the training and evaluation graphs
//! are built at, and cuts batches. Trainer, search and pipeline hold a layout and
//! never ask whether they feed pixels or tokens.

use super::{DataError, Dataset, Features, IGNORE_INDEX};
use crate::ir::{Graph, Tensor};

/// Names of the token inputs Hugging Face models (and their ONNX exports) take.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";

/// Multiple the padded token length is rounded up to, so that near lengths share a
/// graph shape.
const LENGTH_STEP: usize = 8;

/// The inputs a batch fills.
#[derive(Clone, Debug, PartialEq)]
pub enum InputLayout {
    /// One f32 input of `[batch, channels, height, width]` images.
    Image { input: String, dims: [usize; 3] },
    /// Token ids (and, where the model takes them, the attention mask and token type
    /// ids), every example padded to `length` on the right.
    Tokens {
        ids: String,
        mask: Option<String>,
        type_ids: Option<String>,
        length: usize,
        pad_id: u32,
        /// Language modelling: every position has a target, so the labels are
        /// `[batch × length]` rather than one per example.
        per_token: bool,
    },
}

fn input_names(g: &Graph) -> Vec<String> {
    g.inputs.iter().map(|&i| g.node(i).name.clone()).collect()
}

impl InputLayout {
    /// The layout that feeds `data` to the model `g`. Token sequences are padded to
    /// the longest of `data`, rounded up to a multiple of 8 but not past the length
    /// the texts were truncated to.
    pub fn for_model(g: &Graph, data: &Dataset) -> Result<InputLayout, DataError> {
        let names = input_names(g);
        match &data.features {
            Features::Images(im) => match names.as_slice() {
                [one] => Ok(InputLayout::Image {
                    input: one.clone(),
                    dims: im.dims(),
                }),
                _ => Err(DataError::Invalid(format!(
                    "the data are images but the model takes {} inputs ({}); images feed a model with one input",
                    names.len(),
                    names.join(", ")
                ))),
            },
            Features::Tokens(t) => {
                let has = |n: &str| names.iter().any(|m| m == n);
                if !has(INPUT_IDS) {
                    return Err(DataError::Invalid(format!(
                        "the data are texts but the model has no '{INPUT_IDS}' input (inputs: {})",
                        names.join(", ")
                    )));
                }
                let known = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS];
                if let Some(other) = names.iter().find(|n| !known.contains(&n.as_str())) {
                    return Err(DataError::Invalid(format!(
                        "the model's input '{other}' is not one text data can fill (it fills {})",
                        known.join(", ")
                    )));
                }
                let longest = t.longest().max(1);
                let length =
                    (longest.div_ceil(LENGTH_STEP) * LENGTH_STEP).min(t.max_length.max(longest));
                Ok(InputLayout::Tokens {
                    ids: INPUT_IDS.to_string(),
                    mask: has(ATTENTION_MASK).then(|| ATTENTION_MASK.to_string()),
                    type_ids: has(TOKEN_TYPE_IDS).then(|| TOKEN_TYPE_IDS.to_string()),
                    length,
                    pad_id: t.pad_id,
                    per_token: t.targets.is_some(),
                })
            }
        }
    }

    /// A layout that fits the examples of both `self` and `other` (made for the same
    /// model from two splits): the longer token length.
    pub fn covering(&self, other: &InputLayout) -> Result<InputLayout, DataError> {
        match (self, other) {
            (InputLayout::Tokens { length: a, .. }, InputLayout::Tokens { length: b, .. }) => {
                let mut out = self.clone();
                if let InputLayout::Tokens { length, .. } = &mut out {
                    *length = (*a).max(*b);
                }
                Ok(out)
            }
            _ if self == other => Ok(self.clone()),
            _ => Err(DataError::Invalid(format!(
                "the splits differ: {} and {}",
                self.describe(),
                other.describe()
            ))),
        }
    }

    /// Each input's name and shape at batch size `batch`.
    pub fn shapes(&self, batch: usize) -> Vec<(String, Vec<usize>)> {
        match self {
            InputLayout::Image { input, dims } => {
                let mut d = vec![batch];
                d.extend_from_slice(dims);
                vec![(input.clone(), d)]
            }
            InputLayout::Tokens {
                ids,
                mask,
                type_ids,
                length,
                ..
            } => [Some(ids), mask.as_ref(), type_ids.as_ref()]
                .into_iter()
                .flatten()
                .map(|n| (n.clone(), vec![batch, *length]))
                .collect(),
        }
    }

    /// The shape of a batch's labels: one per example, or one per position for
    /// language modelling.
    pub fn label_shape(&self, batch: usize) -> Vec<usize> {
        match self {
            InputLayout::Tokens {
                per_token: true,
                length,
                ..
            } => vec![batch * length],
            _ => vec![batch],
        }
    }

    /// The labels of examples `idx` of `data`, laid out as [`InputLayout::label_shape`]
    /// says: each example's class, or each position's next-token target with
    /// [`IGNORE_INDEX`] on padding.
    pub fn labels(&self, data: &Dataset, idx: &[usize]) -> Result<Vec<i64>, DataError> {
        let out_of_range =
            |i: usize| DataError::Invalid(format!("example {i} is outside {} examples", data.n));
        match (self, &data.features) {
            (
                InputLayout::Tokens {
                    per_token: true,
                    length,
                    ..
                },
                Features::Tokens(t),
            ) => {
                let targets = t.targets.as_ref().ok_or_else(|| {
                    DataError::Invalid("the data have no next-token targets".into())
                })?;
                let mut out = vec![i64::from(IGNORE_INDEX); idx.len() * length];
                for (row, &i) in idx.iter().enumerate() {
                    let seq = targets.get(i).ok_or_else(|| out_of_range(i))?;
                    let keep = seq.len().min(*length);
                    for (k, &v) in seq[..keep].iter().enumerate() {
                        out[row * length + k] = i64::from(v);
                    }
                }
                Ok(out)
            }
            _ => idx
                .iter()
                .map(|&i| {
                    data.labels
                        .get(i)
                        .map(|&l| i64::from(l))
                        .ok_or_else(|| out_of_range(i))
                })
                .collect(),
        }
    }

    /// What one example looks like, for messages: `1×8×8 images`, `texts of up to
    /// 128 tokens`.
    pub fn describe(&self) -> String {
        match self {
            InputLayout::Image {
                dims: [c, h, w], ..
            } => format!("{c}×{h}×{w} images"),
            InputLayout::Tokens { length, .. } => format!("texts of up to {length} tokens"),
        }
    }

    /// The inputs of examples `idx` of `data`, in [`InputLayout::shapes`] order.
    pub fn batch(&self, data: &Dataset, idx: &[usize]) -> Result<Vec<(String, Tensor)>, DataError> {
        let out_of_range =
            |i: usize| DataError::Invalid(format!("example {i} is outside {} examples", data.n));
        let tensor = |r: Result<Tensor, crate::ir::TensorError>| {
            r.map_err(|e| DataError::Invalid(format!("building a batch: {e}")))
        };
        match (self, &data.features) {
            (InputLayout::Image { input, dims }, Features::Images(im)) => {
                if im.dims() != *dims {
                    return Err(DataError::Invalid(format!(
                        "images are {:?}, the model is fed {dims:?}",
                        im.dims()
                    )));
                }
                let len = im.image_len();
                let mut values = Vec::with_capacity(idx.len() * len);
                for &i in idx {
                    let image = im
                        .values
                        .get(i * len..(i + 1) * len)
                        .ok_or_else(|| out_of_range(i))?;
                    values.extend_from_slice(image);
                }
                let mut shape = vec![idx.len()];
                shape.extend_from_slice(dims);
                Ok(vec![(
                    input.clone(),
                    tensor(Tensor::from_f32(shape, values))?,
                )])
            }
            (
                InputLayout::Tokens {
                    ids,
                    mask,
                    type_ids,
                    length,
                    pad_id,
                    ..
                },
                Features::Tokens(t),
            ) => {
                let n = idx.len() * length;
                let (mut id_v, mut mask_v, mut type_v) =
                    (vec![i64::from(*pad_id); n], vec![0i64; n], vec![0i64; n]);
                for (row, &i) in idx.iter().enumerate() {
                    let seq = t.ids.get(i).ok_or_else(|| out_of_range(i))?;
                    // Longer than the layout (a split tokenised after the layout was
                    // fixed): the tail is cut, as truncation would have.
                    let keep = seq.len().min(*length);
                    let at = row * length;
                    for (k, &tok) in seq[..keep].iter().enumerate() {
                        id_v[at + k] = i64::from(tok);
                        mask_v[at + k] = 1;
                    }
                    if let Some(types) = t.type_ids.as_ref().and_then(|ty| ty.get(i)) {
                        for (k, &ty) in types[..keep.min(types.len())].iter().enumerate() {
                            type_v[at + k] = i64::from(ty);
                        }
                    }
                }
                let shape = vec![idx.len(), *length];
                let mut out = vec![(ids.clone(), tensor(Tensor::from_i64(shape.clone(), id_v))?)];
                if let Some(m) = mask {
                    out.push((m.clone(), tensor(Tensor::from_i64(shape.clone(), mask_v))?));
                }
                if let Some(ty) = type_ids {
                    out.push((ty.clone(), tensor(Tensor::from_i64(shape, type_v))?));
                }
                Ok(out)
            }
            (layout, features) => Err(DataError::Invalid(format!(
                "the model is fed {} but the data holds {}",
                layout.describe(),
                features.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Images, Tokens};
    use crate::ir::{DType, Dim, Shape, TensorType};

    fn text_model(inputs: &[&str]) -> Graph {
        let mut g = Graph::new("m");
        for n in inputs {
            g.add_input(
                *n,
                TensorType::new(
                    DType::I64,
                    Shape(vec![Dim::sym("batch"), Dim::sym("sequence")]),
                ),
            );
        }
        g
    }

    fn texts() -> Dataset {
        let tokens = Tokens {
            ids: vec![
                vec![101, 7, 8, 102],
                vec![101, 9, 102],
                vec![101, 5, 6, 7, 8, 9, 4, 3, 2, 102],
            ],
            type_ids: Some(vec![vec![0, 0, 1, 1], vec![0, 0, 0], vec![0; 10]]),
            targets: None,
            pad_id: 0,
            max_length: 512,
        };
        Dataset::numbered(Features::Tokens(tokens), vec![0, 1, 1])
    }

    #[test]
    fn token_batches_pad_right_with_mask_and_types_by_hand() {
        let g = text_model(&[INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS]);
        let data = texts();
        let layout = InputLayout::for_model(&g, &data).unwrap();
        // The longest example has 10 tokens: rounded up to 16.
        assert_eq!(layout.shapes(2)[0], (INPUT_IDS.to_string(), vec![2, 16]));
        let mut short_texts = data.clone();
        if let Features::Tokens(t) = &mut short_texts.features {
            t.max_length = 12;
        }
        let capped = InputLayout::for_model(&g, &short_texts).unwrap();
        assert_eq!(layout.covering(&capped).unwrap(), layout);
        assert_eq!(capped.shapes(1)[1].1, vec![1, 12]);
        let b = capped.batch(&data, &[1, 0]).unwrap();
        let names: Vec<&str> = b.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS]);
        let row = |t: &Tensor, r: usize| t.to_i64_vec()[r * 12..(r + 1) * 12].to_vec();
        assert_eq!(row(&b[0].1, 0), [101, 9, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(row(&b[1].1, 0), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(row(&b[0].1, 1), [101, 7, 8, 102, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(row(&b[2].1, 1), [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        // A layout shorter than an example cuts its tail.
        let short = InputLayout::Tokens {
            ids: INPUT_IDS.into(),
            mask: None,
            type_ids: None,
            length: 3,
            pad_id: 0,
            per_token: false,
        };
        let b = short.batch(&data, &[2]).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1.to_i64_vec(), [101, 5, 6]);
    }

    #[test]
    fn language_model_labels_are_per_position_and_ignore_padding() {
        let tokens = Tokens {
            ids: vec![vec![5, 6, 7], vec![8, 9, 10, 11, 12]],
            type_ids: None,
            targets: Some(vec![vec![6, 7, IGNORE_INDEX], vec![-100, 10, 11, 12, -100]]),
            pad_id: 0,
            max_length: 512,
        };
        let data = Dataset::numbered(Features::Tokens(tokens), vec![0, 0]);
        let layout =
            InputLayout::for_model(&text_model(&[INPUT_IDS, ATTENTION_MASK]), &data).unwrap();
        // Padded to 8: labels are [2 × 8], the padding ignored.
        assert_eq!(layout.label_shape(2), vec![16]);
        let l = layout.labels(&data, &[1, 0]).unwrap();
        let ig = i64::from(IGNORE_INDEX);
        assert_eq!(
            l,
            [ig, 10, 11, 12, ig, ig, ig, ig, 6, 7, ig, ig, ig, ig, ig, ig]
        );
        // Classification data keep one label per example.
        let cls = InputLayout::for_model(&text_model(&[INPUT_IDS]), &texts()).unwrap();
        assert_eq!(cls.label_shape(3), vec![3]);
        assert_eq!(cls.labels(&texts(), &[2, 0]).unwrap(), [1, 0]);
    }

    fn capped_text_layout() -> InputLayout {
        InputLayout::for_model(&text_model(&[INPUT_IDS]), &texts()).unwrap()
    }

    #[test]
    fn mismatched_models_and_data_are_named() {
        let data = texts();
        let e = InputLayout::for_model(&text_model(&["pixel_values"]), &data).unwrap_err();
        assert!(e.to_string().contains("input_ids"), "{e}");
        let e =
            InputLayout::for_model(&text_model(&[INPUT_IDS, "position_ids"]), &data).unwrap_err();
        assert!(e.to_string().contains("position_ids"), "{e}");
        let images = Dataset::numbered(
            Features::Images(Images {
                values: vec![0.5; 8],
                channels: 1,
                height: 2,
                width: 2,
            }),
            vec![0, 1],
        );
        let e =
            InputLayout::for_model(&text_model(&[INPUT_IDS, ATTENTION_MASK]), &images).unwrap_err();
        assert!(e.to_string().contains("2 inputs"), "{e}");
        let layout = InputLayout::for_model(&text_model(&["image"]), &images).unwrap();
        assert!(layout.covering(&capped_text_layout()).is_err());
        assert_eq!(
            layout.shapes(3),
            vec![("image".to_string(), vec![3, 1, 2, 2])]
        );
        let e = layout.batch(&data, &[0]).unwrap_err();
        assert!(e.to_string().contains("holds texts"), "{e}");
        let b = layout.batch(&images, &[1]).unwrap();
        assert_eq!(b[0].1.to_f32_vec(), [0.5; 4]);
        assert!(layout.batch(&images, &[2]).is_err());
    }
}
