//! Rust types for the ONNX protobuf messages, generated at build time from
//! `schemas/onnx.proto`. Import decodes files into these; export encodes them.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
