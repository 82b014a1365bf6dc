//! Host side of `shaders/nearest.wgsl`: the exact nearest and second-nearest training
//! points of many samples, on the GPU. The shader finds each sample's three nearest
//! training points in f32; the host recomputes those three distances in f64 and keeps
//! their top two when the third is provably farther than both (otherwise, for the rare
//! near-tie, it does that sample by brute force in f64): the result equals the f64 brute
//! force of `engine::nearest::nearest_two` exactly (tested). See `engine::nearest::exact_neighbours`.

use super::bindings::buffer_layout;
use super::bindings::BufferBinding::{ReadOnly, ReadWrite, UniformAtOffset};
use super::context::GpuContext;
use super::shaders::NEAREST_STAGE;
use crate::engine::nearest::Neighbours;
use crate::engine::nearest::{chunk_points, exact_neighbours, max_norm, Best};
use crate::error::{Error, Result};
use rayon::prelude::*;
use wgpu::util::DeviceExt;

/// Threads per workgroup of the nearest stage.
const WORKGROUP_SIZE: u32 = 64;

/// The uniform of one dispatch. Keep in sync with `NearestParams` in `shaders/nearest.wgsl`
/// (public for tests/shaders.rs, which checks the two layouts field by field).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NearestParams {
    /// Samples in this dispatch.
    pub n_samples: u32,
    /// Dimension D.
    pub dim: u32,
    /// Threads per row of the 2-D dispatch grid.
    pub threads_per_row: u32,
    /// First training point of the chunk.
    pub chunk_start: u32,
    /// Training points of the chunk.
    pub chunk_count: u32,
    /// 1 for the first chunk: start from an empty top three.
    pub first: u32,
    /// Padding to 32 bytes.
    pub _pad: [u32; 2],
}

/// The nearest-neighbour stage for one training set, on a device shared with an engine.
pub struct GpuNearest {
    ctx: GpuContext,
    pipeline: wgpu::ComputePipeline,
    main_layout: wgpu::BindGroupLayout,
    params_layout: wgpu::BindGroupLayout,
    training_buffer: wgpu::Buffer,
    training: Vec<f64>,
    dim: usize,
    norm: f64,
    /// Samples handed to brute force so far (near-ties): for diagnostics.
    pub fallbacks: u64,
}

impl GpuNearest {
    /// Upload the row-major `(n, dim)` training points (n >= 1, as f32) to `ctx`'s device.
    pub fn new(ctx: &GpuContext, training: &[f64], dim: usize) -> Result<Self> {
        if dim == 0 || training.is_empty() || !training.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "training points",
                "need a non-empty row-major (n, dim) array",
            ));
        }
        let bytes = (training.len() * 4) as u64;
        if bytes > ctx.max_storage_bytes() {
            return Err(Error::invalid(
                "training points",
                "the training set does not fit one GPU buffer",
            ));
        }
        let device = &ctx.device;
        let main_layout = buffer_layout(device, "nearest", &[ReadOnly, ReadOnly, ReadWrite]);
        let params_layout = buffer_layout(device, "nearest params", &[UniformAtOffset]);
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("nearest"),
            bind_group_layouts: &[Some(&main_layout), Some(&params_layout)],
            immediate_size: 0,
        });
        let pipeline = ctx.pipeline(&NEAREST_STAGE, Some(&layout), WORKGROUP_SIZE);
        let t32: Vec<f32> = training.iter().map(|&v| v as f32).collect();
        let training_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("nearest training"),
            contents: bytemuck::cast_slice(&t32),
            usage: wgpu::BufferUsages::STORAGE,
        });
        ctx.check()?;
        Ok(Self {
            ctx: ctx.clone(),
            pipeline,
            main_layout,
            params_layout,
            training_buffer,
            training: training.to_vec(),
            dim,
            norm: max_norm(training, dim),
            fallbacks: 0,
        })
    }

    /// Samples one pass holds: bounded by the storage-buffer limit (the samples and the
    /// 32-byte top three of each) and by a readback of at most 64 MB at a time.
    fn block_rows(&self) -> usize {
        let per_row = (self.dim * 4).max(32) as u64;
        (self.ctx.max_storage_bytes() / per_row).min(1 << 21) as usize
    }

    /// The f32 top three of every row of `samples` (row-major, `dim` columns).
    pub fn candidates(&self, samples: &[f32]) -> Result<Vec<Best>> {
        let dim = self.dim;
        let n_train = self.training.len() / dim;
        let mut out = Vec::with_capacity(samples.len() / dim);
        for block in samples.chunks(self.block_rows() * dim) {
            out.extend(self.candidates_block(block, n_train)?);
        }
        Ok(out)
    }

    fn candidates_block(&self, samples: &[f32], n_train: usize) -> Result<Vec<Best>> {
        let (dim, device) = (self.dim, &self.ctx.device);
        let n = samples.len() / dim;
        let groups = n.div_ceil(WORKGROUP_SIZE as usize).max(1);
        let max_x = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let (gx, gy) = (groups.min(max_x), groups.div_ceil(groups.min(max_x)));
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as usize;
        let size = std::mem::size_of::<NearestParams>();
        let stride = size.div_ceil(align) * align;
        let chunk = chunk_points(dim);
        let chunks: Vec<(usize, usize)> = (0..n_train)
            .step_by(chunk)
            .map(|s| (s, chunk.min(n_train - s)))
            .collect();
        let mut params = vec![0u8; stride * chunks.len()];
        for (c, &(start, count)) in chunks.iter().enumerate() {
            let p = NearestParams {
                n_samples: n as u32,
                dim: dim as u32,
                threads_per_row: (gx as u32) * WORKGROUP_SIZE,
                chunk_start: start as u32,
                chunk_count: count as u32,
                first: (c == 0) as u32,
                _pad: [0; 2],
            };
            params[c * stride..c * stride + size].copy_from_slice(bytemuck::bytes_of(&p));
        }
        let params_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("nearest params"),
            contents: &params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let samples_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("nearest samples"),
            contents: bytemuck::cast_slice(samples),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let best_bytes = (n * std::mem::size_of::<Best>()) as u64;
        let best = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("nearest best"),
            size: best_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let main = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("nearest"),
            layout: &self.main_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: samples_buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: self.training_buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: best.as_entire_binding(),
                },
            ],
        });
        let params_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("nearest params"),
            layout: &self.params_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params_buffer,
                    offset: 0,
                    size: std::num::NonZeroU64::new(size as u64),
                }),
            }],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &main, &[]);
            for c in 0..chunks.len() {
                pass.set_bind_group(1, &params_group, &[(c * stride) as u32]);
                pass.dispatch_workgroups(gx as u32, gy as u32, 1);
            }
        }
        self.ctx.queue.submit([encoder.finish()]);
        let bytes = self.ctx.read_buffer(&best, best_bytes)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// The exact nearest two of every row of `samples` (`None` for a non-finite row),
    /// equal to the f64 brute force.
    pub fn neighbours(&mut self, samples: &[f32]) -> Result<Vec<Option<Neighbours>>> {
        let dim = self.dim;
        let best = self.candidates(samples)?;
        let (training, norm) = (&self.training, self.norm);
        let results: Vec<(Option<Neighbours>, bool)> = samples
            .par_chunks(dim)
            .zip(best.par_iter())
            .map(|(x, b)| {
                if x.iter().any(|v| !v.is_finite()) {
                    return (None, false);
                }
                let (nb, fell) = exact_neighbours(training, dim, norm, x, b);
                (Some(nb), fell)
            })
            .collect();
        self.fallbacks += results.iter().filter(|r| r.1).count() as u64;
        Ok(results.into_iter().map(|r| r.0).collect())
    }
}
