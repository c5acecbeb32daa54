//! Training: what a run trains for ([`task`]), its data carved and shaped for its
//! model ([`prepare`]), the loss, the optimiser and the learning-rate
//! schedule, the training graph ([`graph`]: forward, cross-entropy and the autodiff
//! pass's gradients), the methods ([`mode`]) and the loop with its checkpoints
//! ([`trainer`], [`checkpoint`]), and the parity check of a whole training step on
//! another backend ([`parity`]).

pub mod checkpoint;
pub mod graph;
pub mod loss;
pub mod mode;
pub mod optim;
pub mod parity;
pub mod prepare;
pub mod schedule;
pub mod step;
pub mod task;
pub mod trainer;

pub use mode::{Method, Mode};
pub use task::Task;
pub use trainer::{RunFiles, TrainOptions, TrainSummary, train};
