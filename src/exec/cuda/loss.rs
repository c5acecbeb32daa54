//! The fused loss on the GPU: softmax cross-entropy of `logits` `[N, K]` against
//! integer `labels` `[N]` with label smoothing, averaged over the rows with a label
//! (a negative label marks a row without one, as on the CPU), and its gradient. Labels are checked on the host (from their mirror, or
//! a small download) and uploaded as i64; the incoming `dloss` stays on the device.

use crate::ir::DType;

use super::device::Device;
use super::kernels;
use super::launch::{Arg, Grid, len};
use super::layout::sh;
use super::reduce::scratch_f64;
use super::value::CudaValue;

/// Batch size, class count, the checked labels on the device and how many rows
/// have one (at least 1: the divisor of the mean).
struct Batch {
    n: usize,
    k: usize,
    labels: CudaValue,
    counted: usize,
}

fn check_batch(
    dev: &Device,
    logits: &CudaValue,
    labels: &CudaValue,
    smoothing: f32,
) -> Result<Batch, String> {
    if logits.rank() != 2 {
        return Err(format!(
            "logits must be [N, K], got shape {}",
            sh(logits.dims())
        ));
    }
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    if n == 0 || k == 0 {
        return Err(format!(
            "logits of shape {} hold no rows or no classes",
            sh(logits.dims())
        ));
    }
    if !labels.dtype().is_int() {
        return Err(format!("labels must be integers, got {}", labels.dtype()));
    }
    if labels.dims() != [n] {
        return Err(format!(
            "labels of shape {} do not match logits of shape {}",
            sh(labels.dims()),
            sh(logits.dims())
        ));
    }
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(format!(
            "label_smoothing must lie in [0, 1], got {smoothing}"
        ));
    }
    let values = dev.host_ints(labels, "labels")?;
    for (row, &v) in values.iter().enumerate() {
        if v >= 0 && v as u64 >= k as u64 {
            return Err(format!(
                "label {v} of row {row} is out of range for {k} classes"
            ));
        }
    }
    let labels = if labels.dtype() == DType::I64 {
        labels.clone()
    } else {
        dev.upload_i64(&values)?
    };
    let counted = values.iter().filter(|&&v| v >= 0).count().max(1);
    Ok(Batch {
        n,
        k,
        labels,
        counted,
    })
}

/// The scalar mean loss.
pub(crate) fn softmax_cross_entropy(
    dev: &Device,
    logits: &CudaValue,
    labels: &CudaValue,
    smoothing: f32,
) -> Result<CudaValue, String> {
    let b = check_batch(dev, logits, labels, smoothing)?;
    let rows = scratch_f64(dev, b.n)?;
    dev.launch(
        &kernels::XENT_ROWS,
        Grid::Rows(b.n),
        &[
            Arg::Ptr(rows.ptr()),
            Arg::Ptr(logits.ptr()),
            Arg::Ptr(b.labels.ptr()),
            len(b.n),
            len(b.k),
            Arg::F64(f64::from(smoothing)),
        ],
    )?;
    let out = dev.alloc(DType::F32, &[])?;
    dev.launch(
        &kernels::XENT_MEAN,
        Grid::Single,
        &[
            Arg::Ptr(out.ptr()),
            Arg::Ptr(rows.ptr()),
            len(b.n),
            len(b.counted),
        ],
    )?;
    Ok(out)
}

/// `dlogits = dloss·(softmax − t)/M` over the `M` labelled rows; 0 elsewhere.
pub(crate) fn softmax_cross_entropy_grad(
    dev: &Device,
    logits: &CudaValue,
    labels: &CudaValue,
    dloss: &CudaValue,
    smoothing: f32,
) -> Result<CudaValue, String> {
    let b = check_batch(dev, logits, labels, smoothing)?;
    if dloss.numel() != 1 {
        return Err(format!(
            "dloss must be a scalar, got shape {}",
            sh(dloss.dims())
        ));
    }
    let dz = dev.alloc(DType::F32, logits.dims())?;
    dev.launch(
        &kernels::XENT_GRAD_ROWS,
        Grid::Rows(b.n),
        &[
            Arg::Ptr(dz.ptr()),
            Arg::Ptr(logits.ptr()),
            Arg::Ptr(b.labels.ptr()),
            Arg::Ptr(dloss.ptr()),
            len(b.n),
            len(b.counted),
            len(b.k),
            Arg::F32(smoothing),
        ],
    )?;
    Ok(dz)
}
