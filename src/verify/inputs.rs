//! Model inputs for `run`, `verify` and benchmarks: concrete shapes from the graph's
//! declared input types and the user's `--shape NAME=1x3x224x224` overrides, and
//! seeded random data that suits each input (normal floats; token ids, masks and
//! type ids for integer inputs).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::ir::{DType, Dim, Graph, Tensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("'{0}' is not a shape like NAME=1x3x224x224")]
    Syntax(String),
    #[error("--shape names '{0}', which is not an input of the model (inputs: {1})")]
    Unknown(String, String),
    #[error("input '{name}' has rank {rank}, but --shape gives {given} dimensions")]
    Rank {
        name: String,
        rank: usize,
        given: usize,
    },
    #[error("input '{name}' has size {want} on axis {axis}, but --shape gives {got}")]
    Dim {
        name: String,
        axis: usize,
        want: usize,
        got: usize,
    },
    #[error("input '{0}' has no declared type")]
    Untyped(String),
}

/// The sizes that `overrides` give the symbolic dims of the inputs they name, by
/// symbol: `--shape input_ids=2x9` binds `batch` to 2 and `sequence` to 9 for every
/// input that shares them.
pub fn bound_symbols(g: &Graph, overrides: &[(String, Vec<usize>)]) -> HashMap<String, usize> {
    let mut bound = HashMap::new();
    for &id in &g.inputs {
        let node = g.node(id);
        let (Some(ty), Some((_, given))) = (
            node.outputs[0].ty.as_ref(),
            overrides.iter().find(|(n, _)| *n == node.name),
        ) else {
            continue;
        };
        for (d, &got) in ty.shape.dims().iter().zip(given) {
            if let Dim::Sym(sym) = d {
                bound.entry(sym.clone()).or_insert(got);
            }
        }
    }
    bound
}

/// Parses `NAME=1x3x224x224` (also `NAME=1,3,224,224`; `NAME=` alone is a scalar).
pub fn parse_shape(s: &str) -> Result<(String, Vec<usize>), InputError> {
    let (name, dims) = s
        .split_once('=')
        .ok_or_else(|| InputError::Syntax(s.into()))?;
    if name.is_empty() {
        return Err(InputError::Syntax(s.into()));
    }
    let dims = if dims.trim().is_empty() {
        vec![]
    } else {
        dims.split(['x', ','])
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .map_err(|_| InputError::Syntax(s.into()))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((name.to_string(), dims))
}

/// The concrete dtype and shape of every graph input: `overrides` first, then the
/// declared dims, with a symbolic dim taking the size an override gave the same
/// symbol on another input (`--shape input_ids=2x9` sizes `attention_mask` too), else
/// `batch` on axis 0 and `seq` elsewhere.
pub fn concrete_input_shapes(
    g: &Graph,
    overrides: &[(String, Vec<usize>)],
    batch: usize,
    seq: usize,
) -> Result<Vec<(String, DType, Vec<usize>)>, InputError> {
    let names: Vec<String> = g.inputs.iter().map(|&i| g.node(i).name.clone()).collect();
    for (n, _) in overrides {
        if !names.contains(n) {
            return Err(InputError::Unknown(n.clone(), names.join(", ")));
        }
    }
    let bound = bound_symbols(g, overrides);
    let mut out = Vec::new();
    for &id in &g.inputs {
        let node = g.node(id);
        let ty = node.outputs[0]
            .ty
            .as_ref()
            .ok_or_else(|| InputError::Untyped(node.name.clone()))?;
        let dims = match overrides.iter().find(|(n, _)| *n == node.name) {
            Some((_, given)) => {
                if given.len() != ty.shape.rank() {
                    return Err(InputError::Rank {
                        name: node.name.clone(),
                        rank: ty.shape.rank(),
                        given: given.len(),
                    });
                }
                for (axis, (d, &got)) in ty.shape.dims().iter().zip(given).enumerate() {
                    if let Dim::Known(want) = d
                        && *want != got
                    {
                        return Err(InputError::Dim {
                            name: node.name.clone(),
                            axis,
                            want: *want,
                            got,
                        });
                    }
                }
                given.clone()
            }
            None => ty
                .shape
                .dims()
                .iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    Dim::Known(n) => *n,
                    Dim::Sym(sym) if bound.contains_key(sym) => bound[sym],
                    Dim::Sym(_) if axis == 0 => batch,
                    Dim::Sym(_) => seq,
                })
                .collect(),
        };
        out.push((node.name.clone(), ty.dtype, dims));
    }
    Ok(out)
}

/// For each integer input of `g` that indexes a constant table directly (a token
/// embedding's `Gather`), the number of rows the smallest such table has: random
/// ids must stay below it.
pub fn index_bounds(g: &Graph) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for &id in &g.inputs {
        let mut bound: Option<i64> = None;
        for (consumer, slot) in g.consumers(crate::ir::Port::new(id, 0)) {
            let node = g.node(consumer);
            let crate::ir::Op::Gather { axis } = node.op else {
                continue;
            };
            let table = g.input(consumer, 0).map(|p| &g.node(p.node).op);
            if slot != 1 {
                continue;
            }
            if let Some(crate::ir::Op::Const(t)) = table {
                let rank = t.shape().len() as i64;
                let axis = if axis < 0 { axis + rank } else { axis };
                if let Some(&rows) = usize::try_from(axis).ok().and_then(|a| t.shape().get(a)) {
                    let rows = rows as i64;
                    bound = Some(bound.map_or(rows, |b| b.min(rows)));
                }
            }
        }
        if let Some(b) = bound.filter(|&b| b > 0) {
            out.push((g.node(id).name.clone(), b));
        }
    }
    out
}

/// Brings the integer values of the inputs `bounds` names below their bound (the
/// remainder), so that random token ids index real rows.
pub fn apply_index_bounds(inputs: &mut [(String, Tensor)], bounds: &[(String, i64)]) {
    for (name, t) in inputs.iter_mut() {
        let Some((_, b)) = bounds.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let data = match t.data() {
            TensorData::I64(v) => TensorData::I64(v.iter().map(|x| x.rem_euclid(*b)).collect()),
            TensorData::I32(v) => TensorData::I32(
                v.iter()
                    .map(|x| (i64::from(*x).rem_euclid(*b)) as i32)
                    .collect(),
            ),
            _ => continue,
        };
        *t = Tensor::new(t.shape().to_vec(), data).expect("same length");
    }
}

/// Seeded random values for each input. Floats are standard normal; integer inputs
/// whose name mentions a mask get ones, type ids get zeros, anything else (token ids,
/// indices) gets values in `0..100`, which [`apply_index_bounds`] brings below a
/// smaller embedding table's row count.
pub fn random_inputs(shapes: &[(String, DType, Vec<usize>)], seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|(name, dtype, dims)| {
            let n: usize = dims.iter().product();
            let lname = name.to_lowercase();
            let ints = |rng: &mut StdRng| -> Vec<i64> {
                if lname.contains("mask") {
                    vec![1; n]
                } else if lname.contains("type") {
                    vec![0; n]
                } else {
                    (0..n).map(|_| rng.random_range(0..100i64)).collect()
                }
            };
            let data = match dtype {
                DType::F32 | DType::F16 | DType::BF16 => {
                    let v: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
                    match dtype {
                        DType::F16 => {
                            TensorData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect())
                        }
                        DType::BF16 => {
                            TensorData::BF16(v.iter().map(|&x| half::bf16::from_f32(x)).collect())
                        }
                        _ => TensorData::F32(v),
                    }
                }
                DType::I64 => TensorData::I64(ints(&mut rng)),
                DType::I32 => {
                    TensorData::I32(ints(&mut rng).into_iter().map(|x| x as i32).collect())
                }
                DType::Bool => TensorData::Bool((0..n).map(|_| rng.random::<bool>()).collect()),
            };
            let t =
                Tensor::new(dims.clone(), data).expect("length matches the shape by construction");
            (name.clone(), t)
        })
        .collect()
}

/// One standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Shape, TensorType};

    fn graph() -> Graph {
        let mut g = Graph::new("t");
        g.add_input(
            "image",
            TensorType::new(
                DType::F32,
                Shape(vec![Dim::sym("batch"), Dim::Known(3), Dim::Known(4)]),
            ),
        );
        g.add_input(
            "attention_mask",
            TensorType::new(DType::I64, Shape(vec![Dim::sym("batch"), Dim::sym("seq")])),
        );
        g
    }

    #[test]
    fn parses_shapes() {
        assert_eq!(
            parse_shape("x=1x3x224x224").unwrap(),
            ("x".into(), vec![1, 3, 224, 224])
        );
        assert_eq!(parse_shape("x=2,5").unwrap(), ("x".into(), vec![2, 5]));
        assert_eq!(parse_shape("x=").unwrap(), ("x".into(), vec![]));
        assert!(parse_shape("x").is_err());
        assert!(parse_shape("x=1xq").is_err());
        assert!(parse_shape("=3").is_err());
    }

    #[test]
    fn resolves_symbols_and_checks_overrides() {
        let g = graph();
        let s = concrete_input_shapes(&g, &[], 2, 7).unwrap();
        assert_eq!(s[0].2, vec![2, 3, 4]);
        assert_eq!(s[1].2, vec![2, 7]);
        let s = concrete_input_shapes(&g, &[("image".into(), vec![5, 3, 4])], 2, 7).unwrap();
        assert_eq!(s[0].2, vec![5, 3, 4]);
        // The batch symbol the image fixed sizes the mask as well.
        assert_eq!(s[1].2, vec![5, 7]);
        assert!(matches!(
            concrete_input_shapes(&g, &[("image".into(), vec![5, 2, 4])], 1, 1),
            Err(InputError::Dim { axis: 1, .. })
        ));
        assert!(matches!(
            concrete_input_shapes(&g, &[("image".into(), vec![5])], 1, 1),
            Err(InputError::Rank { .. })
        ));
        assert!(matches!(
            concrete_input_shapes(&g, &[("nope".into(), vec![5])], 1, 1),
            Err(InputError::Unknown(..))
        ));
    }

    #[test]
    fn random_inputs_are_seeded_and_typed() {
        let g = graph();
        let s = concrete_input_shapes(&g, &[], 2, 3).unwrap();
        let a = random_inputs(&s, 7);
        let b = random_inputs(&s, 7);
        let c = random_inputs(&s, 8);
        assert_eq!(a, b);
        assert_ne!(a[0].1, c[0].1);
        assert_eq!(a[1].1.as_i64().unwrap(), &[1; 6]);
        let x = a[0].1.as_f32().unwrap();
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        assert!(mean.abs() < 1.5 && x.iter().any(|&v| v < 0.0) && x.iter().any(|&v| v > 0.0));
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::ir::{Op, Port, Shape, TensorType};

    /// `input_ids` indexes a 7-row embedding table and a 5-row one; `other` feeds
    /// only arithmetic.
    fn embedding_graph() -> Graph {
        let mut g = Graph::new("t");
        let ty = || TensorType::new(DType::I64, Shape(vec![Dim::sym("b"), Dim::sym("s")]));
        let ids = g.add_input("input_ids", ty());
        let other = g.add_input("other", ty());
        let mut outs = Vec::new();
        for (name, rows) in [("big", 7usize), ("small", 5)] {
            let table = g.add_const(
                name,
                Tensor::from_f32(vec![rows, 2], vec![0.5; rows * 2]).unwrap(),
            );
            let gather = g.add_op(
                format!("{name}_gather"),
                Op::Gather { axis: 0 },
                &[Some(Port::new(table, 0)), Some(Port::new(ids, 0))],
                &[&format!("{name}_out")],
            );
            outs.push(Port::new(gather, 0));
        }
        let add = g.add_op(
            "add",
            Op::Binary(crate::ir::BinaryOp::Add),
            &[Some(Port::new(other, 0)), Some(Port::new(other, 0))],
            &["sum"],
        );
        outs.push(Port::new(add, 0));
        g.outputs = outs;
        g
    }

    #[test]
    fn token_ids_stay_below_the_smallest_table() {
        let g = embedding_graph();
        let bounds = index_bounds(&g);
        assert_eq!(bounds, vec![("input_ids".to_string(), 5)]);
        let mut inputs = vec![
            (
                "input_ids".to_string(),
                Tensor::from_i64(vec![1, 4], vec![4, 5, 99, -1]).unwrap(),
            ),
            (
                "other".to_string(),
                Tensor::from_i64(vec![1, 2], vec![42, 99]).unwrap(),
            ),
        ];
        apply_index_bounds(&mut inputs, &bounds);
        // 5 mod 5 = 0, 99 mod 5 = 4, −1 wraps to 4; `other` keeps its values.
        assert_eq!(inputs[0].1.to_i64_vec(), [4, 0, 4, 4]);
        assert_eq!(inputs[1].1.to_i64_vec(), [42, 99]);
    }
}
