//! Training: labelled image datasets loaded from disk and cut into batches of
//! [`crate::ir::Tensor`] ([`data`]), the loss, the optimiser and the learning-rate
//! schedule that the training loop applies to them.

pub mod data;
pub mod loss;
pub mod optim;
pub mod schedule;

pub use data::{DataError, Dataset};
