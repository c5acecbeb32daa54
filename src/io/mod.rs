//! File plumbing shared by every stage: atomic writes (temporary file + rename, so a
//! killed process never leaves a half-written output) and host tensors in safetensors.

mod atomic;
mod safetensors_io;

pub use atomic::{write_atomic, write_atomic_with};
pub use safetensors_io::{read_safetensors, write_safetensors};
