//! Density grids on the GPU: particles deposited on the split path's sub-grid by
//! `shaders/heatmap/deposit.wgsl` (exact 64-bit fixed-point sums from 32-bit atomics), read
//! back (the sub-grid is small: ~15 MB at the default bandwidth on [-3, 3]², whatever the
//! image size) and folded into pixels by the CPU band by band ([`DensityGrid::read_rows`]).
//!
//! The weights are computed in f32 on the GPU and in f64 on the CPU, so the two paths'
//! integer sums differ in the last units (about 1e-5 of a peak); both stay within the
//! accuracy bound against the direct f64 sum, and the GPU's sums equal its f32 CPU twin
//! (`src/cpu/deposit.rs`).

use super::context::GpuContext;
use super::shaders::DEPOSIT_STAGE;
use crate::error::{Error, Result};
use crate::heatmap::{DensityGrid, SubGrid, LAGRANGE_COEFFICIENTS};
use wgpu::util::DeviceExt;

/// Uniform parameters of one deposit dispatch. Keep in sync with `DepositParams` in
/// shaders/heatmap/deposit.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DepositParams {
    pub origin: [f32; 2],
    pub inv_d: f32,
    pub stride: u32,
    pub lo: [f32; 2],
    pub hi: [f32; 2],
    pub count: u32,
    pub first: u32,
    pub n_sub: u32,
    pub pad: u32,
}

/// Invocations per workgroup of the deposit (the shader's `@workgroup_size`).
const WORKGROUP: u32 = 64;

/// Most particles uploaded at once (8 bytes each).
const UPLOAD_PARTICLES: usize = 1 << 22;

impl DepositParams {
    /// The parameters for `sub` (counts filled in per dispatch).
    pub fn for_sub_grid(sub: &SubGrid) -> Self {
        DepositParams {
            origin: [sub.x0 as f32, sub.y0 as f32],
            inv_d: (1.0 / sub.d) as f32,
            stride: sub.stride as u32,
            lo: [sub.accept[0] as f32, sub.accept[2] as f32],
            hi: [sub.accept[1] as f32, sub.accept[3] as f32],
            count: 0,
            first: 0,
            n_sub: sub.n_sub as u32,
            pad: 0,
        }
    }
}

/// The Lagrange coefficients as the shader's uniform: row `n` = (k 0..3, k 4..7).
pub fn lagrange_uniform() -> [[f32; 4]; 16] {
    let mut out = [[0.0f32; 4]; 16];
    for (n, row) in LAGRANGE_COEFFICIENTS.iter().enumerate() {
        for (k, &c) in row.iter().enumerate() {
            out[2 * n + k / 4][k % 4] = c as f32;
        }
    }
    out
}

/// The deposit pipeline on a device.
pub struct GpuRaster {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    lagrange: wgpu::Buffer,
}

impl GpuRaster {
    pub fn new(ctx: GpuContext) -> Self {
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("deposit"),
                entries: &[
                    entry(0, wgpu::BufferBindingType::Uniform),
                    entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
                    entry(2, wgpu::BufferBindingType::Storage { read_only: false }),
                    entry(3, wgpu::BufferBindingType::Uniform),
                ],
            });
        let pipeline_layout = ctx
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("deposit"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = ctx.pipeline(&DEPOSIT_STAGE, Some(&pipeline_layout), WORKGROUP);
        let lagrange = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("lagrange"),
                contents: bytemuck::cast_slice(&lagrange_uniform()),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        GpuRaster {
            ctx,
            layout,
            pipeline,
            lagrange,
        }
    }

    pub fn adapter_name(&self) -> String {
        self.ctx.adapter_name()
    }

    /// Whether `grid` can be filled here: it takes the split path and its sub-grid (8
    /// bytes a node) fits one storage buffer.
    pub fn supports(&self, grid: &DensityGrid) -> bool {
        grid.sub_grid()
            .is_some_and(|s| (s.n_sub * s.stride * 8) as u64 <= self.ctx.max_storage_bytes())
    }

    /// The raw sub-grid words (lo, hi per node) of `points` deposited on `sub`.
    pub fn deposit_words(&self, sub: &SubGrid, points: &[f32]) -> Result<Vec<u32>> {
        let nodes = sub.n_sub * sub.stride;
        let bytes = (nodes * 8) as u64;
        if bytes > self.ctx.max_storage_bytes() {
            return Err(Error::Gpu(format!(
                "the density sub-grid needs {bytes} bytes, more than one storage buffer holds"
            )));
        }
        let device = &self.ctx.device;
        let grid = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sub-grid"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            // wgpu zero-initializes buffers.
            mapped_at_creation: false,
        });
        let base = DepositParams::for_sub_grid(sub);
        let max_groups = device.limits().max_compute_workgroups_per_dimension as usize;
        for upload in points.chunks(2 * UPLOAD_PARTICLES) {
            let n = upload.len() / 2;
            if n == 0 {
                continue;
            }
            let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("particles"),
                contents: bytemuck::cast_slice(upload),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            let per_dispatch = max_groups * WORKGROUP as usize;
            let mut uniforms = Vec::new();
            for first in (0..n).step_by(per_dispatch) {
                let count = per_dispatch.min(n - first);
                let params = DepositParams {
                    count: count as u32,
                    first: first as u32,
                    ..base
                };
                let ubuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("deposit params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("deposit"),
                    layout: &self.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: ubuf.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: buffer.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: grid.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: self.lagrange.as_entire_binding(),
                        },
                    ],
                });
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&self.pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups((count as u32).div_ceil(WORKGROUP), 1, 1);
                }
                uniforms.push(ubuf);
            }
            self.ctx.queue.submit([encoder.finish()]);
            self.ctx.wait()?;
        }
        let raw = self.ctx.read_buffer(&grid, bytes)?;
        Ok(bytemuck::cast_slice::<u8, u32>(&raw).to_vec())
    }

    /// Add the kernels of row-major `(n, 2)` points to `grid` ([`supports`](Self::supports)
    /// must hold): deposited on the GPU, added to the grid's integer sums.
    pub fn accumulate(&self, grid: &mut DensityGrid, points: &[f32]) -> Result<()> {
        let sub = grid.sub_grid().ok_or_else(|| {
            Error::Gpu("this density grid takes the direct path, not the GPU's".into())
        })?;
        let words = self.deposit_words(&sub, points)?;
        let counts: Vec<i64> = words
            .chunks_exact(2)
            .map(|w| ((u64::from(w[1]) << 32) | u64::from(w[0])) as i64)
            .collect();
        grid.add_sub_grid_counts(&counts, (points.len() / 2) as u64)
    }
}
