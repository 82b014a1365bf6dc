//! The GPU sampler: particles stay in one storage buffer for all steps; the host encodes
//! one `em_step` dispatch per step (per-step parameters selected by a dynamic uniform
//! offset into a buffer uploaded once per run) and reads back only at the end.
//! This file holds the engine's device state (pipelines, buffers, bind groups); its
//! children `steps.rs` advance a batch through its steps and `score.rs` evaluates the
//! score at query points.

mod score;
mod steps;
use steps::Timestamps;

use super::bindings::buffer_layout;
use super::bindings::BufferBinding::{
    ReadOnly, ReadWrite, ReadWriteAtOffset, Uniform, UniformAtOffset,
};
use super::context::{map_and_copy, AdapterChoice, GpuContext};
use super::raster::GpuDensity;
use super::shaders::{
    EM_STEP_GENERAL_STAGE, EM_STEP_STAGE, EM_STEP_TILED_STAGE, HEUN_STEP_GENERAL_STAGE,
    HEUN_STEP_STAGE, HEUN_STEP_TILED_STAGE, INIT_NOISE_STAGE, SCORE_GENERAL_STAGE, SCORE_STAGE,
    SCORE_TILED_STAGE,
};
use super::DeviceOutputs;
use crate::engine::records::{
    chunk_points, hardware_chunk_points, training_chunks_of, ChunkParams, RunParams, StepParams,
    StepRecord, StepRecords, GENERAL_PARTICLES, MAX_DIM, MAX_DIMENSION,
};
use crate::engine::{Backend, BatchWork, Engine, PosteriorTap, Problem, SamplerKind};
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use wgpu::util::DeviceExt;

/// Dispatches encoded per submission: the host reports progress between submissions,
/// and all of a batch's submissions are queued before the first wait.
pub(crate) const STEPS_PER_SUBMISSION: usize = 10;

/// Default threads per workgroup. Results do not depend on it (tested).
pub const DEFAULT_WORKGROUP_SIZE: u32 = 64;

/// Particles each invocation of the D <= 4 step and score stages reduces, sharing each
/// training point it loads (`PARTICLES_PER_INVOCATION` in common/reduce_chunk.wgsl).
pub const PARTICLES_PER_INVOCATION: usize = 2;

/// How the score kernels reduce over the training points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// `Tiled` from `TILED_MIN_TRAINING_POINTS` training points on, `Simple` below.
    Auto,
    /// Every invocation reads every training point from the storage buffer.
    Simple,
    /// Training points staged through workgroup shared memory, a tile at a time.
    Tiled,
}

/// Training-set size from which `Reduction::Auto` picks the tiled kernel: one tile of
/// `shaders/common/training_tiled.wgsl`. Below it a tile would be mostly empty.
pub const TILED_MIN_TRAINING_POINTS: usize = 256;

/// Largest training set the posterior tap handles: the tapped reductions carry the
/// argmax between chunk dispatches as an f32 value, exact below 2^24.
pub const MAX_TAPPED_TRAINING_POINTS: usize = 1 << 24;

/// What a tapped step stage writes per particle (`TapEntry` in shaders/common/tap_on.wgsl;
/// keep in sync): the largest softmax weight and the first training index having it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TapEntry {
    /// The largest softmax weight of the particle.
    pub max_weight: f32,
    /// The first training index having it.
    pub argmax: u32,
}

/// Device buffers of the posterior tap: one region of `TapEntry` per tapped step of a
/// segment, and its readback. Grown on demand and reused.
struct TapBuffers {
    output: wgpu::Buffer,
    staging: wgpu::Buffer,
}

/// Environment variable that, set to `0`, keeps the general-D kernels on their portable
/// path (workgroup loads) even where the adapter has subgroups.
pub const SUBGROUPS_VAR: &str = "MEMODIFF_GPU_SUBGROUPS";

/// Uploaded state of one problem, reused across batches while the problem is the same.
struct ProblemBuffers {
    dim: usize,
    /// [`Dataset::identity`] of the training points uploaded: every segment of every batch
    /// calls `prepare_problem`, which then neither pads nor uploads them again.
    training_id: u64,
    /// The step records (`StepParams` or `HeunParams`, 48 bytes each), back to back.
    steps_key: Vec<u8>,
    training: wgpu::Buffer,
    steps: wgpu::Buffer,
    step_stride: u64,
    /// One `ChunkParams` per chunk of `chunk_points` training points, at
    /// `uniform_stride` offsets.
    chunks: wgpu::Buffer,
    chunk_points: usize,
    n_chunks: usize,
    uniform_stride: u64,
}

/// Per-batch buffers, grown on demand and reused.
struct BatchBuffers {
    capacity_bytes: u64,
    particles: wgpu::Buffer,
    scratch: wgpu::Buffer,
    /// Online-softmax state carried between chunk dispatches (`state_bytes_per_particle`),
    /// or a placeholder when the training set fits one chunk.
    softmax_state: wgpu::Buffer,
    /// Readback buffers of the final and the initial positions, `capacity_bytes` each,
    /// reused by every segment and batch instead of made per call.
    final_staging: wgpu::Buffer,
    initial_staging: wgpu::Buffer,
    /// What `particles` holds after the last `advance_batch`: the first particle of that
    /// batch and the positions read back from it. A segment that continues the batch
    /// from exactly these positions needs no upload. `None` once anything else wrote the
    /// buffer.
    resident: Option<(u64, Vec<f32>)>,
}

/// The GPU engine: the WGSL stages on one wgpu device.
pub struct GpuEngine {
    ctx: GpuContext,
    main_layout: wgpu::BindGroupLayout,
    step_layout: wgpu::BindGroupLayout,
    chunk_layout: wgpu::BindGroupLayout,
    /// Group 3 of the tapped stages: their `tap_out` region, at a dynamic offset.
    tap_layout: wgpu::BindGroupLayout,
    init_pipeline: wgpu::ComputePipeline,
    /// The layout every sampler pipeline shares (for those made on demand).
    layout: wgpu::PipelineLayout,
    /// The layout of the tapped step pipelines: `layout` plus group 3.
    tapped_layout: wgpu::PipelineLayout,
    /// Step and score pipelines, made on first use for the specialisation of a dimension
    /// (`Stage::source_for_dim`: `LANES` for D <= 4, `OWNED` for D > 4), so that a run
    /// compiles only the one or two it dispatches: (entry point, source, pipeline).
    pipelines: Vec<(&'static str, String, wgpu::ComputePipeline)>,
    /// Whether the general-D stages read the particle tile by subgroup broadcasts (where
    /// the adapter has them, unless `MEMODIFF_GPU_SUBGROUPS=0` or `set_subgroups(false)`).
    subgroups: bool,
    /// Training points per dispatch forced by a test (`set_chunk_points`), instead of the
    /// adapter's choice.
    forced_chunk_points: Option<usize>,
    run_params: wgpu::Buffer,
    workgroup_size: u32,
    reduction: Reduction,
    timestamps: Option<Timestamps>,
    last_kernel_seconds: Option<f64>,
    problem: Option<ProblemBuffers>,
    batch: Option<BatchBuffers>,
    tap_buffers: Option<TapBuffers>,
    /// The patch-score stages (`--score local:k` ...), made on first use.
    patch: Option<super::patch::GpuPatch>,
}

impl GpuEngine {
    /// Open the engine on an adapter `choice` picks.
    pub fn new(choice: AdapterChoice) -> Result<Self> {
        Self::with_workgroup_size(choice, DEFAULT_WORKGROUP_SIZE)
    }

    /// [`new`](Self::new) with another workgroup size of the D <= 4 stages.
    pub fn with_workgroup_size(choice: AdapterChoice, workgroup_size: u32) -> Result<Self> {
        Self::on_context(GpuContext::new(choice)?, workgroup_size)
    }

    /// The engine on a device already open (see `engine::open_device`).
    pub fn on(ctx: GpuContext) -> Result<Self> {
        Self::on_context(ctx, DEFAULT_WORKGROUP_SIZE)
    }

    fn on_context(ctx: GpuContext, workgroup_size: u32) -> Result<Self> {
        if workgroup_size == 0 || workgroup_size > ctx.limits.max_compute_invocations_per_workgroup
        {
            return Err(Error::invalid(
                "workgroup size",
                format!(
                    "{workgroup_size} is outside 1..={}",
                    ctx.limits.max_compute_invocations_per_workgroup
                ),
            ));
        }
        let device = &ctx.device;
        // Group 0: run parameters, particles, training points, output (score stage only).
        let main_layout = buffer_layout(
            device,
            "main",
            &[Uniform, ReadWrite, ReadOnly, ReadWrite, ReadWrite],
        );
        // Group 1: this step's parameters, at a dynamic offset.
        let step_layout = buffer_layout(device, "step", &[UniformAtOffset]);
        // Group 2: the chunk of training points this dispatch reduces, at a dynamic offset.
        let chunk_layout = buffer_layout(device, "chunk", &[UniformAtOffset]);
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("sampler"),
            bind_group_layouts: &[Some(&main_layout), Some(&step_layout), Some(&chunk_layout)],
            immediate_size: 0,
        });
        // Group 3: the tapped step's region of the tap buffer, at a dynamic offset.
        let tap_layout = buffer_layout(device, "posterior tap", &[ReadWriteAtOffset]);
        let tapped_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("sampler, tapped"),
            bind_group_layouts: &[
                Some(&main_layout),
                Some(&step_layout),
                Some(&chunk_layout),
                Some(&tap_layout),
            ],
            immediate_size: 0,
        });
        let init_pipeline = ctx.pipeline(&INIT_NOISE_STAGE, Some(&layout), workgroup_size);
        let timestamps = ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| Timestamps::new(&ctx));
        let run_params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("run params"),
            size: std::mem::size_of::<RunParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.check()?;
        let subgroups = ctx.has_subgroups_for_general_kernels()
            && std::env::var(SUBGROUPS_VAR).as_deref() != Ok("0");
        Ok(Self {
            ctx,
            main_layout,
            step_layout,
            chunk_layout,
            tap_layout,
            init_pipeline,
            layout,
            tapped_layout,
            pipelines: Vec::new(),
            subgroups,
            forced_chunk_points: None,
            run_params,
            workgroup_size,
            reduction: Reduction::Auto,
            timestamps,
            last_kernel_seconds: None,
            problem: None,
            batch: None,
            tap_buffers: None,
            patch: None,
        })
    }

    /// The device it runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Use the subgroup variant of the general-D stages (`true`: only where the adapter
    /// has subgroups; returns whether it is used) or the portable one (`false`). Results
    /// are the same; tests compare the two.
    pub fn set_subgroups(&mut self, on: bool) -> bool {
        self.subgroups = on && self.ctx.has_subgroups_for_general_kernels();
        self.subgroups
    }

    /// Whether the general-D stages use subgroup broadcasts.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// Force a reduction strategy (tests, benchmarks); the default is `Auto`.
    pub fn set_reduction(&mut self, reduction: Reduction) {
        self.reduction = reduction;
    }

    /// Force the training points per chunk dispatch (a multiple of 256, so tiles and
    /// results do not change; tests of the chunked paths on any adapter), or `None` for
    /// the adapter's choice: lavapipe's loop limit on software adapters, work on hardware.
    pub fn set_chunk_points(&mut self, points: Option<usize>) {
        assert!(points.is_none_or(|p| p > 0 && p % 256 == 0));
        self.forced_chunk_points = points;
    }

    /// Training points per dispatch for `particles` particles of dimension `dim`.
    /// Software adapters (lavapipe) stop a loop after 65,535 iterations and return wrong
    /// results silently, so there chunks are sized by loop count; on hardware by work.
    pub fn chunk_points_for(&self, dim: usize, particles: usize) -> usize {
        if let Some(points) = self.forced_chunk_points {
            points
        } else if self.ctx.is_software() {
            chunk_points(dim)
        } else {
            hardware_chunk_points(dim, particles)
        }
    }

    /// The pipeline of `stage` specialised for dimension `dim`, made on first use.
    fn pipeline_for(&mut self, stage: &super::shaders::Stage, dim: usize) -> wgpu::ComputePipeline {
        self.pipeline_variant(stage, dim, false)
    }

    /// The pipeline of `stage` for dimension `dim`, with the posterior tap on (its own
    /// module and layout, group 3 added) or off, made on first use.
    fn pipeline_variant(
        &mut self,
        stage: &super::shaders::Stage,
        dim: usize,
        tapped: bool,
    ) -> wgpu::ComputePipeline {
        let source = stage.source_variant(dim, tapped, self.subgroups);
        if let Some((_, _, pipeline)) = self
            .pipelines
            .iter()
            .find(|(entry, s, _)| *entry == stage.entry_point && *s == source)
        {
            return pipeline.clone();
        }
        // The general-D stages have a fixed workgroup (GENERAL_WG invocations per tile of
        // GENERAL_PARTICLES) and no WORKGROUP_SIZE to override: their results do not
        // depend on `workgroup_size`.
        let layout = if tapped {
            &self.tapped_layout
        } else {
            &self.layout
        };
        let pipeline =
            self.ctx
                .pipeline_from_source(stage, &source, Some(layout), self.workgroup_size);
        self.pipelines
            .push((stage.entry_point, source, pipeline.clone()));
        pipeline
    }

    /// The step pipeline of `sampler` for dimension `dim` (`tiled`: training points
    /// staged through shared memory; ignored for D > 4).
    fn step_pipeline(
        &mut self,
        sampler: SamplerKind,
        dim: usize,
        tiled: bool,
        tapped: bool,
    ) -> wgpu::ComputePipeline {
        let stage = match (sampler, dim > MAX_DIM, tiled) {
            // DDIM runs the em kernels with its own coefficients and no noise.
            (SamplerKind::Em | SamplerKind::Ddim, true, _) => &EM_STEP_GENERAL_STAGE,
            (SamplerKind::Heun, true, _) => &HEUN_STEP_GENERAL_STAGE,
            (SamplerKind::Em | SamplerKind::Ddim, false, true) => &EM_STEP_TILED_STAGE,
            (SamplerKind::Em | SamplerKind::Ddim, false, false) => &EM_STEP_STAGE,
            (SamplerKind::Heun, false, true) => &HEUN_STEP_TILED_STAGE,
            (SamplerKind::Heun, false, false) => &HEUN_STEP_STAGE,
        };
        self.pipeline_variant(stage, dim, tapped)
    }

    /// Whether a training set of `n_train` points runs on the tiled kernels.
    pub fn uses_tiled(&self, n_train: usize) -> bool {
        match self.reduction {
            Reduction::Auto => n_train >= TILED_MIN_TRAINING_POINTS,
            Reduction::Simple => false,
            Reduction::Tiled => true,
        }
    }

    /// GPU time of the last batch's steps, from timestamp queries, when supported.
    pub fn last_kernel_seconds(&self) -> Option<f64> {
        self.last_kernel_seconds
    }

    /// Upload training points (each padded to whole vec4: one for D <= 4, D/4 rounded up
    /// otherwise) and all steps' parameters, unless the same problem is already on the
    /// device.
    fn prepare_problem(&mut self, dataset: &Dataset, steps: Vec<u8>, chunk_points: usize) {
        let dim = dataset.dim;
        let training = &dataset.points;
        if let Some(p) = &mut self.problem {
            if p.dim == dim && p.steps_key == steps && p.training_id == dataset.identity() {
                if p.chunk_points != chunk_points {
                    let (chunks, n_chunks) = Self::chunk_buffer(
                        &self.ctx,
                        training.len() / dim,
                        chunk_points,
                        p.uniform_stride,
                    );
                    (p.chunks, p.n_chunks, p.chunk_points) = (chunks, n_chunks, chunk_points);
                }
                return;
            }
        }
        let points = training;
        let padded = crate::engine::layout::pad_general(points, dim);
        let device = &self.ctx.device;
        let training = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("training points"),
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let size = std::mem::size_of::<StepParams>() as u64;
        let step_stride = size.div_ceil(align) * align;
        let chunk_size = std::mem::size_of::<ChunkParams>() as u64;
        let uniform_stride = chunk_size.div_ceil(align) * align;
        let (chunks_buffer, n_chunks) =
            Self::chunk_buffer(&self.ctx, points.len() / dim, chunk_points, uniform_stride);
        let mut bytes = vec![0u8; step_stride as usize * (steps.len() / size as usize).max(1)];
        for (k, s) in steps.chunks(size as usize).enumerate() {
            let at = k * step_stride as usize;
            bytes[at..at + size as usize].copy_from_slice(s);
        }
        let steps_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("step params"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        self.problem = Some(ProblemBuffers {
            dim,
            training_id: dataset.identity(),
            steps_key: steps,
            training,
            steps: steps_buffer,
            step_stride,
            chunks: chunks_buffer,
            chunk_points,
            n_chunks,
            uniform_stride,
        });
    }

    /// The `ChunkParams` of `n_train` points in chunks of `chunk_points`, one per
    /// `uniform_stride` bytes, and how many there are.
    fn chunk_buffer(
        ctx: &GpuContext,
        n_train: usize,
        chunk_points: usize,
        uniform_stride: u64,
    ) -> (wgpu::Buffer, usize) {
        let chunks = training_chunks_of(n_train, chunk_points);
        let chunk_size = std::mem::size_of::<ChunkParams>();
        let mut bytes = vec![0u8; (uniform_stride as usize) * chunks.len()];
        for (c, chunk) in chunks.iter().enumerate() {
            let at = c * uniform_stride as usize;
            bytes[at..at + chunk_size].copy_from_slice(bytemuck::bytes_of(chunk));
        }
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("chunk params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        (buffer, chunks.len())
    }

    /// Make sure the particle and scratch buffers hold at least `bytes`, and the softmax
    /// state buffer enough for them when the training set needs several chunks.
    fn prepare_batch(&mut self, bytes: u64, dim: usize) {
        let chunked = self.problem.as_ref().is_some_and(|p| p.n_chunks > 1);
        let state_bytes = if chunked {
            bytes / (4 * dim as u64) * state_bytes_per_particle(dim)
        } else {
            32
        };
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.capacity_bytes >= bytes && b.softmax_state.size() >= state_bytes)
        {
            return;
        }
        let device = &self.ctx.device;
        let make = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        self.batch = Some(BatchBuffers {
            capacity_bytes: bytes,
            particles: make("particles", U::STORAGE | U::COPY_SRC | U::COPY_DST),
            scratch: make("scratch", U::STORAGE | U::COPY_SRC),
            final_staging: make("final readback", U::MAP_READ | U::COPY_DST),
            initial_staging: make("initial readback", U::MAP_READ | U::COPY_DST),
            resident: None,
            softmax_state: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("softmax state"),
                size: state_bytes,
                usage: U::STORAGE,
                mapped_at_creation: false,
            }),
        });
    }

    /// Workgroup counts (x, y) of the general-D stages: one workgroup per tile of
    /// `GENERAL_PARTICLES` particles, rows of at most the adapter's limit (the shaders
    /// return early, uniformly, from the workgroups past the batch in the last row).
    pub fn general_grid(&self, n: usize) -> (u32, u32) {
        let groups = n.div_ceil(GENERAL_PARTICLES).max(1);
        let max_x = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let rows = groups.div_ceil(max_x);
        // Balanced rows: as few idle workgroups in the last row as the division allows.
        let x = groups.div_ceil(rows);
        (x as u32, rows as u32)
    }

    /// Workgroup counts (x, y) covering `n` invocations, and threads per row.
    fn dispatch_grid(&self, n: usize) -> (u32, u32, u32) {
        let (x, y) = self.balanced_grid(n.div_ceil(self.workgroup_size as usize));
        (x, y, x * self.workgroup_size)
    }

    /// Workgroup counts (x, y) of the D <= 4 step and score stages: each invocation
    /// reduces `PARTICLES_PER_INVOCATION` particles (common/reduce_chunk.wgsl), and the
    /// shaders find their particles from the grid's shape (`num_workgroups`).
    fn reduction_grid(&self, n: usize) -> (u32, u32) {
        let per_group = self.workgroup_size as usize * PARTICLES_PER_INVOCATION;
        self.balanced_grid(n.div_ceil(per_group))
    }

    /// At least one workgroup, in rows of at most the adapter's limit.
    fn balanced_grid(&self, groups: usize) -> (u32, u32) {
        let groups = groups.max(1);
        let max_x = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        // Balanced rows (2^22 particles: 2 x 32,768, not 65,535 + 1 live workgroup).
        let y = groups.div_ceil(max_x);
        let x = groups.div_ceil(y);
        (x as u32, y as u32)
    }

    /// Make sure the tap buffer and its readback hold at least `bytes`.
    fn prepare_tap(&mut self, bytes: u64) {
        if self
            .tap_buffers
            .as_ref()
            .is_some_and(|t| t.output.size() >= bytes)
        {
            return;
        }
        let make = |label, usage| {
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        self.tap_buffers = Some(TapBuffers {
            output: make("posterior tap", U::STORAGE | U::COPY_SRC),
            staging: make("posterior tap readback", U::MAP_READ | U::COPY_DST),
        });
    }

    /// A bind group of one window of `size` bytes into `buffer`, placed by a dynamic
    /// offset at each dispatch (the per-step records, the per-chunk records, a tapped
    /// step's region of the tap buffer).
    fn window_bind_group(
        &self,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        buffer: &wgpu::Buffer,
        size: u64,
    ) -> wgpu::BindGroup {
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: 0,
                        size: Some(std::num::NonZeroU64::new(size).expect("a non-empty window")),
                    }),
                }],
            })
    }

    /// Group 3 of the tapped stages: a region of `region_bytes` of the tap buffer.
    fn tap_bind_group(&self, region_bytes: u64) -> wgpu::BindGroup {
        let t = self.tap_buffers.as_ref().expect("tap buffers");
        self.window_bind_group("posterior tap", &self.tap_layout, &t.output, region_bytes)
    }

    fn main_bind_group(&self) -> wgpu::BindGroup {
        let p = self.problem.as_ref().expect("problem uploaded");
        let b = self.batch.as_ref().expect("batch buffers");
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("main"),
                layout: &self.main_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: self.run_params.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: b.particles.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: p.training.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: b.scratch.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: b.softmax_state.as_entire_binding(),
                    },
                ],
            })
    }

    fn step_bind_group(&self) -> wgpu::BindGroup {
        let p = self.problem.as_ref().expect("problem uploaded");
        let size = std::mem::size_of::<StepParams>() as u64;
        self.window_bind_group("step", &self.step_layout, &p.steps, size)
    }

    fn chunk_bind_group(&self) -> wgpu::BindGroup {
        let p = self.problem.as_ref().expect("problem uploaded");
        let size = std::mem::size_of::<ChunkParams>() as u64;
        self.window_bind_group("chunk", &self.chunk_layout, &p.chunks, size)
    }

    /// Chunk offsets into the chunk-params buffer, in dispatch order.
    fn chunk_offsets(&self) -> Vec<u32> {
        let p = self.problem.as_ref().expect("problem uploaded");
        (0..p.n_chunks)
            .map(|c| (c as u64 * p.uniform_stride) as u32)
            .collect()
    }

    /// Refuse a dimension outside 1..=MAX_DIMENSION, or a training set that does not fit
    /// one storage buffer binding, with the numbers.
    fn check_problem(&self, dim: usize, n_train: usize) -> Result<()> {
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(Error::invalid(
                "dimension",
                format!(
                    "the GPU kernels support 1..={MAX_DIMENSION} dimensions, the dataset has {dim}"
                ),
            ));
        }
        check_training_fits(n_train, dim, self.ctx.max_storage_bytes())
    }
}

/// Bytes of online-softmax state a particle carries between chunk dispatches: two vec4
/// on the vec4 kernels, (D/4 rounded up + 1) vec4 on the general-D ones.
pub fn state_bytes_per_particle(dim: usize) -> u64 {
    if dim <= MAX_DIM {
        32
    } else {
        16 * (dim.div_ceil(4) as u64 + 1)
    }
}

/// Refuse a training set whose padded points (16 bytes per 4 coordinates, rounded up)
/// do not fit one storage buffer binding of `max_binding` bytes, with the numbers.
pub fn check_training_fits(n_train: usize, dim: usize, max_binding: u64) -> Result<()> {
    let needed = n_train as u64 * 16 * dim.div_ceil(4) as u64;
    if needed > max_binding {
        return Err(Error::invalid(
            "training set",
            format!(
                "{n_train} training points of dimension {dim} need {needed} bytes in one GPU \
                 buffer ({} bytes a point, padded to a multiple of 4 coordinates), but this \
                 adapter's largest storage buffer binding is {max_binding} bytes; use fewer \
                 training points or --backend cpu",
                16 * dim.div_ceil(4)
            ),
        ));
    }
    Ok(())
}

impl Engine for GpuEngine {
    fn backend(&self) -> Backend {
        Backend::Gpu
    }

    fn device_name(&self) -> String {
        self.ctx.adapter_name()
    }

    fn kernel_seconds(&self) -> Option<f64> {
        self.last_kernel_seconds
    }

    fn device_outputs(&self) -> Option<&dyn DeviceOutputs> {
        Some(self)
    }

    fn max_batch_particles(&self, dim: usize) -> usize {
        // Each of the particle, scratch and softmax-state buffers must fit one storage
        // binding: 4 D bytes a particle for the first two, state_bytes_per_particle(D)
        // (32 for D <= 4, 16 (D/4 + 1) beyond) for the state of chunked problems.
        let per_particle = ((dim.max(1) * 4) as u64).max(state_bytes_per_particle(dim));
        (self.ctx.max_storage_bytes() / per_particle).min(u32::MAX as u64) as usize
    }

    fn posterior_tap(&self, problem: &Problem) -> bool {
        problem.patch.is_none() && problem.dataset.len() <= MAX_TAPPED_TRAINING_POINTS
    }

    /// The tapped records run the tapped pipeline (common/tap_on.wgsl), whose
    /// arithmetic for the positions is that of the untapped one: only the argmax
    /// tracking and the tap's writes are added.
    fn advance_steps(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: Option<&mut PosteriorTap>,
    ) -> Result<()> {
        if problem.patch.is_some() {
            // The patch stages keep their own buffers: whatever the particle buffer
            // held is no longer this engine's last batch.
            self.batch = None;
            self.last_kernel_seconds = None;
            if self.patch.is_none() {
                self.patch = Some(super::patch::GpuPatch::new(&self.ctx)?);
            }
            return self
                .patch
                .as_mut()
                .expect("made above")
                .advance(problem, work);
        }
        self.advance(problem, work, tap)
    }
}

impl DeviceOutputs for GpuEngine {
    fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Deposits straight from the particle buffer, which after `advance_batch` holds the
    /// batch's positions in its first `n * D` floats (until the next batch overwrites it).
    fn deposit_samples(&self, n: usize, target: &mut GpuDensity) -> Result<()> {
        let (Some(batch), Some(problem)) = (&self.batch, &self.problem) else {
            return Err(Error::Gpu("no batch has run on this GPU engine yet".into()));
        };
        if (n * problem.dim * 4) as u64 > batch.capacity_bytes {
            return Err(Error::Gpu(format!(
                "{n} particles are more than the last batch held"
            )));
        }
        target.deposit_buffer(&batch.particles, n, problem.dim)
    }
}
