//! The library side of `glora bench`'s measurements that need more than a session's
//! run: [`machine`] says what the CPU can do at most, [`gemm`] lists a model's
//! training-step matrix products and times them on our CPU kernels. The CLI in
//! `src/cli/bench.rs` parses flags, calls these and prints.

pub mod gemm;
pub mod machine;
