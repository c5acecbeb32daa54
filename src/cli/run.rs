//! `glora run MODEL`: runs a model with glora's CPU executor on given or random
//! inputs, prints a summary of each output, and optionally saves them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::common::{self, InputFlags};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors).
    pub model: PathBuf,
    #[command(flatten)]
    pub inputs: InputFlags,
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
    /// Fill every input not given with --input with seeded random data (see --seed).
    #[arg(long)]
    pub random_inputs: bool,
    /// Write the outputs to this safetensors file, named as the model names them
    /// (default: only print each output's statistics).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let device = a.device.open()?;
    let mut g = common::import(&a.model, &a.inputs.shapes)?;
    common::optimize(&mut g, &a.model)?;
    if !a.random_inputs {
        let given: Vec<&str> = a
            .inputs
            .inputs
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(n, _)| n)
            .collect();
        for &i in &g.inputs {
            let name = &g.node(i).name;
            anyhow::ensure!(
                given.contains(&name.as_str()),
                "{}: input '{name}' is not given: pass --input {name}=FILE.safetensors or --random-inputs",
                a.model.display()
            );
        }
    }
    let inputs = common::inputs(&g, &a.inputs)?;
    for (n, t) in &inputs {
        println!("input  {n:<24} {}", common::summary(t));
    }
    let session = device.session(&g)?;
    let t0 = Instant::now();
    let outputs = session.run(&inputs)?;
    let dt = t0.elapsed();
    let names = session.output_names();
    for (n, t) in names.iter().zip(&outputs) {
        println!("output {n:<24} {}", common::summary(t));
    }
    println!("ran in {:.1} ms", dt.as_secs_f64() * 1e3);
    if let Some(path) = &a.output {
        let named: Vec<_> = names.into_iter().zip(outputs).collect();
        crate::io::write_safetensors(path, &named)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
