//! `glora bench …`: speed measurements that anyone can rerun. `forward` times glora's
//! CPU executor against tract on the same model, inputs and number of threads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::common::{self, InputFlags};
use crate::ir::Shape;
use crate::verify::TractModel;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Forward latency of one model: glora's executor and tract, median of several runs.
    Forward(ForwardArgs),
}

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The ONNX model.
    pub model: PathBuf,
    #[command(flatten)]
    pub inputs: InputFlags,
    /// Timed runs per runtime.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads for both runtimes (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Forward(a) => forward(a),
    }
}

fn forward(a: ForwardArgs) -> anyhow::Result<ExitCode> {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    tract_linalg::multithread::set_default_executor(
        tract_linalg::multithread::Executor::multithread(threads),
    );

    let mut g = common::import(&a.model, &a.inputs.shapes)?;
    let inputs = common::inputs(&g, &a.inputs)?;
    for (n, t) in &inputs {
        g.set_input_shape(n, Shape::known(t.shape()))?;
    }
    crate::ir::infer::infer_types(&mut g)?;
    common::optimize(&mut g, &a.model)?;
    let ours = crate::exec::Session::new(&g, crate::exec::CpuBackend)?;
    let tract = TractModel::load(&a.model, &inputs)?;

    let shapes: Vec<String> = inputs
        .iter()
        .map(|(n, t)| format!("{n}={:?}", t.shape()))
        .collect();
    println!(
        "model {}  inputs {}  threads {threads}",
        a.model.display(),
        shapes.join(" ")
    );
    let t_ours = time_runs("glora", a.warmup, a.iters, || {
        ours.run(&inputs).map(drop).map_err(Into::into)
    })?;
    let t_tract = time_runs("tract", a.warmup, a.iters, || {
        tract.run(&inputs).map(drop).map_err(Into::into)
    })?;
    println!(
        "{:<8} {:>10} {:>10} {:>10}",
        "runtime", "median ms", "min ms", "max ms"
    );
    for (name, t) in [("glora", &t_ours), ("tract", &t_tract)] {
        println!(
            "{name:<8} {:>10.1} {:>10.1} {:>10.1}",
            t.median * 1e3,
            t.min * 1e3,
            t.max * 1e3
        );
    }
    println!(
        "ratio glora/tract (median): {:.2}",
        t_ours.median / t_tract.median
    );
    Ok(ExitCode::SUCCESS)
}

struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

fn time_runs(
    label: &str,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Timing> {
    let iters = iters.max(1);
    let pb = common::bar((warmup + iters) as u64, label);
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        f()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 0 {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    };
    Ok(Timing {
        median,
        min: times[0],
        max: times[times.len() - 1],
    })
}
