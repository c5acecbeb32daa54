//! `glora convert IN.onnx -o OUT.onnx`: import, simplify, export.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to read: an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors).
    pub model: PathBuf,
    /// Where to write the simplified model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Fix an input's shape before simplifying, e.g. `--shape image=1x3x224x224`
    /// (repeatable); without it symbolic dimensions stay symbolic.
    #[arg(long = "shape", value_name = "NAME=DIMS", value_parser = parse_shape_arg)]
    pub shapes: Vec<(String, Vec<usize>)>,
    /// ONNX opset to write (default: 17, or higher if the graph needs it).
    #[arg(long)]
    pub opset: Option<i64>,
}

fn parse_shape_arg(s: &str) -> Result<(String, Vec<usize>), String> {
    crate::verify::parse_shape(s).map_err(|e| e.to_string())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut g = common::import(&a.model, &a.shapes)?;
    let before = g.op_histogram().values().sum::<usize>();
    let reports = common::optimize(&mut g, &a.model)?;
    for r in reports.iter().filter(|r| r.changed > 0) {
        println!("  {:<24} {} nodes", r.pass, r.changed);
    }
    let opts = crate::onnx::ExportOptions {
        opset: a.opset,
        ..Default::default()
    };
    let sp = common::spinner(format!("writing {}", a.output.display()));
    let rep = crate::onnx::export_file(&g, &a.output, &opts)?;
    sp.finish_and_clear();
    let after = g.op_histogram().values().sum::<usize>();
    println!(
        "wrote {} (opset {}, {} bytes{}): {before} ops -> {after} ops",
        a.output.display(),
        rep.opset,
        rep.bytes,
        rep.external_data
            .as_ref()
            .map(|p| format!(", weights in {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
