//! memodiff: reverse-time diffusion sampling driven by the exact empirical score of a
//! finite training set, on the GPU (wgpu/WGSL) with a CPU twin of every stage.

pub mod cli;
pub mod commands;
pub mod density;
pub mod engine;
pub mod error;
pub mod image;
pub mod io;
pub mod isa;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod run;

pub use error::{Error, Result};
