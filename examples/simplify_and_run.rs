//! Import an ONNX model, simplify it, run it on glora's CPU executor with random
//! inputs, and write the simplified model next to it — the library used as a user
//! would use it.
//!
//!     cargo run --release --example simplify_and_run -- MODEL.onnx [OUT.onnx]

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .context("usage: simplify_and_run MODEL.onnx [OUT.onnx]")?,
    );
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| model.with_extension("simplified.onnx"));

    let mut graph = glora::onnx::import_file(&model)?;
    let before = graph.op_histogram().values().sum::<usize>();
    glora::passes::optimize(&mut graph, &glora::exec::CpuBackend)?;
    println!(
        "{}: {before} ops, {} after simplification, {} linear layers",
        model.display(),
        graph.op_histogram().values().sum::<usize>(),
        glora::passes::find_linear_layers(&graph).len()
    );

    let shapes = glora::verify::concrete_input_shapes(&graph, &[], 1, 8)?;
    let inputs = glora::verify::random_inputs(&shapes, 0);
    let outputs = glora::exec::run_cpu(&graph, &inputs)?;
    for (t, port) in outputs.iter().zip(&graph.outputs) {
        println!("  {} {}{:?}", graph.value(*port).name, t.dtype(), t.shape());
    }

    let report = glora::onnx::export_file(&graph, &out, &Default::default())?;
    println!("wrote {} (opset {})", out.display(), report.opset);
    Ok(())
}
