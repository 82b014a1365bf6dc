//! memodiff: reverse-time diffusion sampling driven by the exact empirical score of a
//! finite training set, on the GPU (wgpu/WGSL) with a CPU twin of every stage.

pub mod dataset;
pub mod engine;
pub mod error;
pub mod params;
pub mod philox;
pub mod schedule;

pub use error::{Error, Result};
