//! Density grids on the GPU: particles deposited on the split path's sub-grid by
//! `shaders/heatmap/deposit.wgsl` (exact 64-bit fixed-point sums from 32-bit atomics), read
//! back (the sub-grid is small: ~15 MB at the default bandwidth on [-3, 3]², whatever the
//! image size) and folded into pixels by the CPU band by band ([`DensityGrid::read_rows`]).
//!
//! The weights are computed in f32 on the GPU and in f64 on the CPU, so the two paths'
//! integer sums differ in the last units (about 1e-5 of a peak); both stay within the
//! accuracy bound against the direct f64 sum, and the GPU's sums equal its f32 CPU twin
//! (`src/engine/cpu/deposit.rs`).

use super::bindings::buffer_layout;
use super::bindings::BufferBinding::{ReadOnly, ReadWrite, Uniform};
use super::context::GpuContext;
use super::shaders::DEPOSIT_STAGE;
use crate::density::heatmap::{DensityGrid, SubGrid, LAGRANGE_COEFFICIENTS};
use crate::error::{Error, Result};
use wgpu::util::DeviceExt;

/// Uniform parameters of one deposit dispatch. Keep in sync with `DepositParams` in
/// shaders/heatmap/deposit.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DepositParams {
    /// Position of the grid's first sub-cell centre.
    pub origin: [f32; 2],
    /// Sub-cells per unit length.
    pub inv_d: f32,
    /// Sub-cells per sub-grid row.
    pub stride: u32,
    /// Lower corner of the region whose particles are deposited.
    pub lo: [f32; 2],
    /// Upper corner of that region.
    pub hi: [f32; 2],
    /// Particles in this dispatch.
    pub count: u32,
    /// Row of the dispatch's first particle in the buffer.
    pub first: u32,
    /// Sub-grid rows in all.
    pub n_sub: u32,
    /// Floats per particle row (2 for `(n, 2)` points; D for the engine's `(P, D)` buffer).
    pub dim: u32,
    /// The tile this dispatch fills: sub-rows `row0 .. row0 + rows`, stored from word 0.
    pub row0: u32,
    /// Sub-rows in this tile.
    pub rows: u32,
    /// Padding to a multiple of 16 bytes.
    pub pad: [u32; 2],
}

/// Invocations per workgroup of the deposit (the shader's `@workgroup_size`, as the stage
/// declares it).
const WORKGROUP: u32 = DEPOSIT_STAGE.workgroup.fixed_size();

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
            dim: 2,
            row0: 0,
            rows: sub.n_sub as u32,
            pad: [0; 2],
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

/// The deposit pipeline on a device (clones share it).
#[derive(Clone)]
pub struct GpuRaster {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    lagrange: wgpu::Buffer,
}

impl GpuRaster {
    /// The deposit pipeline on `ctx`.
    pub fn new(ctx: GpuContext) -> Self {
        let layout = buffer_layout(
            &ctx.device,
            "deposit",
            &[Uniform, ReadOnly, ReadWrite, Uniform],
        );
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

    /// The name of the adapter it runs on.
    pub fn adapter_name(&self) -> String {
        self.ctx.adapter_name()
    }

    /// Whether `grid` can be filled here: it takes the split path and one sub-row of its
    /// sub-grid (8 bytes a node) fits a storage buffer (larger sub-grids are tiled).
    pub fn supports(&self, grid: &DensityGrid) -> bool {
        grid.sub_grid()
            .is_some_and(|s| (s.stride * 8) as u64 <= self.ctx.max_storage_bytes())
    }

    /// Encode the deposit of particles `0..n` of `points` (rows of `dim` floats) into
    /// `tile`, the sub-rows `row0 .. row0 + rows` of `sub`: one dispatch per
    /// `max_compute_workgroups_per_dimension` workgroups. Returns the uniform buffers,
    /// which must live until the encoder is submitted.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        sub: &SubGrid,
        points: &wgpu::Buffer,
        n: usize,
        dim: usize,
        tile: &wgpu::Buffer,
        row0: usize,
        rows: usize,
    ) -> Vec<wgpu::Buffer> {
        let device = &self.ctx.device;
        let max_groups = device.limits().max_compute_workgroups_per_dimension as usize;
        let per_dispatch = max_groups * WORKGROUP as usize;
        let base = DepositParams {
            dim: dim as u32,
            row0: row0 as u32,
            rows: rows as u32,
            ..DepositParams::for_sub_grid(sub)
        };
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
                        resource: points.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: tile.as_entire_binding(),
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
        uniforms
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
            let _uniforms = self.encode(&mut encoder, sub, &buffer, n, 2, &grid, 0, sub.n_sub);
            self.ctx.queue.submit([encoder.finish()]);
            self.ctx.wait()?;
        }
        let raw = self.ctx.read_buffer(&grid, bytes)?;
        Ok(bytemuck::cast_slice::<u8, u32>(&raw).to_vec())
    }

    /// Add the kernels of row-major `(n, 2)` points to `grid` ([`supports`](Self::supports)
    /// must hold): deposited on the GPU (in row tiles when the sub-grid exceeds one storage
    /// buffer), added to the grid's integer sums.
    pub fn accumulate(&self, grid: &mut DensityGrid, points: &[f32]) -> Result<()> {
        let mut density = GpuDensity::with_raster(self.clone(), grid, None)?;
        density.deposit_points(points)?;
        density.flush(grid)
    }
}

/// A density sub-grid resident on the device, accumulated across batches straight from a
/// GPU buffer of particles (the sampler's, see `GpuEngine`'s
/// `DeviceOutputs::deposit_samples`):
/// no particle comes back to the host for it, and the sums come back once, at
/// [`flush`](Self::flush).
///
/// A sub-grid larger than one storage buffer (or `tile_bytes`) is split into row tiles,
/// each its own buffer and its own pass over the particles (a particle's 8 stencil rows
/// reach one or two tiles; the others skip it). Sums are exact integers, so tiling and the
/// order of batches change nothing (tested).
pub struct GpuDensity {
    raster: GpuRaster,
    sub: SubGrid,
    /// (first sub-row, sub-rows, buffer of 2 words a node).
    tiles: Vec<(usize, usize, wgpu::Buffer)>,
    /// Particles deposited since the last flush (far and non-finite ones included, as the
    /// CPU path counts them).
    pending: u64,
}

impl GpuDensity {
    /// A zeroed device sub-grid for `grid` (its split path), in tiles of at most
    /// `tile_bytes` (`None`: the device's largest storage binding). `Err` with the reason
    /// when the GPU cannot serve the grid (direct path, or too large).
    pub fn new(ctx: GpuContext, grid: &DensityGrid, tile_bytes: Option<u64>) -> Result<Self> {
        Self::with_raster(GpuRaster::new(ctx), grid, tile_bytes)
    }

    /// [`new`](Self::new) with an existing pipeline.
    pub fn with_raster(
        raster: GpuRaster,
        grid: &DensityGrid,
        tile_bytes: Option<u64>,
    ) -> Result<Self> {
        let ctx = &raster.ctx;
        let sub = grid.sub_grid().ok_or_else(|| {
            Error::Gpu(format!(
                "the {} kernel at bandwidth {} on a {}x{} image takes the direct (per-pixel) \
                 path, which only the CPU has",
                grid.kernel().name(),
                grid.bandwidth(),
                grid.width(),
                grid.height()
            ))
        })?;
        let row_bytes = (sub.stride * 8) as u64;
        let cap = tile_bytes.unwrap_or(u64::MAX).min(ctx.max_storage_bytes());
        let rows_per_tile = (cap / row_bytes) as usize;
        if rows_per_tile == 0 {
            return Err(Error::Gpu(format!(
                "one sub-row of the density sub-grid ({row_bytes} bytes) is larger than a \
                 storage buffer ({cap} bytes)"
            )));
        }
        let tiles = (0..sub.n_sub)
            .step_by(rows_per_tile)
            .map(|row0| {
                let rows = rows_per_tile.min(sub.n_sub - row0);
                let buffer = raster.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("density tile"),
                    size: rows as u64 * row_bytes,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    // wgpu zero-initializes buffers.
                    mapped_at_creation: false,
                });
                (row0, rows, buffer)
            })
            .collect();
        raster.ctx.check()?;
        Ok(GpuDensity {
            raster,
            sub,
            tiles,
            pending: 0,
        })
    }

    /// Number of row tiles the sub-grid is split into.
    pub fn tiles(&self) -> usize {
        self.tiles.len()
    }

    /// The device this grid lives on.
    pub fn context(&self) -> &GpuContext {
        &self.raster.ctx
    }

    /// Add particles `0..n` of `points`, a buffer of this device holding row-major rows of
    /// `dim` floats (x, y first), to every tile. Queued only: later submissions see it.
    pub fn deposit_buffer(&mut self, points: &wgpu::Buffer, n: usize, dim: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if dim < 2 {
            return Err(Error::Gpu(
                "density images need points of dimension 2".into(),
            ));
        }
        let mut encoder = self
            .raster
            .ctx
            .device
            .create_command_encoder(&Default::default());
        let mut uniforms = Vec::new();
        for (row0, rows, tile) in &self.tiles {
            uniforms.extend(self.raster.encode(
                &mut encoder,
                &self.sub,
                points,
                n,
                dim,
                tile,
                *row0,
                *rows,
            ));
        }
        self.raster.ctx.queue.submit([encoder.finish()]);
        self.pending += n as u64;
        self.raster.ctx.check()
    }

    /// Upload row-major `(n, 2)` points and deposit them (tests, and callers without a
    /// device buffer of their own).
    pub fn deposit_points(&mut self, points: &[f32]) -> Result<()> {
        for upload in points.chunks(2 * UPLOAD_PARTICLES) {
            let buffer =
                self.raster
                    .ctx
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("particles"),
                        contents: bytemuck::cast_slice(upload),
                        usage: wgpu::BufferUsages::STORAGE,
                    });
            self.deposit_buffer(&buffer, upload.len() / 2, 2)?;
            self.raster.ctx.wait()?;
        }
        Ok(())
    }

    /// Read the sums back, tile by tile, add them (and the particle count) to `grid`'s
    /// integer sums, and zero the device grid: what was deposited is then in `grid` once.
    pub fn flush(&mut self, grid: &mut DensityGrid) -> Result<()> {
        if grid.sub_grid() != Some(self.sub) {
            return Err(Error::Gpu(
                "the GPU density sub-grid does not belong to this grid".into(),
            ));
        }
        let row_bytes = (self.sub.stride * 8) as u64;
        for (row0, rows, tile) in &self.tiles {
            let bytes = *rows as u64 * row_bytes;
            let raw = self.raster.ctx.read_buffer(tile, bytes)?;
            let counts: Vec<i64> = bytemuck::cast_slice::<u8, u32>(&raw)
                .chunks_exact(2)
                .map(|w| ((u64::from(w[1]) << 32) | u64::from(w[0])) as i64)
                .collect();
            grid.add_sub_grid_rows(*row0, &counts)?;
            let mut encoder = self
                .raster
                .ctx
                .device
                .create_command_encoder(&Default::default());
            encoder.clear_buffer(tile, 0, None);
            self.raster.ctx.queue.submit([encoder.finish()]);
        }
        grid.add_deposits(std::mem::take(&mut self.pending));
        self.raster.ctx.wait()
    }
}
