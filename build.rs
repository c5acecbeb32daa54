//! Compiles `schemas/onnx.proto` into Rust types (`$OUT_DIR/onnx.rs`) with protox, a
//! protobuf compiler written in Rust, so building glora needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=schemas/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["schemas"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
