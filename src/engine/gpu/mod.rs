//! The wgpu side: device set-up, shader assembly, pipelines and the GPU sampler.

pub mod bindings;
pub mod context;
pub mod diagnostics;
pub mod engine;
pub mod nearest;
pub mod patch;
pub mod pipeline_cache;
pub mod raster;
pub mod shaders;

pub use context::{AdapterChoice, GpuContext};
pub use engine::GpuEngine;

use crate::error::Result;

/// What only an engine whose particles live in GPU memory can offer the stages around
/// it: its device, for other GPU stages to share (the nearest-neighbour metrics, the
/// density grid), and the last batch's final positions, deposited into a density grid
/// without a readback. The driver asks an engine for it with
/// [`Engine::device_outputs`](crate::engine::Engine::device_outputs); the core `Engine`
/// trait stays free of GPU types. (A capability trait rather than `as_any()` and a
/// downcast to `GpuEngine`: callers depend on what the engine can do, not on which
/// type it is, and the trait documents that contract in one place.)
pub trait DeviceOutputs {
    /// The device the engine runs on.
    fn context(&self) -> &GpuContext;

    /// Add the positions the last batch left, particles `0..n` of the batch, to `target`
    /// on the device, without reading them back (`target` must live on the same device).
    /// The driver calls it once a batch has done all its steps.
    fn deposit_samples(&self, n: usize, target: &mut raster::GpuDensity) -> Result<()>;
}
