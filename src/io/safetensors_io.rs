//! Host tensors to and from safetensors files (inputs and outputs of `glora run`).

use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::ir::{DType, Tensor};

/// Reads every tensor of a safetensors file, in the file's name order.
pub fn read_safetensors(path: &Path) -> anyhow::Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let v = st.tensor(&name)?;
            let dtype = match v.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                Dtype::I64 => DType::I64,
                Dtype::I32 => DType::I32,
                Dtype::BOOL => DType::Bool,
                other => anyhow::bail!(
                    "{}: tensor '{name}' has unsupported type {other:?}",
                    path.display()
                ),
            };
            let t = Tensor::from_le_bytes(dtype, v.shape().to_vec(), v.data())
                .map_err(|e| anyhow::anyhow!("{}: tensor '{name}': {e}", path.display()))?;
            Ok((name, t))
        })
        .collect()
}

/// Writes tensors to a safetensors file atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_le_bytes()))
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, t), (_, b))| {
            let dtype = match t.dtype() {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::I64 => Dtype::I64,
                DType::I32 => Dtype::I32,
                DType::Bool => Dtype::BOOL,
            };
            Ok((n.clone(), TensorView::new(dtype, t.shape().to_vec(), b)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, None)?;
    super::write_atomic(path, &data).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::TensorData;

    #[test]
    fn round_trips_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let ts = vec![
            (
                "a".to_string(),
                Tensor::from_f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]).unwrap(),
            ),
            (
                "b".to_string(),
                Tensor::from_i64(vec![3], vec![-1, 0, 1 << 40]).unwrap(),
            ),
            (
                "c".to_string(),
                Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            ),
            (
                "d".to_string(),
                Tensor::new(vec![1], TensorData::I32(vec![-7])).unwrap(),
            ),
        ];
        write_safetensors(&p, &ts).unwrap();
        assert_eq!(read_safetensors(&p).unwrap(), ts);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors"), "{e}");
    }
}
