//! The eight stored tensors of one supernet layer, their shapes, names and initial
//! values.
//!
//! Every adapted layer stores `Ad, Au, Bd, Bu, Cd, Cu, D, E` at the supernet's largest
//! rank R; each option reads a slice of them (glora-spec §1.3). GLoRA insertion creates
//! them with [`AdapterTensors::init`]; checkpoints and the supernet artifact store them
//! under [`tensor_names`] and hand them back through [`AdapterTensors::from_tensors`];
//! merge and the reference forward read them.

use rand::{Rng, RngExt};

use crate::ir::{DType, Tensor};

use super::params::LayerShape;

/// Suffixes of the stored tensors, in the order every array in this module uses.
pub const TENSOR_SUFFIXES: [&str; 8] = ["Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"];

/// The names a layer's tensors are stored under: `<layer>.Ad`, …, `<layer>.E`.
pub fn tensor_names(layer: &str) -> [String; 8] {
    TENSOR_SUFFIXES.map(|suffix| format!("{layer}.{suffix}"))
}

/// Adapter tensors that cannot be built or do not fit their layer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AdapterError {
    #[error("the supernet rank must be at least 1")]
    ZeroRank,
    #[error("a layer with d_in = {d_in} and d_out = {d_out} cannot carry an adapter")]
    EmptyLayer { d_in: usize, d_out: usize },
    #[error("layer {layer:?}: tensor {tensor} should have shape {expected:?} but has {actual:?}")]
    Shape {
        layer: String,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("layer {layer:?}: tensor {tensor} should hold floats but holds {dtype}")]
    DType {
        layer: String,
        tensor: String,
        dtype: DType,
    },
}

/// The supernet tensors of one layer. Every tensor is f32 with the shape
/// [`AdapterTensors::expected_shapes`] gives for the layer and rank; the constructors
/// guarantee it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterTensors {
    ad: Tensor,
    au: Tensor,
    bd: Tensor,
    bu: Tensor,
    cd: Tensor,
    cu: Tensor,
    d: Tensor,
    e: Tensor,
    d_in: usize,
    d_out: usize,
    rank: usize,
}

/// The tensors' values as slices, row-major, for the arithmetic in `merge`.
pub(crate) struct AdapterValues<'a> {
    pub ad: &'a [f32],
    pub au: &'a [f32],
    pub bd: &'a [f32],
    pub bu: &'a [f32],
    pub cd: &'a [f32],
    pub cu: &'a [f32],
    pub d: &'a [f32],
    pub e: &'a [f32],
    /// Row stride of the down factors Ad, Bd, Cd, and row count of the up factors.
    pub rank: usize,
}

/// Xavier-uniform (gain 1) with PyTorch's fan convention for a 2-D `(rows, cols)`
/// tensor: fan_in = cols, fan_out = rows, values in `[-a, a)` with
/// `a = sqrt(6 / (fan_in + fan_out))`.
fn xavier_uniform<R: Rng + ?Sized>(rows: usize, cols: usize, rng: &mut R) -> Vec<f32> {
    let bound = xavier_bound(rows, cols);
    (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound))
        .collect()
}

fn xavier_bound(rows: usize, cols: usize) -> f32 {
    (6.0 / (rows + cols) as f64).sqrt() as f32
}

fn zeros(shape: Vec<usize>) -> Tensor {
    Tensor::zeros(DType::F32, shape)
}

fn check_layer(shape: LayerShape, rank: usize) -> Result<(), AdapterError> {
    if rank == 0 {
        return Err(AdapterError::ZeroRank);
    }
    if shape.d_in == 0 || shape.d_out == 0 {
        return Err(AdapterError::EmptyLayer {
            d_in: shape.d_in,
            d_out: shape.d_out,
        });
    }
    Ok(())
}

/// Builds an f32 tensor from values generated for its own shape.
fn f32_tensor(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
    let n: usize = shape.iter().product();
    debug_assert_eq!(n, values.len());
    Tensor::from_f32(shape.clone(), values).unwrap_or_else(|_| zeros(shape))
}

impl AdapterTensors {
    /// Shapes of `Ad, Au, Bd, Bu, Cd, Cu, D, E` for a layer at supernet rank `rank`.
    pub fn expected_shapes(shape: LayerShape, rank: usize) -> [Vec<usize>; 8] {
        let LayerShape { d_in, d_out, .. } = shape;
        [
            vec![d_out, rank],
            vec![rank, d_in],
            vec![d_out, rank],
            vec![rank, d_in],
            vec![d_in, rank],
            vec![rank, 1],
            vec![d_out],
            vec![d_out],
        ]
    }

    /// Fresh supernet tensors: zeros for the down factors, D and E, so that every
    /// option materialises to zero and the layer starts equal to its base;
    /// Xavier-uniform for the up factors Au, Bu, Cu, drawn in that order.
    pub fn init<R: Rng + ?Sized>(
        shape: LayerShape,
        rank: usize,
        rng: &mut R,
    ) -> Result<AdapterTensors, AdapterError> {
        check_layer(shape, rank)?;
        let LayerShape { d_in, d_out, .. } = shape;
        let au = f32_tensor(vec![rank, d_in], xavier_uniform(rank, d_in, rng));
        let bu = f32_tensor(vec![rank, d_in], xavier_uniform(rank, d_in, rng));
        let cu = f32_tensor(vec![rank, 1], xavier_uniform(rank, 1, rng));
        Ok(AdapterTensors {
            ad: zeros(vec![d_out, rank]),
            au,
            bd: zeros(vec![d_out, rank]),
            bu,
            cd: zeros(vec![d_in, rank]),
            cu,
            d: zeros(vec![d_out]),
            e: zeros(vec![d_out]),
            d_in,
            d_out,
            rank,
        })
    }

    /// Tensors read back from a checkpoint or artifact, in [`TENSOR_SUFFIXES`] order.
    /// Each must have its expected shape; f16 and bf16 values are widened to f32.
    pub fn from_tensors(
        layer: &str,
        shape: LayerShape,
        rank: usize,
        tensors: [Tensor; 8],
    ) -> Result<AdapterTensors, AdapterError> {
        check_layer(shape, rank)?;
        let expected = AdapterTensors::expected_shapes(shape, rank);
        let mut tensors = tensors;
        for ((tensor, expected), suffix) in tensors.iter_mut().zip(expected).zip(TENSOR_SUFFIXES) {
            let tensor_name = || format!("{layer}.{suffix}");
            if tensor.shape() != expected.as_slice() {
                return Err(AdapterError::Shape {
                    layer: layer.to_string(),
                    tensor: tensor_name(),
                    expected,
                    actual: tensor.shape().to_vec(),
                });
            }
            let widened = tensor.widened();
            if widened.dtype() != DType::F32 {
                return Err(AdapterError::DType {
                    layer: layer.to_string(),
                    tensor: tensor_name(),
                    dtype: widened.dtype(),
                });
            }
            *tensor = widened;
        }
        let [ad, au, bd, bu, cd, cu, d, e] = tensors;
        Ok(AdapterTensors {
            ad,
            au,
            bd,
            bu,
            cd,
            cu,
            d,
            e,
            d_in: shape.d_in,
            d_out: shape.d_out,
            rank,
        })
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// The supernet rank R the factors are stored at.
    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn ad(&self) -> &Tensor {
        &self.ad
    }

    pub fn au(&self) -> &Tensor {
        &self.au
    }

    pub fn bd(&self) -> &Tensor {
        &self.bd
    }

    pub fn bu(&self) -> &Tensor {
        &self.bu
    }

    pub fn cd(&self) -> &Tensor {
        &self.cd
    }

    pub fn cu(&self) -> &Tensor {
        &self.cu
    }

    pub fn d(&self) -> &Tensor {
        &self.d
    }

    pub fn e(&self) -> &Tensor {
        &self.e
    }

    /// All eight, in [`TENSOR_SUFFIXES`] order.
    pub fn tensors(&self) -> [&Tensor; 8] {
        [
            &self.ad, &self.au, &self.bd, &self.bu, &self.cd, &self.cu, &self.d, &self.e,
        ]
    }

    /// All eight, in [`TENSOR_SUFFIXES`] order.
    pub fn into_tensors(self) -> [Tensor; 8] {
        [
            self.ad, self.au, self.bd, self.bu, self.cd, self.cu, self.d, self.e,
        ]
    }

    pub(crate) fn values(&self) -> AdapterValues<'_> {
        // The constructors admit f32 tensors only, so the fallback is never taken.
        fn v(t: &Tensor) -> &[f32] {
            t.as_f32().unwrap_or(&[])
        }
        AdapterValues {
            ad: v(&self.ad),
            au: v(&self.au),
            bd: v(&self.bd),
            bu: v(&self.bu),
            cd: v(&self.cd),
            cu: v(&self.cu),
            d: v(&self.d),
            e: v(&self.e),
            rank: self.rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn shape(d_in: usize, d_out: usize) -> LayerShape {
        LayerShape {
            d_in,
            d_out,
            has_bias: true,
        }
    }

    fn values(t: &Tensor) -> &[f32] {
        t.as_f32().unwrap()
    }

    #[test]
    fn init_shapes_and_zeros() {
        let mut rng = StdRng::seed_from_u64(1);
        let t = AdapterTensors::init(shape(5, 3), 4, &mut rng).unwrap();
        let shapes: Vec<&[usize]> = t.tensors().iter().map(|t| t.shape()).collect();
        assert_eq!(
            shapes,
            [
                &[3, 4][..],
                &[4, 5],
                &[3, 4],
                &[4, 5],
                &[5, 4],
                &[4, 1],
                &[3],
                &[3]
            ]
        );
        for zero in [t.ad(), t.bd(), t.cd(), t.d(), t.e()] {
            assert_eq!(zero.dtype(), DType::F32);
            assert!(values(zero).iter().all(|&v| v == 0.0));
        }
        assert_eq!((t.d_in(), t.d_out(), t.rank()), (5, 3, 4));
    }

    #[test]
    fn up_factors_are_xavier_uniform() {
        let mut rng = StdRng::seed_from_u64(2);
        let t = AdapterTensors::init(shape(384, 1536), 4, &mut rng).unwrap();
        // Hand values: sqrt(6 / (384 + 4)) and sqrt(6 / (1 + 4)).
        let up_bound = 0.124_354_99_f32;
        let cu_bound = 1.095_445_1_f32;
        for (up, bound) in [(t.au(), up_bound), (t.bu(), up_bound), (t.cu(), cu_bound)] {
            let v = values(up);
            assert!(v.iter().all(|x| x.abs() <= bound), "outside ±{bound}");
            let first = v[0];
            assert!(v.iter().any(|&x| x != first), "all values equal");
        }
        // 1536 draws reach close to both ends of the interval.
        let au = values(t.au());
        let max = au.iter().copied().fold(f32::MIN, f32::max);
        let min = au.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            max > 0.95 * up_bound && min < -0.95 * up_bound,
            "{min}..{max}"
        );
        // Au and Bu are separate draws.
        assert_ne!(values(t.au()), values(t.bu()));
    }

    #[test]
    fn same_seed_same_tensors() {
        let make = |seed| AdapterTensors::init(shape(7, 2), 8, &mut StdRng::seed_from_u64(seed));
        assert_eq!(make(3).unwrap(), make(3).unwrap());
        assert_ne!(make(3).unwrap(), make(4).unwrap());
    }

    #[test]
    fn degenerate_layers_are_rejected() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            AdapterTensors::init(shape(5, 3), 0, &mut rng),
            Err(AdapterError::ZeroRank)
        );
        assert!(matches!(
            AdapterTensors::init(shape(0, 3), 4, &mut rng),
            Err(AdapterError::EmptyLayer { d_in: 0, d_out: 3 })
        ));
    }

    #[test]
    fn names_follow_the_layer() {
        let names = tensor_names("blocks.0.attn.qkv");
        assert_eq!(names[0], "blocks.0.attn.qkv.Ad");
        assert_eq!(names[5], "blocks.0.attn.qkv.Cu");
        assert_eq!(names[7], "blocks.0.attn.qkv.E");
    }

    #[test]
    fn from_tensors_round_trips() {
        let mut rng = StdRng::seed_from_u64(5);
        let t = AdapterTensors::init(shape(6, 4), 2, &mut rng).unwrap();
        let back =
            AdapterTensors::from_tensors("fc", shape(6, 4), 2, t.clone().into_tensors()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn from_tensors_names_the_misshapen_tensor() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut parts = AdapterTensors::init(shape(6, 4), 2, &mut rng)
            .unwrap()
            .into_tensors();
        parts[4] = Tensor::zeros(DType::F32, vec![2, 6]);
        let err = AdapterTensors::from_tensors("blk.fc1", shape(6, 4), 2, parts).unwrap_err();
        assert_eq!(
            err,
            AdapterError::Shape {
                layer: "blk.fc1".into(),
                tensor: "blk.fc1.Cd".into(),
                expected: vec![6, 2],
                actual: vec![2, 6],
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("blk.fc1.Cd") && msg.contains("[6, 2]") && msg.contains("[2, 6]"));
    }

    #[test]
    fn from_tensors_rejects_integers_and_widens_halves() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut parts = AdapterTensors::init(shape(6, 4), 2, &mut rng)
            .unwrap()
            .into_tensors();
        parts[7] = Tensor::zeros(DType::F16, vec![4]);
        let t = AdapterTensors::from_tensors("fc", shape(6, 4), 2, parts.clone()).unwrap();
        assert_eq!(t.e().dtype(), DType::F32);
        parts[6] = Tensor::zeros(DType::I64, vec![4]);
        let err = AdapterTensors::from_tensors("fc", shape(6, 4), 2, parts).unwrap_err();
        assert!(matches!(err, AdapterError::DType { ref tensor, .. } if tensor == "fc.D"));
    }
}
