//! Gradient checks: every vector-Jacobian rule of the autodiff pass against central
//! finite differences computed by an independent f64 reference interpreter of IR
//! graphs (with that interpreter's own self-tests).

mod reference64;
mod reference64_tests;
mod vjp;
