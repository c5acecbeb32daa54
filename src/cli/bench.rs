//! `glora bench …`: speed measurements that anyone can rerun. `forward` times glora's
//! CPU executor against tract on the same model, inputs and number of threads; `glora`
//! times, in tract, a supernet's base model against its merged and unmerged exports
//! under one config (merging should cost nothing at inference); `gemm` times our CPU
//! matrix products on a model's training-step shapes against the CPU's peak.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use super::common::{self, InputFlags};
use crate::ir::Shape;
use crate::verify::TractModel;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Forward latency of one model: glora's executor and tract, median of several runs.
    Forward(ForwardArgs),
    /// Forward latency in tract of a supernet's base model (simplified, as `glora
    /// convert` writes it), its merged export and its unmerged export under one config.
    Glora(GloraArgs),
    /// Supernet training steps (forward, backward, AdamW) on random images with a
    /// random config per layer per step: median step time and samples/s.
    Train(TrainArgs),
    /// Checks a backend against the CPU backend: every op, every GLoRA option
    /// forward and backward, and a whole supernet training step, on seeded random
    /// inputs. Exits 1 when any case is outside the tolerance.
    Parity(ParityArgs),
    /// Matrix-product rate (GFLOP/s) of our CPU kernels on a model's training-step
    /// shapes or on given shapes, beside the CPU's theoretical peak. Prints which
    /// kernels ran: on an AVX-512 CPU, GLORA_SIMD=avx2 runs what a CPU without
    /// AVX-512 runs (GLORA_SIMD=base: SSE2 loops, products by the gemm crate).
    Gemm(GemmArgs),
}

#[derive(Debug, clap::Args)]
pub struct GemmArgs {
    /// An ONNX image model: its GLoRA layers' forward, input-gradient and
    /// weight-gradient products and its attention products at --batch are measured
    /// (default: none; then give --shape).
    #[arg(required_unless_present = "shapes")]
    pub model: Option<PathBuf>,
    /// A product `MxKxN` (A is M×K, B is K×N, both row-major) to measure;
    /// repeatable, measured after the model's products (default: none).
    #[arg(long = "shape", value_name = "MxKxN", value_parser = parse_shape_flag)]
    pub shapes: Vec<[usize; 3]>,
    /// Images per training step; sets M = batch·tokens of the model's products.
    #[arg(long, default_value_t = 8, value_name = "IMAGES")]
    pub batch: usize,
    /// Image side in pixels the model is re-declared to before simplification
    /// (default: the model's declared size, required when it has none).
    #[arg(long, value_name = "SIZE")]
    pub image_size: Option<usize>,
    #[command(flatten)]
    pub layers: super::common::LayerFlags,
    /// FMA units per core in the theoretical peak; not detectable (default: 2
    /// assumed, as on AVX-512 server cores and recent desktop cores).
    #[arg(long, value_name = "UNITS")]
    pub fma_units: Option<usize>,
    #[command(flatten)]
    pub timing: TimingFlags,
    /// Also write the machine, the peak and every row as JSON to this file (read by
    /// `examples/gemm_reference.py --from-json`; default: none).
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
}

fn parse_shape_flag(s: &str) -> Result<[usize; 3], String> {
    crate::bench::gemm::parse_shape(s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct ParityArgs {
    #[command(flatten)]
    pub device: common::DeviceFlags,
    /// Largest relative error of an op (default: 1e-5, or 1e-3 with --tf32).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Largest relative error of the training step's loss and gradients, which
    /// pass through dozens of ops (default: 1e-3, or 1e-2 with --tf32).
    #[arg(long)]
    pub step_tolerance: Option<f64>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print every case (default: only the failing ones).
    #[arg(long)]
    pub verbose: bool,
    /// Also write every case as JSON to this file.
    #[arg(short, long, value_name = "FILE.json")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The model whose linear layers get GLoRA adapters: an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors).
    pub model: PathBuf,
    /// Examples (images or texts) per step.
    #[arg(long, default_value_t = 8, value_name = "EXAMPLES")]
    pub batch: usize,
    /// Tokens per text of a text model (one that takes input_ids): random ids,
    /// every position attended.
    #[arg(long, default_value_t = 128, value_name = "TOKENS")]
    pub seq: usize,
    /// LoRA rank the adapters are stored at.
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    #[command(flatten)]
    pub layers: super::common::LayerFlags,
    /// Classes of the trained head, which reads the model's first output (a text
    /// model's pooler where it has one).
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    #[command(flatten)]
    pub head: common::HeadFlags,
    /// What each step trains: supernet (a random config per layer per step), or one
    /// fixed method's config on every layer: lora (B as LoRA at --rank), ssf or
    /// bitfit.
    #[arg(
        long,
        default_value = "supernet",
        value_name = "supernet|lora|ssf|bitfit"
    )]
    pub mode: crate::train::Method,
    /// Image side in pixels; a model that declares another size is re-declared to this
    /// one before simplification (see `glora compile --image-size`; default: the
    /// model's declared size, required when it has none).
    #[arg(long, value_name = "SIZE")]
    pub image_size: Option<usize>,
    /// Seed of the adapters, the head, the images and the per-step configs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also print the time spent in each op over the timed steps (on a GPU, set
    /// GLORA_CUDA_SYNC=1 so that each op's time is its own).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub device: common::DeviceFlags,
    #[command(flatten)]
    pub timing: TimingFlags,
}

#[derive(Debug, clap::Args)]
pub struct GloraArgs {
    /// The supernet directory written by `glora compile`.
    pub supernet: PathBuf,
    /// The per-layer config (default: the one stored in the supernet).
    #[arg(long, value_name = "CONFIG.json", conflicts_with = "random_config")]
    pub config: Option<PathBuf>,
    /// Draw each layer's config uniformly from the search space instead.
    #[arg(long)]
    pub random_config: bool,
    /// Seed of --random-config.
    #[arg(long, default_value_t = 0, requires = "random_config")]
    pub config_seed: u64,
    #[command(flatten)]
    pub inputs: InputFlags,
    #[command(flatten)]
    pub timing: TimingFlags,
}

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The model: an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors).
    pub model: PathBuf,
    #[command(flatten)]
    pub inputs: InputFlags,
    /// Where glora's executor runs (tract runs on the CPU).
    #[command(flatten)]
    pub device: common::DeviceFlags,
    #[command(flatten)]
    pub timing: TimingFlags,
}

/// How a benchmark times its runs.
#[derive(Debug, clap::Args)]
pub struct TimingFlags {
    /// Timed runs per model, runtime or product; the median is printed (`bench gemm`
    /// repeats each product within a run until the run lasts at least 2 ms).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs before timing, per model, runtime or product.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads for everything measured (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Forward(a) => forward(a),
        Bench::Glora(a) => glora(a),
        Bench::Train(a) => train(a),
        Bench::Parity(a) => parity(a),
        Bench::Gemm(a) => gemm(a),
    }
}

/// Sets both runtimes' thread pools; returns the thread count.
fn set_threads(threads: Option<usize>) -> usize {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    tract_linalg::multithread::set_default_executor(
        tract_linalg::multithread::Executor::multithread(threads),
    );
    threads
}

fn forward(a: ForwardArgs) -> anyhow::Result<ExitCode> {
    let threads = set_threads(a.timing.threads);

    let mut g = common::import(&a.model, &a.inputs.shapes)?;
    let inputs = common::inputs(&g, &a.inputs)?;
    for (n, t) in &inputs {
        g.set_input_shape(n, Shape::known(t.shape()))?;
    }
    crate::ir::infer::infer_types(&mut g)?;
    common::optimize(&mut g, &a.model)?;
    let ours = a.device.open()?.session(&g)?;
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
    let t_ours = time_runs("glora", a.timing.warmup, a.timing.iters, || {
        ours.run(&inputs).map(drop).map_err(Into::into)
    })?;
    let t_tract = time_runs("tract", a.timing.warmup, a.timing.iters, || {
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

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let p = std::env::temp_dir().join(format!("glora-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn glora(a: GloraArgs) -> anyhow::Result<ExitCode> {
    let threads = set_threads(a.timing.threads);
    let sp = common::spinner(format!("loading {}", a.supernet.display()));
    let net = crate::supernet::Supernet::load(&a.supernet);
    sp.finish_and_clear();
    let net = net?;
    let config = match (&a.config, a.random_config, &net.config) {
        (Some(path), _, _) => super::export::read_config(&net, path)?,
        (None, true, _) => net.random_config(a.config_seed),
        (None, false, Some(stored)) => stored.clone(),
        (None, false, None) => anyhow::bail!(
            "{}: holds no chosen config; pass --config CONFIG.json or --random-config",
            a.supernet.display()
        ),
    };
    let scratch = ScratchDir::new()?;
    let sp = common::spinner("writing the base, merged and unmerged models".into());
    let models = [
        ("base", net.base.clone()),
        ("merged", net.merged(&config)?),
        ("unmerged", net.unmerged(&config)?),
    ];
    let mut paths = Vec::new();
    for (name, g) in &models {
        let p = scratch.0.join(format!("{name}.onnx"));
        crate::onnx::export_file(g, &p, &Default::default())?;
        paths.push((*name, p));
    }
    sp.finish_and_clear();
    let inputs = common::inputs(&net.base, &a.inputs)?;
    let shapes: Vec<String> = inputs
        .iter()
        .map(|(n, t)| format!("{n}={:?}", t.shape()))
        .collect();
    println!(
        "supernet {}  layers {}  inputs {}  threads {threads}",
        a.supernet.display(),
        net.layers.len(),
        shapes.join(" ")
    );
    let sp = common::spinner("loading the models in tract".into());
    let loaded = paths
        .iter()
        .map(|(_, p)| TractModel::load(p, &inputs))
        .collect::<Result<Vec<_>, _>>();
    sp.finish_and_clear();
    let loaded = loaded?;
    let timings = time_interleaved(&loaded, &inputs, a.timing.warmup, a.timing.iters)?;
    let timings: Vec<(&str, Timing)> = paths.iter().map(|(n, _)| *n).zip(timings).collect();
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>8}",
        "model", "median ms", "min ms", "max ms", "ops"
    );
    for ((name, t), (_, g)) in timings.iter().zip(&models) {
        println!(
            "{name:<10} {:>10.2} {:>10.2} {:>10.2} {:>8}",
            t.median * 1e3,
            t.min * 1e3,
            t.max * 1e3,
            g.op_histogram().values().sum::<usize>()
        );
    }
    let base = timings[0].1.median;
    println!(
        "ratio merged/base (median):   {:.3}",
        timings[1].1.median / base
    );
    println!(
        "ratio unmerged/base (median): {:.3}",
        timings[2].1.median / base
    );
    Ok(ExitCode::SUCCESS)
}

/// Times the models in rounds, one run of each per round, so that drift in the
/// machine's speed (frequency, other load) falls on all of them alike.
fn time_interleaved(
    models: &[TractModel],
    inputs: &[(String, crate::ir::Tensor)],
    warmup: usize,
    iters: usize,
) -> anyhow::Result<Vec<Timing>> {
    let iters = iters.max(1);
    let pb = common::bar(((warmup + iters) * models.len()) as u64, "timing");
    let mut times = vec![Vec::with_capacity(iters); models.len()];
    for round in 0..warmup + iters {
        for (m, t) in models.iter().zip(times.iter_mut()) {
            let t0 = Instant::now();
            m.run(inputs)?;
            if round >= warmup {
                t.push(t0.elapsed().as_secs_f64());
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(times.into_iter().map(Timing::of).collect())
}

struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

impl Timing {
    /// Statistics of at least one run time.
    fn of(mut times: Vec<f64>) -> Timing {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let mid = n / 2;
        let median = match n {
            0 => 0.0,
            _ if n.is_multiple_of(2) => (times[mid - 1] + times[mid]) / 2.0,
            _ => times[mid],
        };
        Timing {
            median,
            min: times.first().copied().unwrap_or(0.0),
            max: times.last().copied().unwrap_or(0.0),
        }
    }
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
    Ok(Timing::of(times))
}

/// A batch's layout, inputs and labels.
type RandomBatch = (
    crate::data::InputLayout,
    Vec<(String, crate::ir::Tensor)>,
    crate::ir::Tensor,
);

/// A batch of random examples for `forward`: uniform images in [-1, 1), or for a text
/// model `--seq` random token ids (from a range every vocabulary we meet covers),
/// every one attended; for a language model (`lm`) with next-token targets at every
/// position but the last. Returns the layout, the inputs and the labels.
fn random_batch(
    net: &crate::supernet::Supernet,
    forward: &crate::ir::Graph,
    a: &TrainArgs,
    lm: bool,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<RandomBatch> {
    use crate::data::{Dataset, Features, Images, InputLayout, Tokens};
    use rand::RngExt;
    let text = forward
        .inputs
        .iter()
        .any(|&i| forward.node(i).name == crate::data::INPUT_IDS);
    let features = if text {
        let ids: Vec<Vec<u32>> = (0..a.batch)
            .map(|_| {
                (0..a.seq)
                    .map(|_| rng.random_range(1000..2000u32))
                    .collect()
            })
            .collect();
        let targets = lm.then(|| {
            ids.iter()
                .map(|s| {
                    let mut t: Vec<i32> = s[1..].iter().map(|&v| v as i32).collect();
                    t.push(crate::data::IGNORE_INDEX);
                    t
                })
                .collect()
        });
        Features::Tokens(Tokens {
            ids,
            type_ids: None,
            targets,
            pad_id: 0,
            max_length: a.seq,
        })
    } else {
        let Some(image) = net.image_shape(a.image_size) else {
            anyhow::bail!(
                "{}: the image input has no fixed [C, H, W]; pass --image-size",
                a.model.display()
            )
        };
        let n = a.batch * image.iter().product::<usize>();
        Features::Images(Images {
            values: (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            channels: image[0],
            height: image[1],
            width: image[2],
        })
    };
    let labels: Vec<u32> = (0..a.batch)
        .map(|_| rng.random_range(0..a.classes.max(1) as u32))
        .collect();
    let data = Dataset {
        n: a.batch,
        labels,
        num_classes: a.classes.max(1),
        label_names: crate::data::numbered_labels(a.classes.max(1)),
        features,
    };
    let layout = InputLayout::for_model(forward, &data)?;
    let all: Vec<usize> = (0..a.batch).collect();
    let x = layout.batch(&data, &all)?;
    let y = crate::ir::Tensor::from_i64(layout.label_shape(a.batch), layout.labels(&data, &all)?)?;
    Ok((layout, x, y))
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    use crate::train::graph::build_training_graph;
    use crate::train::optim::{AdamW, AdamWConfig};
    use crate::train::step::{Stepper, adapter_index};
    use rand::SeedableRng;

    let threads = set_threads(a.timing.threads);
    let sp = common::spinner(format!("adapting {}", a.model.display()));
    let net = crate::supernet::Supernet::compile(
        &a.model,
        a.layers.targets.as_deref(),
        a.layers.exclude.as_deref(),
        &[a.rank],
        a.seed,
        a.image_size.map(|s| [s, s]),
    );
    sp.finish_and_clear();
    let mut net = net?;
    // A decoder's step is a language model's: its own head, next-token targets.
    let lm = net.is_decoder();
    let forward = if lm {
        net.graph.clone()
    } else {
        net.attach_new_head(a.head.features.as_deref(), a.head.pool, a.classes, a.seed)?;
        net.with_head(net.graph.clone())?
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let (layout, x, y) = random_batch(&net, &forward, &a, lm, &mut rng)?;
    let sp = common::spinner("building the training graph".into());
    let tg = build_training_graph(&forward, &layout.shapes(a.batch), 0.0);
    sp.finish_and_clear();
    let tg = tg?;
    let trainable: usize = tg.params.iter().map(|(_, t)| t.numel()).sum();
    let optimizer = AdamW::new(AdamWConfig {
        lr: 1e-4,
        weight_decay: 1e-4,
        ..AdamWConfig::default()
    });
    let device = a.device.open()?;
    let fixed = match a.mode {
        crate::train::Method::Supernet => None,
        m => {
            let c = crate::train::mode::preset_config(m, a.rank).ok_or_else(|| {
                anyhow::anyhow!("--mode {m}: bench train takes supernet, lora, ssf or bitfit")
            })?;
            Some(crate::train::mode::uniform_config(net.layer_names(), c))
        }
    };
    // A fixed config trains only the adapter tensors it reads, and the head.
    let trainable = match &fixed {
        Some(c) => {
            net.config_params(c)?
                + tg.params
                    .iter()
                    .filter(|(n, _)| n.starts_with("glora_head."))
                    .map(|(_, t)| t.numel())
                    .sum::<usize>()
        }
        None => trainable,
    };
    let mut stepper = Stepper::new(tg, optimizer, adapter_index(&net), &device)?;
    println!(
        "model {}  mode {}  device {}  batch {}  {}  threads {threads}  adapted layers {}  trainable {}",
        a.model.display(),
        a.mode,
        device.describe(),
        a.batch,
        layout.describe(),
        net.layers.len(),
        super::compile::group(trainable)
    );
    let mut step = 0u64;
    let warmup = a.timing.warmup as u64;
    let t = time_runs("train steps", a.timing.warmup, a.timing.iters, || {
        step += 1;
        if a.profile && step == warmup + 1 {
            stepper.session.set_profiling(true);
        }
        let config = match &fixed {
            Some(c) => c.clone(),
            None => net.random_config(a.seed.wrapping_add(step)),
        };
        stepper.step(x.clone(), y.clone(), Some(&config), 1e-4, step)?;
        Ok(())
    })?;
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12}",
        "runtime", "median ms", "min ms", "max ms", "samples/s"
    );
    println!(
        "{:<8} {:>10.1} {:>10.1} {:>10.1} {:>12.1}",
        "glora",
        t.median * 1e3,
        t.min * 1e3,
        t.max * 1e3,
        a.batch as f64 / t.median
    );
    if a.profile {
        let rows = stepper.session.profile();
        let total: f64 = rows.iter().map(|r| r.2.as_secs_f64()).sum();
        let per_step = a.timing.iters.max(1) as f64;
        println!(
            "{:<28} {:>8} {:>12} {:>7}",
            "op", "calls", "ms per step", "share"
        );
        for (op, calls, d) in rows {
            println!(
                "{op:<28} {:>8} {:>12.1} {:>6.1}%",
                calls as f64 / per_step,
                d.as_secs_f64() * 1e3 / per_step,
                100.0 * d.as_secs_f64() / total.max(1e-12)
            );
        }
        println!(
            "{:<28} {:>8} {:>12.1}",
            "all ops",
            "",
            total * 1e3 / per_step
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "model": a.model.display().to_string(), "device": device.describe(),
            "batch": a.batch, "threads": threads,
            "step_s_median": t.median, "step_s_min": t.min, "step_s_max": t.max,
            "samples_per_s": a.batch as f64 / t.median, "trainable_params": trainable,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn parity(a: ParityArgs) -> anyhow::Result<ExitCode> {
    use crate::exec::parity::{ParityCase, run_op_parity};
    use crate::train::parity::run_step_parity;
    let device = a.device.open()?;
    let tolerance = a
        .tolerance
        .unwrap_or(if a.device.tf32 { 1e-3 } else { 1e-5 });
    let step_tolerance = a
        .step_tolerance
        .unwrap_or(if a.device.tf32 { 1e-2 } else { 1e-3 });
    println!(
        "parity of {} against the CPU backend, tolerance {tolerance:.1e} per op and {step_tolerance:.1e} for the step, seed {}",
        device.describe(),
        a.seed
    );
    let show = |c: &ParityCase| {
        if a.verbose || !c.passed {
            println!("{c}");
        }
    };
    let t0 = Instant::now();
    let mut cases = match &device {
        crate::exec::Device::Cpu => {
            run_op_parity(&crate::exec::CpuBackend, tolerance, a.seed, show)
        }
        crate::exec::Device::Cuda(b) => run_op_parity(b, tolerance, a.seed, show),
    };
    let step = match &device {
        crate::exec::Device::Cpu => {
            run_step_parity(crate::exec::CpuBackend, step_tolerance, a.seed)
        }
        crate::exec::Device::Cuda(b) => run_step_parity(b.clone(), step_tolerance, a.seed),
    }?;
    show(&step);
    cases.push(step);
    let failed = cases.iter().filter(|c| !c.passed).count();
    let worst = cases
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.max_rel_err)
        .fold(0.0, f64::max);
    println!(
        "{} cases, {} passed, {failed} failed; largest relative error {worst:.2e}; {:.1} s",
        cases.len(),
        cases.len() - failed,
        t0.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.output {
        let rows: Vec<serde_json::Value> = cases
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name, "passed": c.passed, "tolerance": c.tolerance,
                    "max_rel_err": c.max_rel_err.is_finite().then_some(c.max_rel_err),
                    "error": c.error, "worst": c.worst,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "device": device.describe(), "tolerance": tolerance,
            "step_tolerance": step_tolerance, "seed": a.seed,
            "cases": rows.len(), "failed": failed, "results": rows,
        });
        crate::io::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| path.display().to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn gemm(a: GemmArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::gemm::{CountedProduct, measure, model_products, rows_json, summary};
    use crate::bench::machine::Machine;

    let (fma_units, fma_source) = match a.fma_units {
        Some(0) => anyhow::bail!("--fma-units must be at least 1"),
        Some(u) => (u, "given by --fma-units"),
        None => (2, "assumed: not detectable; override with --fma-units"),
    };
    let threads = set_threads(a.timing.threads);
    let machine = Machine::detect();
    let peak = machine.peak(threads, fma_units);
    println!(
        "cpu: {} (/proc/cpuinfo model name)",
        machine.cpuinfo.model.as_deref().unwrap_or("unknown")
    );
    println!(
        "vector width: {}-bit, {} f32 lanes ({})",
        machine.vector.bits,
        machine.vector.lanes(),
        machine.vector.source
    );
    println!(
        "cores: {} (the threads measured; {} logical CPUs available)",
        threads.min(machine.available),
        machine.available
    );
    match &machine.clock {
        Some(c) => println!("clock: {:.3} GHz ({})", c.ghz, c.source),
        None => println!("clock: unknown (no /proc/cpuinfo cpu MHz, no sysfs cpuinfo_max_freq)"),
    }
    println!("fma units: {fma_units} per core ({fma_source})");
    match &peak {
        Some(p) => println!("peak: {p}"),
        None => println!("peak: unknown without a clock"),
    }

    let mut products: Vec<CountedProduct> = Vec::new();
    let mut model_doc = serde_json::Value::Null;
    if let Some(model) = &a.model {
        let sp = common::spinner(format!("adapting {}", model.display()));
        let mp = model_products(
            model,
            a.batch,
            a.image_size,
            a.layers.targets.as_deref(),
            a.layers.exclude.as_deref(),
        );
        sp.finish_and_clear();
        let mp = mp?;
        let tokens = mp.tokens.map_or("unknown".to_string(), |t| {
            format!("{t} (M = B·T = {})", t * a.batch)
        });
        println!(
            "model {}  batch {}  image {:?}  tokens T {tokens}  adapted layers {}",
            model.display(),
            a.batch,
            mp.image,
            mp.layers
        );
        model_doc = serde_json::json!({
            "path": model.display().to_string(), "batch": a.batch, "image": mp.image,
            "tokens": mp.tokens, "adapted_layers": mp.layers,
        });
        products = mp.products;
    }
    products.extend(a.shapes.iter().map(|&[m, k, n]| CountedProduct {
        product: crate::exec::MatrixProduct::plain(m, k, n),
        count: 1,
        example: "--shape".into(),
    }));
    println!(
        "threads {threads}  warm-up runs {}  timed samples {} (median)",
        a.timing.warmup, a.timing.iters
    );
    println!(
        "{:<18} {:<40} {:>5} {:>10} {:>9} {:>7}",
        "shape", "what", "count", "median ms", "GFLOP/s", "% peak"
    );
    let pb = common::bar(products.len() as u64, "products");
    let mut rows = Vec::with_capacity(products.len());
    for p in &products {
        let r = measure(p, a.timing.warmup, a.timing.iters)?;
        pb.suspend(|| {
            println!(
                "{:<18} {:<40} {:>5} {:>10.3} {:>9.1} {:>7}",
                r.product.product.shape(),
                r.product.product.kind.describe(),
                r.product.count,
                r.median_s * 1e3,
                r.gflops,
                peak.as_ref().map_or("-".to_string(), |pk| format!(
                    "{:.1}",
                    100.0 * r.gflops / pk.gflops()
                ))
            )
        });
        rows.push(r);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mean = summary(&rows);
    println!(
        "summary: {mean:.1} GFLOP/s time-weighted mean over {} products, each row weighted by its count{}",
        rows.len(),
        peak.as_ref().map_or(String::new(), |pk| format!(
            " ({:.1} % of peak)",
            100.0 * mean / pk.gflops()
        ))
    );
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "cpu": machine.cpuinfo.model,
            "vector_bits": machine.vector.bits,
            "vector_source": machine.vector.source,
            "threads": threads,
            "logical_cpus": machine.available,
            "clock_ghz": machine.clock.as_ref().map(|c| c.ghz),
            "clock_source": machine.clock.as_ref().map(|c| c.source.clone()),
            "fma_units": fma_units,
            "peak_gflops": peak.as_ref().map(|p| p.gflops()),
            "model": model_doc,
            "summary_gflops": mean,
            "rows": rows_json(&rows, peak.as_ref()),
        });
        crate::io::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| path.display().to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
