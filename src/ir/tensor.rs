//! Host tensors: the values of `Const` and `Param` nodes, graph inputs given by the
//! user, and the results that backends hand back. Data sits behind an `Arc` so that
//! cloning a graph or a constant is cheap; it is row-major and contiguous.

use std::sync::Arc;

use half::{bf16, f16};

use super::{DType, Shape};

/// Element storage of a host tensor, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors building a tensor from parts that do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    Length {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("{len} bytes are not a whole number of {dtype} elements")]
    Bytes { len: usize, dtype: DType },
}

/// A dense, row-major host tensor with a concrete shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<TensorData>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(TensorError::Length {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor {
            shape,
            data: Arc::new(data),
        })
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::I64(v))
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: Arc::new(TensorData::F32(vec![v])),
        }
    }

    pub fn scalar_i64(v: i64) -> Tensor {
        Tensor {
            shape: vec![],
            data: Arc::new(TensorData::I64(vec![v])),
        }
    }

    /// A 1-D i64 tensor, the usual form of shapes, axes and indices.
    pub fn vec_i64(v: Vec<i64>) -> Tensor {
        Tensor {
            shape: vec![v.len()],
            data: Arc::new(TensorData::I64(v)),
        }
    }

    /// A tensor of `dtype` filled with zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::BF16 => TensorData::BF16(vec![bf16::ZERO; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        };
        Tensor {
            shape,
            data: Arc::new(data),
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn ir_shape(&self) -> Shape {
        Shape::known(&self.shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The same data under another shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let expected: usize = shape.iter().product();
        if expected != self.numel() {
            return Err(TensorError::Length {
                shape,
                expected,
                got: self.numel(),
            });
        }
        Ok(Tensor {
            shape,
            data: self.data.clone(),
        })
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &*self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &*self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &*self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Every element converted to f32 (integers and booleans by value).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &*self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

    /// Every element converted to f64, for comparisons and statistics.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &*self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as f64).collect(),
        }
    }

    /// Every element converted to i64 (floats truncated towards zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &*self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// f16 and bf16 data converted to f32; other types unchanged.
    pub fn widened(&self) -> Tensor {
        match &*self.data {
            TensorData::F16(_) | TensorData::BF16(_) => Tensor {
                shape: self.shape.clone(),
                data: Arc::new(TensorData::F32(self.to_f32_vec())),
            },
            _ => self.clone(),
        }
    }

    /// Little-endian bytes, as ONNX `raw_data` and safetensors store them.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &*self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    /// Decodes little-endian bytes. Makes no alignment assumption about `bytes`.
    pub fn from_le_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        let w = dtype.size_of();
        if !bytes.len().is_multiple_of(w) {
            return Err(TensorError::Bytes {
                len: bytes.len(),
                dtype,
            });
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::F16 => TensorData::F16(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DType::BF16 => TensorData::BF16(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            DType::I64 => TensorData::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                    .collect(),
            ),
            DType::I32 => TensorData::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        };
        Tensor::new(shape, data)
    }
}
