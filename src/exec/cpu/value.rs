//! The CPU backend's value: a candle-core CPU tensor paired with the IR element type
//! it stands for. candle has no i32 or bool kernels we rely on, so i32 values are
//! stored as i64 (wrapped to the i32 range whenever they are produced) and bools as
//! u8 0/1; f16 and bf16 are stored natively and computed through f32. Host tensors
//! enter with [`CpuValue::from_host`] and leave with [`CpuValue::to_host`]; op
//! kernels read values through strided views and build new values from vectors.

use candle_core::{CpuStorage, Device, Storage, WithDType};
use half::{bf16, f16};

use super::strided::Strided;
use crate::exec::shapes::Operand;
use crate::ir::{DType, Tensor, TensorData};

/// An error inside one op; the backend adds the node and op names.
#[derive(Debug)]
pub(crate) struct OpError(pub String);

pub(crate) type OpResult<T> = Result<T, OpError>;

impl From<candle_core::Error> for OpError {
    fn from(e: candle_core::Error) -> OpError {
        let msg = e.to_string();
        OpError(msg.lines().next().unwrap_or("candle error").to_string())
    }
}

/// Returns early with an [`OpError`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::exec::cpu::value::OpError(format!($($arg)*)))
    };
}
pub(crate) use bail;

pub(crate) use crate::exec::shapes::sh;

/// A tensor on the CPU backend.
#[derive(Clone, Debug)]
pub struct CpuValue {
    t: candle_core::Tensor,
    dtype: DType,
}

/// The candle element type that stores values of `dtype`.
pub(crate) fn storage_dtype(dtype: DType) -> candle_core::DType {
    match dtype {
        DType::F32 => candle_core::DType::F32,
        DType::F16 => candle_core::DType::F16,
        DType::BF16 => candle_core::DType::BF16,
        DType::I64 | DType::I32 => candle_core::DType::I64,
        DType::Bool => candle_core::DType::U8,
    }
}

impl CpuValue {
    /// Wraps a candle tensor whose storage type matches `dtype`.
    pub(crate) fn from_candle(t: candle_core::Tensor, dtype: DType) -> OpResult<CpuValue> {
        if t.dtype() != storage_dtype(dtype) {
            bail!("internal: {dtype} value stored as {:?}", t.dtype());
        }
        Ok(CpuValue { t, dtype })
    }

    pub(crate) fn tensor(&self) -> &candle_core::Tensor {
        &self.t
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        self.t.dims()
    }

    /// The dims and type, as the backend-neutral shape checks take them.
    pub(crate) fn operand(&self) -> Operand<'_> {
        Operand::new(self.dims(), self.dtype)
    }

    pub fn rank(&self) -> usize {
        self.t.rank()
    }

    pub fn numel(&self) -> usize {
        self.t.elem_count()
    }

    pub(crate) fn from_host(t: &Tensor) -> OpResult<CpuValue> {
        let dims = t.shape().to_vec();
        let dev = &Device::Cpu;
        let ct = match t.data() {
            TensorData::F32(v) => candle_core::Tensor::from_slice(v, dims, dev)?,
            TensorData::F16(v) => candle_core::Tensor::from_slice(v, dims, dev)?,
            TensorData::BF16(v) => candle_core::Tensor::from_slice(v, dims, dev)?,
            TensorData::I64(v) => candle_core::Tensor::from_slice(v, dims, dev)?,
            TensorData::I32(v) => {
                let w: Vec<i64> = v.iter().map(|&x| x as i64).collect();
                candle_core::Tensor::from_vec(w, dims, dev)?
            }
            TensorData::Bool(v) => {
                let w: Vec<u8> = v.iter().map(|&x| x as u8).collect();
                candle_core::Tensor::from_vec(w, dims, dev)?
            }
        };
        CpuValue::from_candle(ct, t.dtype())
    }

    pub(crate) fn to_host(&self) -> OpResult<Tensor> {
        let dims = self.dims().to_vec();
        let data = match self.dtype {
            DType::F32 => TensorData::F32(self.contiguous_vec::<f32>()?),
            DType::F16 => TensorData::F16(self.contiguous_vec::<f16>()?),
            DType::BF16 => TensorData::BF16(self.contiguous_vec::<bf16>()?),
            DType::I64 => TensorData::I64(self.contiguous_vec::<i64>()?),
            DType::I32 => TensorData::I32(
                self.contiguous_vec::<i64>()?
                    .into_iter()
                    .map(|x| x as i32)
                    .collect(),
            ),
            DType::Bool => TensorData::Bool(
                self.contiguous_vec::<u8>()?
                    .into_iter()
                    .map(|x| x != 0)
                    .collect(),
            ),
        };
        Tensor::new(dims, data).map_err(|e| OpError(e.to_string()))
    }

    /// The stored elements in row-major order.
    pub(crate) fn contiguous_vec<T: WithDType + Default>(&self) -> OpResult<Vec<T>> {
        self.read::<T, _>(|v| Ok(v.to_contiguous().into_owned()))
    }

    /// Calls `f` with a strided view of the storage, which must hold `T`.
    pub(crate) fn read<T: WithDType, R>(
        &self,
        f: impl FnOnce(Strided<'_, T>) -> OpResult<R>,
    ) -> OpResult<R> {
        read_tensor(&self.t, f)
    }

    /// The value as an f32 candle tensor: f16 and bf16 are widened, f32 is shared.
    pub(crate) fn float_tensor(&self) -> OpResult<candle_core::Tensor> {
        match self.dtype {
            DType::F32 => Ok(self.t.clone()),
            DType::F16 | DType::BF16 => Ok(self.t.to_dtype(candle_core::DType::F32)?),
            d => bail!("expected a float tensor, got {d}"),
        }
    }

    /// Calls `f` with an f32 view of a float value (f16 and bf16 widened first).
    pub(crate) fn read_f32<R>(
        &self,
        f: impl FnOnce(Strided<'_, f32>) -> OpResult<R>,
    ) -> OpResult<R> {
        let t = self.float_tensor()?;
        read_tensor(&t, f)
    }

    /// Calls `f` with an i64 view of an integer value.
    pub(crate) fn read_i64<R>(
        &self,
        f: impl FnOnce(Strided<'_, i64>) -> OpResult<R>,
    ) -> OpResult<R> {
        if !self.dtype.is_int() {
            bail!("expected an integer tensor, got {}", self.dtype);
        }
        read_tensor(&self.t, f)
    }

    /// Calls `f` with a 0/1 view of a bool value.
    pub(crate) fn read_bool<R>(
        &self,
        f: impl FnOnce(Strided<'_, u8>) -> OpResult<R>,
    ) -> OpResult<R> {
        if self.dtype != DType::Bool {
            bail!("expected a bool tensor, got {}", self.dtype);
        }
        read_tensor(&self.t, f)
    }

    /// Every element as i64 (integers as they are, floats truncated, bools 0/1):
    /// the form of shapes, axes, indices and sizes.
    pub(crate) fn to_i64_vec(&self) -> OpResult<Vec<i64>> {
        match self.dtype {
            DType::I64 | DType::I32 => self.contiguous_vec::<i64>(),
            DType::Bool => Ok(self
                .contiguous_vec::<u8>()?
                .into_iter()
                .map(i64::from)
                .collect()),
            _ => Ok(self.to_f64_vec()?.into_iter().map(|x| x as i64).collect()),
        }
    }

    /// Every element as f64: the form of scalar parameters (Clip bounds, Range).
    pub(crate) fn to_f64_vec(&self) -> OpResult<Vec<f64>> {
        Ok(match self.dtype {
            DType::I64 | DType::I32 => self
                .contiguous_vec::<i64>()?
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            DType::Bool => self
                .contiguous_vec::<u8>()?
                .into_iter()
                .map(f64::from)
                .collect(),
            _ => {
                let t = self.float_tensor()?;
                read_tensor::<f32, _>(&t, |v| {
                    Ok(v.to_contiguous().iter().map(|&x| x as f64).collect())
                })?
            }
        })
    }

    /// A float value of `dtype` (f32, f16 or bf16) from f32 elements.
    pub(crate) fn from_f32(v: Vec<f32>, dims: &[usize], dtype: DType) -> OpResult<CpuValue> {
        let t = candle_core::Tensor::from_vec(v, dims, &Device::Cpu)?;
        let t = match dtype {
            DType::F32 => t,
            DType::F16 | DType::BF16 => t.to_dtype(storage_dtype(dtype))?,
            d => bail!("internal: f32 data given for a {d} value"),
        };
        CpuValue::from_candle(t, dtype)
    }

    /// An integer value of `dtype` (i64, or i32 wrapped to its range).
    pub(crate) fn from_i64(mut v: Vec<i64>, dims: &[usize], dtype: DType) -> OpResult<CpuValue> {
        match dtype {
            DType::I64 => {}
            DType::I32 => v.iter_mut().for_each(|x| *x = *x as i32 as i64),
            d => bail!("internal: i64 data given for a {d} value"),
        }
        let t = candle_core::Tensor::from_vec(v, dims, &Device::Cpu)?;
        CpuValue::from_candle(t, dtype)
    }

    /// A bool value from 0/1 bytes.
    pub(crate) fn from_bool(v: Vec<u8>, dims: &[usize]) -> OpResult<CpuValue> {
        let t = candle_core::Tensor::from_vec(v, dims, &Device::Cpu)?;
        CpuValue::from_candle(t, DType::Bool)
    }

    /// A value of `dtype` built from a vector of its storage type.
    pub(crate) fn from_storage_vec<T: WithDType>(
        v: Vec<T>,
        dims: &[usize],
        dtype: DType,
    ) -> OpResult<CpuValue> {
        let t = candle_core::Tensor::from_vec(v, dims, &Device::Cpu)?;
        CpuValue::from_candle(t, dtype)
    }
}

/// Calls `f` with a strided view of a CPU tensor's storage.
pub(crate) fn read_tensor<T: WithDType, R>(
    t: &candle_core::Tensor,
    f: impl FnOnce(Strided<'_, T>) -> OpResult<R>,
) -> OpResult<R> {
    let (guard, layout) = t.storage_and_layout();
    let data: &[T] = match &*guard {
        Storage::Cpu(s) => storage_slice(s)?,
        _ => bail!("tensor is not in CPU memory"),
    };
    let view = Strided::new(
        data,
        layout.start_offset() as isize,
        layout.dims().to_vec(),
        layout.stride().iter().map(|&s| s as isize).collect(),
    )?;
    f(view)
}

fn storage_slice<T: WithDType>(s: &CpuStorage) -> OpResult<&[T]> {
    Ok(s.as_slice::<T>()?)
}

/// Calls a generic body with the storage element type of a value: the macro binds
/// `$T` to f32, f16, bf16, i64 or u8 according to the value's IR dtype.
macro_rules! with_storage_type {
    ($dtype:expr, $T:ident => $body:expr) => {{
        use $crate::ir::DType as __D;
        match $dtype {
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F16 => {
                type $T = half::f16;
                $body
            }
            __D::BF16 => {
                type $T = half::bf16;
                $body
            }
            __D::I64 | __D::I32 => {
                type $T = i64;
                $body
            }
            __D::Bool => {
                type $T = u8;
                $body
            }
        }
    }};
}
pub(crate) use with_storage_type;
