//! Tensors between ONNX and the IR: element-type codes, `TensorProto` → [`Tensor`]
//! (raw little-endian bytes, the typed repeated fields, or external data) for
//! initializers, `Constant` nodes and test-data files, and [`Tensor`] →
//! `TensorProto` (always as raw data) for export.

use std::path::Path;

use half::{bf16, f16};
use prost::Message;

use super::pb::TensorProto;
use super::pb::tensor_proto::{DataLocation, DataType};
use super::{OnnxError, external};
use crate::ir::{DType, Tensor, TensorData};

/// The IR element type of an ONNX `TensorProto.DataType` code.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    match DataType::try_from(code) {
        Ok(DataType::Float) => Ok(DType::F32),
        Ok(DataType::Float16) => Ok(DType::F16),
        Ok(DataType::Bfloat16) => Ok(DType::BF16),
        Ok(DataType::Int64) => Ok(DType::I64),
        Ok(DataType::Int32) => Ok(DType::I32),
        Ok(DataType::Bool) => Ok(DType::Bool),
        Ok(other) => Err(format!(
            "element type {} is not supported",
            other.as_str_name()
        )),
        Err(_) => Err(format!("element type {code} is not a known ONNX type")),
    }
}

/// The ONNX `TensorProto.DataType` code of an IR element type.
pub(crate) fn onnx_dtype(d: DType) -> i32 {
    let t = match d {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::I64 => DataType::Int64,
        DType::I32 => DataType::Int32,
        DType::Bool => DataType::Bool,
    };
    t as i32
}

/// Decodes a `TensorProto`. External data is looked up relative to `base_dir`, the
/// directory of the model (or tensor file) that holds it.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, OnnxError> {
    // Unnamed tensors (attribute values) are named by whoever reports the error.
    decode(t, base_dir).map_err(|m| {
        if t.name.is_empty() {
            OnnxError::new(m)
        } else {
            OnnxError::new(format!("tensor '{}': {m}", t.name))
        }
    })
}

/// Reads a file holding one serialised `TensorProto` (the `.pb` files of the ONNX test
/// suite) and returns its name and value.
pub fn read_tensor_file(path: &Path) -> Result<(String, Tensor), OnnxError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| OnnxError::new(format!("{source}: cannot read the file: {e}")))?;
    let proto = TensorProto::decode(bytes.as_slice()).map_err(|e| {
        OnnxError::new(format!(
            "{source}: not a valid serialised TensorProto (truncated or corrupt): {e}"
        ))
    })?;
    let t = tensor_from_proto(&proto, path.parent()).map_err(|e| e.within(&source))?;
    Ok((proto.name, t))
}

/// The tensor as a `TensorProto` named `name`, its data as raw little-endian bytes.
pub(crate) fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: onnx_dtype(t.dtype()),
        raw_data: t.to_le_bytes(),
        ..Default::default()
    }
}

fn decode(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, String> {
    let dtype = dtype_from_onnx(t.data_type)?;
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("dims {:?} have a negative entry", t.dims))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("dims {:?} hold more elements than fit in memory", t.dims))?;
    if t.data_location == DataLocation::External as i32 {
        let bytes = external::read(t, base_dir)?;
        return from_raw(dtype, shape, numel, &bytes, "external data");
    }
    if !t.raw_data.is_empty() {
        return from_raw(dtype, shape, numel, &t.raw_data, "raw_data");
    }
    from_typed_fields(t, dtype, shape, numel)
}

fn from_raw(
    dtype: DType,
    shape: Vec<usize>,
    numel: usize,
    bytes: &[u8],
    what: &str,
) -> Result<Tensor, String> {
    let need = numel.saturating_mul(dtype.size_of());
    if bytes.len() != need {
        return Err(format!(
            "{what} holds {} bytes but shape {shape:?} of {dtype} needs {need}",
            bytes.len()
        ));
    }
    Tensor::from_le_bytes(dtype, shape, bytes).map_err(|e| e.to_string())
}

/// Data from the typed repeated fields. `int32_data` also carries f16 and bf16 (as
/// their bit patterns in the low 16 bits) and bools.
fn from_typed_fields(
    t: &TensorProto,
    dtype: DType,
    shape: Vec<usize>,
    numel: usize,
) -> Result<Tensor, String> {
    let (field, len) = match dtype {
        DType::F32 => ("float_data", t.float_data.len()),
        DType::I64 => ("int64_data", t.int64_data.len()),
        DType::I32 | DType::F16 | DType::BF16 | DType::Bool => ("int32_data", t.int32_data.len()),
    };
    if len != numel {
        return Err(format!(
            "{field} holds {len} values but shape {shape:?} needs {numel}"
        ));
    }
    let data = match dtype {
        DType::F32 => TensorData::F32(t.float_data.clone()),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::I32 => TensorData::I32(t.int32_data.clone()),
        DType::Bool => TensorData::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        DType::F16 => TensorData::F16(
            t.int32_data
                .iter()
                .map(|&v| f16::from_bits(v as u16))
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(
            t.int32_data
                .iter()
                .map(|&v| bf16::from_bits(v as u16))
                .collect(),
        ),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dims: &[i64], data_type: DataType) -> TensorProto {
        TensorProto {
            name: "w".into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_fields_decode_to_the_same_f32_tensor() {
        let mut raw = proto(&[2, 2], DataType::Float);
        raw.raw_data = [1.0f32, -2.5, 3.25, 0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut typed = proto(&[2, 2], DataType::Float);
        typed.float_data = vec![1.0, -2.5, 3.25, 0.0];
        let a = tensor_from_proto(&raw, None).unwrap();
        let b = tensor_from_proto(&typed, None).unwrap();
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.as_f32().unwrap(), &[1.0, -2.5, 3.25, 0.0]);
        assert_eq!(a, b);
    }

    #[test]
    fn raw_data_needs_no_alignment() {
        // Slice the bytes at an odd offset so the f32/i64 reads cannot be aligned.
        let bytes: Vec<u8> = std::iter::once(0u8)
            .chain(7i64.to_le_bytes())
            .chain((-9i64).to_le_bytes())
            .collect();
        let mut t = proto(&[2], DataType::Int64);
        t.raw_data = bytes[1..].to_vec();
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().as_i64().unwrap(),
            &[7, -9]
        );
    }

    #[test]
    fn int_types_decode_from_their_fields() {
        let mut t = proto(&[3], DataType::Int64);
        t.int64_data = vec![1, -2, i64::MAX];
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().as_i64().unwrap(),
            &[1, -2, i64::MAX]
        );
        let mut t = proto(&[2], DataType::Int32);
        t.int32_data = vec![5, -6];
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().data(),
            &TensorData::I32(vec![5, -6])
        );
        let mut t = proto(&[2], DataType::Int32);
        t.raw_data = [5i32, -6].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().data(),
            &TensorData::I32(vec![5, -6])
        );
    }

    #[test]
    fn half_floats_come_from_int32_bits_or_raw_bytes() {
        // 1.0 is 0x3C00 in f16 and 0x3F80 in bf16; -2.0 is 0xC000 and 0xC000.
        let mut t = proto(&[2], DataType::Float16);
        t.int32_data = vec![0x3C00, 0xC000];
        let got = tensor_from_proto(&t, None).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(got.to_f32_vec(), vec![1.0, -2.0]);
        let mut t = proto(&[2], DataType::Bfloat16);
        t.raw_data = vec![0x80, 0x3F, 0x00, 0xC0];
        let got = tensor_from_proto(&t, None).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(got.to_f32_vec(), vec![1.0, -2.0]);
        let mut t = proto(&[2], DataType::Bfloat16);
        t.int32_data = vec![0x3F80, 0xC000];
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().to_f32_vec(),
            vec![1.0, -2.0]
        );
    }

    #[test]
    fn bools_from_int32_data_and_raw_bytes() {
        let mut t = proto(&[3], DataType::Bool);
        t.int32_data = vec![1, 0, 1];
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().as_bool().unwrap(),
            &[true, false, true]
        );
        let mut t = proto(&[3], DataType::Bool);
        t.raw_data = vec![0, 1, 0];
        assert_eq!(
            tensor_from_proto(&t, None).unwrap().as_bool().unwrap(),
            &[false, true, false]
        );
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let mut t = proto(&[], DataType::Float);
        t.float_data = vec![4.5];
        let s = tensor_from_proto(&t, None).unwrap();
        assert_eq!((s.rank(), s.to_f32_vec()), (0, vec![4.5]));
        let e = tensor_from_proto(&proto(&[0, 3], DataType::Float), None).unwrap();
        assert_eq!((e.shape(), e.numel()), (&[0usize, 3][..], 0));
    }

    #[test]
    fn length_mismatches_and_bad_types_are_errors() {
        let mut t = proto(&[2, 2], DataType::Float);
        t.raw_data = vec![0; 12];
        let e = tensor_from_proto(&t, None).unwrap_err().0;
        assert_eq!(
            e,
            "tensor 'w': raw_data holds 12 bytes but shape [2, 2] of f32 needs 16"
        );
        let mut t = proto(&[3], DataType::Int64);
        t.int64_data = vec![1];
        let e = tensor_from_proto(&t, None).unwrap_err().0;
        assert_eq!(
            e,
            "tensor 'w': int64_data holds 1 values but shape [3] needs 3"
        );
        let e = tensor_from_proto(&proto(&[1], DataType::Double), None)
            .unwrap_err()
            .0;
        assert_eq!(e, "tensor 'w': element type DOUBLE is not supported");
        let e = tensor_from_proto(&proto(&[-1], DataType::Float), None)
            .unwrap_err()
            .0;
        assert!(e.contains("negative entry"), "{e}");
        let e = tensor_from_proto(&proto(&[1 << 40, 1 << 40], DataType::Float), None)
            .unwrap_err()
            .0;
        assert!(e.contains("more elements than fit"), "{e}");
        // A huge shape with little data must fail on the length, not try to allocate.
        let mut t = proto(&[1 << 30, 1 << 20], DataType::Float);
        t.raw_data = vec![0; 8];
        assert!(tensor_from_proto(&t, None).is_err());
    }

    #[test]
    fn to_proto_and_back_keeps_every_dtype() {
        let cases = vec![
            Tensor::from_f32(vec![2], vec![1.5, -0.25]).unwrap(),
            Tensor::new(
                vec![2],
                TensorData::F16(vec![f16::from_f32(0.5), f16::from_f32(-3.0)]),
            )
            .unwrap(),
            Tensor::new(vec![1], TensorData::BF16(vec![bf16::from_f32(2.0)])).unwrap(),
            Tensor::from_i64(vec![2, 1], vec![-1, 9]).unwrap(),
            Tensor::new(vec![3], TensorData::I32(vec![1, 2, -3])).unwrap(),
            Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            Tensor::scalar_f32(7.0),
        ];
        for t in cases {
            let p = tensor_to_proto("t", &t);
            assert_eq!(p.name, "t");
            let back = tensor_from_proto(&p, None).unwrap();
            assert_eq!(back, t);
            // The encoded message survives a byte round trip: data_type is never dropped.
            let again = TensorProto::decode(p.encode_to_vec().as_slice()).unwrap();
            assert_eq!(tensor_from_proto(&again, None).unwrap(), t);
        }
    }
}
