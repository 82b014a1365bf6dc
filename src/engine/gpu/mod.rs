//! The wgpu side: device set-up, shader assembly, pipelines and the GPU sampler.

pub mod bindings;
pub mod context;
pub mod diagnostics;
pub mod engine;
pub mod nearest;
pub mod raster;
pub mod shaders;

pub use context::{AdapterChoice, GpuContext};
pub use engine::GpuEngine;
