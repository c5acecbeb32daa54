//! An ONNX file loaded into tract, optimised for concrete input shapes and run on our
//! host tensors. tract is the independent reference: nothing of ours sits between the
//! file and its result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TTensor, TypedSimplePlan, tvec,
};

use crate::ir::{DType, Tensor};

/// A failure loading or running a file in tract; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: tract: {msg}")]
pub struct VerifyError {
    pub file: PathBuf,
    pub msg: String,
}

/// An ONNX model ready to run in tract for one set of input shapes.
pub struct TractModel {
    path: PathBuf,
    plan: Arc<TypedSimplePlan>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl TractModel {
    /// Loads `path` and optimises it for the dtypes and shapes of `inputs` (matched to
    /// the model's inputs by name).
    pub fn load(path: &Path, inputs: &[(String, Tensor)]) -> Result<TractModel, VerifyError> {
        let err = |msg: String| VerifyError {
            file: path.to_path_buf(),
            msg,
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(format!("cannot load: {}", one_line(&e))))?;
        let outlets = model
            .input_outlets()
            .map_err(|e| err(one_line(&e)))?
            .to_vec();
        let names: Vec<String> = outlets
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        for (ix, name) in names.iter().enumerate() {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| err(format!("no value given for input '{name}'")))?;
            let fact = InferenceFact::dt_shape(datum_type(t.dtype()), t.shape());
            model = model
                .with_input_fact(ix, fact)
                .map_err(|e| err(format!("input '{name}': {}", one_line(&e))))?;
        }
        let out_names: Vec<String> = model
            .output_outlets()
            .map_err(|e| err(one_line(&e)))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("cannot optimise: {}", one_line(&e))))?;
        Ok(TractModel {
            path: path.to_path_buf(),
            plan,
            inputs: names,
            outputs: out_names,
        })
    }

    /// Loads `path` optimised for the shapes it declares, symbolic dimensions kept,
    /// so that one plan runs every shape (a decoder's steps).
    pub fn load_dynamic(path: &Path) -> Result<TractModel, VerifyError> {
        let err = |msg: String| VerifyError {
            file: path.to_path_buf(),
            msg,
        };
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(format!("cannot load: {}", one_line(&e))))?;
        let names: Vec<String> = model
            .input_outlets()
            .map_err(|e| err(one_line(&e)))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let out_names: Vec<String> = model
            .output_outlets()
            .map_err(|e| err(one_line(&e)))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("cannot optimise: {}", one_line(&e))))?;
        Ok(TractModel {
            path: path.to_path_buf(),
            plan,
            inputs: names,
            outputs: out_names,
        })
    }

    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model; outputs in the model's order.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>, VerifyError> {
        let err = |msg: String| VerifyError {
            file: self.path.clone(),
            msg,
        };
        let mut values = tvec!();
        for name in &self.inputs {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| err(format!("no value given for input '{name}'")))?;
            values.push(
                to_tract(t)
                    .map_err(|e| err(format!("input '{name}': {e}")))?
                    .into_tvalue(),
            );
        }
        // tract panics on some bad inputs (a token id past the embedding table):
        // that is the input's fault, reported as an error.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.plan.run(values)));
        let out = match run {
            Ok(r) => r.map_err(|e| err(one_line(&e)))?,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(err(format!(
                    "failed on these inputs ({msg}); are the token ids within the vocabulary?"
                )));
            }
        };
        out.iter()
            .zip(&self.outputs)
            .map(|(v, name)| from_tract(v).map_err(|e| err(format!("output '{name}': {e}"))))
            .collect()
    }
}

fn one_line(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn datum_type(d: DType) -> DatumType {
    match d {
        DType::F32 => DatumType::F32,
        DType::F16 => DatumType::F16,
        DType::BF16 => DatumType::F32,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::Bool => DatumType::Bool,
    }
}

fn to_tract(t: &Tensor) -> Result<TTensor, String> {
    use crate::ir::TensorData as D;
    let s = t.shape();
    let r = match t.data() {
        D::F32(v) => TTensor::from_shape(s, v),
        D::F16(v) => TTensor::from_shape(s, v),
        D::BF16(_) => TTensor::from_shape(s, &t.to_f32_vec()),
        D::I64(v) => TTensor::from_shape(s, v),
        D::I32(v) => TTensor::from_shape(s, v),
        D::Bool(v) => TTensor::from_shape(s, v),
    };
    r.map_err(|e| one_line(&e))
}

fn from_tract(v: &TTensor) -> Result<Tensor, String> {
    use crate::ir::TensorData as D;
    let shape = v.shape().to_vec();
    let data = match v.datum_type() {
        DatumType::F32 => D::F32(view::<f32>(v)?),
        DatumType::F16 => D::F16(view::<half::f16>(v)?),
        DatumType::I64 => D::I64(view::<i64>(v)?),
        DatumType::I32 => D::I32(view::<i32>(v)?),
        DatumType::Bool => D::Bool(view::<bool>(v)?),
        other => return Err(format!("element type {other:?} is not supported")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn view<T: tract_onnx::prelude::Datum + Copy>(v: &TTensor) -> Result<Vec<T>, String> {
    Ok(v.to_plain_array_view::<T>()
        .map_err(|e| one_line(&e))?
        .iter()
        .copied()
        .collect())
}
