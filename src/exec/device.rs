//! The user's choice of backend, from `--device cpu|cuda[:N]` to a running session.
//!
//! A [`DeviceSpec`] is what the command line says; [`Device::open`] turns it into
//! an opened backend (for CUDA: the driver, NVRTC and cuBLAS loaded, the GPU
//! selected, one stream and memory pool shared by every session on it), and
//! [`Device::session`] builds a [`DeviceSession`] on it. Trainers, the search and
//! the CLI hold a `DeviceSession` and never name a backend type.

use std::fmt;
use std::str::FromStr;

use super::cuda::{CudaBackend, CudaError, CudaOptions};
use super::{CpuBackend, ExecError, Session};
use crate::glora::ModelConfig;
use crate::ir::{Graph, Tensor};

/// Where to run, as a user writes it: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<DeviceSpec, String> {
        let bad = || format!("{s:?} is not a device: use cpu, cuda or cuda:N (N = GPU index)");
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            t => {
                let n = t
                    .strip_prefix("cuda:")
                    .or_else(|| t.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                n.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// An opened backend. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(CudaBackend),
}

impl Device {
    /// Opens the device `spec` names; CUDA options apply to a GPU only.
    pub fn open(spec: DeviceSpec, cuda: CudaOptions) -> Result<Device, CudaError> {
        match spec {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => CudaBackend::new(n, cuda).map(Device::Cuda),
        }
    }

    /// A line for logs: "cpu" or the GPU's name, architecture and memory.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(b) => b.describe(),
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// A session running `g` on this device.
    pub fn session(&self, g: &Graph) -> Result<DeviceSession, ExecError> {
        Ok(match self {
            Device::Cpu => DeviceSession::Cpu(Session::new(g, CpuBackend)?),
            Device::Cuda(b) => DeviceSession::Cuda(Session::new(g, b.clone())?),
        })
    }

    /// Waits until the device has finished its queued work (a no-op on the CPU),
    /// so that timings cover the work and not only its launch.
    pub fn synchronize(&self) -> Result<(), ExecError> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(b) => b.synchronize(),
        }
    }
}

/// A [`Session`] on whichever backend the device is.
pub enum DeviceSession {
    Cpu(Session<CpuBackend>),
    Cuda(Session<CudaBackend>),
}

/// Calls the same method on the session inside, whichever backend it runs on.
macro_rules! on_session {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            DeviceSession::Cpu($s) => $call,
            DeviceSession::Cuda($s) => $call,
        }
    };
}

impl DeviceSession {
    /// See [`Session::run`].
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>, ExecError> {
        on_session!(self, s => s.run(inputs))
    }

    /// See [`Session::set_glora_configs`], except that layers the graph does not
    /// hold are skipped: a supernet's config names every adapted layer, and a graph
    /// built from it loses the ones whose output nothing reads any more (a model's
    /// own classifier once a new head reads the features before it). Callers check
    /// configs against the supernet first.
    pub fn set_glora_configs(&mut self, configs: &ModelConfig) -> Result<(), ExecError> {
        on_session!(self, s => {
            let held: ModelConfig = configs
                .iter()
                .filter(|(layer, _)| s.adapts(layer))
                .map(|(layer, c)| (layer.to_string(), *c))
                .collect();
            s.set_glora_configs(&held)
        })
    }

    /// See [`Session::set_param`].
    pub fn set_param(&mut self, value_name: &str, t: &Tensor) -> Result<(), ExecError> {
        on_session!(self, s => s.set_param(value_name, t))
    }

    /// See [`Session::set_profiling`].
    pub fn set_profiling(&mut self, on: bool) {
        on_session!(self, s => s.set_profiling(on))
    }

    /// See [`Session::profile`].
    pub fn profile(&self) -> Vec<(&'static str, usize, std::time::Duration)> {
        on_session!(self, s => s.profile())
    }

    pub fn input_names(&self) -> Vec<String> {
        on_session!(self, s => s.input_names())
    }

    pub fn output_names(&self) -> Vec<String> {
        on_session!(self, s => s.output_names())
    }

    pub fn graph(&self) -> &Graph {
        on_session!(self, s => s.graph())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("CPU", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("gpu:1", DeviceSpec::Cuda(1)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec), "{text}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.contains("cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_cpu_session_runs_what_the_cpu_backend_runs() {
        let mut g = Graph::new("t");
        let x = g.add_input(
            "x",
            crate::ir::TensorType::new(crate::ir::DType::F32, crate::ir::Shape::known(&[3])),
        );
        let y = g.add_op(
            "neg",
            crate::ir::Op::Unary(crate::ir::UnaryOp::Neg),
            &[Some(crate::ir::Port::new(x, 0))],
            &["y"],
        );
        g.outputs.push(crate::ir::Port::new(y, 0));
        let s = Device::Cpu.session(&g).unwrap();
        let x = Tensor::from_f32(vec![3], vec![1.0, -2.0, 0.5]).unwrap();
        let out = s.run(&[("x".to_string(), x)]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![-1.0, 2.0, -0.5]);
        assert_eq!(s.input_names(), vec!["x"]);
        assert_eq!(s.output_names(), vec!["y"]);
    }

    /// Where no driver can be loaded, asking for a GPU is the one-line error the
    /// command line prints; with a driver present this test has nothing to check.
    #[test]
    fn asking_for_a_gpu_without_a_driver_is_a_clear_error() {
        if super::super::cuda::probe().is_ok() {
            println!("skipped: a CUDA driver is present");
            return;
        }
        let Err(e) = Device::open(DeviceSpec::Cuda(0), CudaOptions::default()) else {
            println!("skipped: a CUDA device opened");
            return;
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("no CUDA driver found") || msg.starts_with("CUDA library"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}
