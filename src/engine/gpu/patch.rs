//! Host side of the patch-score stages (`--score local:k | els:k | bbels:k` on the GPU):
//! per score evaluation, `shaders/patch_denoise.wgsl` writes the denoised image m of
//! every particle (each pixel's online softmax over its dictionary of training patches),
//! then `patch_em_step.wgsl` or `patch_heun_step.wgsl` updates the particles from x and m
//! with the step's coefficients, as the cpu engine's `engine::cpu::patch` does.
//!
//! The dictionaries of every patch size of a run are uploaded once per training set: all
//! groups' patches back to back, and per pixel the range of its group. Where they do not
//! fit one storage buffer (the adapter's binding limit, or `MEMODIFF_GPU_DICTIONARY_BUFFER`
//! KiB), they are split by images into slices of one buffer each; a score evaluation
//! runs the denoise chunks of every slice in turn, the online softmax carried over them.
//! Each patch size has its own denoise pipeline (the size and the channels are constants
//! of the shader, so its loops over a patch have fixed bounds).

use super::bindings::buffer_layout;
use super::bindings::BufferBinding::{ReadOnly, ReadWrite, Uniform, UniformAtOffset};
use super::context::{map_and_copy, GpuContext};
use super::shaders::{
    INIT_NOISE_STAGE, PATCH_DENOISE_STAGE, PATCH_EM_STEP_STAGE, PATCH_HEUN_STEP_STAGE,
};
use crate::engine::records::{ChunkParams, RunParams, StepRecord, StepRecords};
use crate::engine::{BatchWork, Problem};
use crate::error::{Error, Result};
use crate::model::patch_score::{Locality, PatchGeometry};
use wgpu::util::DeviceExt;

/// The environment variable that caps one dictionary buffer, in KiB (default: the
/// adapter's storage-binding limit).
pub const DICTIONARY_BUFFER_VAR: &str = "MEMODIFF_GPU_DICTIONARY_BUFFER";

/// The cap of one dictionary buffer set by `MEMODIFF_GPU_DICTIONARY_BUFFER`, in bytes,
/// if set (0 is refused: no buffer could hold anything).
fn dictionary_buffer_cap() -> Result<Option<u64>> {
    const WHAT: &str = "a positive whole number of KiB";
    match crate::engine::memory_from_env(DICTIONARY_BUFFER_VAR, 1 << 10, WHAT)? {
        Some(0) => Err(Error::invalid(
            DICTIONARY_BUFFER_VAR,
            format!("\"0\" is not {WHAT}"),
        )),
        cap => Ok(cap),
    }
}

/// Most channels a pixel may have: the centre's channels are accumulated as one vec4.
pub const MAX_PATCH_CHANNELS: usize = 4;

/// Most values a patch may hold (`k² C`): each invocation keeps its particle's patch in
/// registers, and a tile of shared memory holds at least 16 patches.
pub const MAX_PATCH_VALUES: usize = 256;

/// Values of training patches a workgroup stages in shared memory at a time
/// (`TILE_VALUES` in patch_denoise.wgsl): 16 KiB, the least WebGPU guarantees.
pub const TILE_VALUES: usize = 4096;
const _: () = assert!(TILE_VALUES >= 16 * MAX_PATCH_VALUES);

/// Invocations (particles) per workgroup of the denoise stage (`PATCH_WG`), and per
/// workgroup of the update stages.
pub const WORKGROUP: usize = 64;

/// Patch-values × patches one denoise dispatch may cover per invocation on a software
/// adapter: lavapipe stops a loop after 65,535 iterations, so its chunks are sized by
/// loop count (half of it, counting the inner loops as not unrolled).
const SOFTWARE_LOOP_BUDGET: usize = 32_768;

/// Particle × patch-value products one denoise dispatch may cover on a hardware adapter
/// (as `records::HARDWARE_DISPATCH_WORK` for the empirical score): milliseconds, never
/// seconds.
const HARDWARE_DISPATCH_WORK: u64 = 1 << 32;

/// The image geometry the denoise stage reads. Keep in sync with `PatchParams` in
/// `shaders/patch/params.wgsl` (public for tests/shaders.rs, which checks the layouts).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PatchParams {
    /// Image height H.
    pub height: u32,
    /// Image width W.
    pub width: u32,
    /// 1: the noisy image is read circularly (els), 0: zero outside.
    pub circular: u32,
    /// Workgroups per pixel: blocks of 64 particles.
    pub particle_blocks: u32,
}

/// The score's scale and temperature at one record. Keep in sync with `PatchScoreParams`
/// in `shaders/patch/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PatchScoreParams {
    /// s of the record.
    pub mean_scale: f32,
    /// 1 / (2 σ²) of the record.
    pub inv_two_sigma2: f32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// Why the GPU's patch kernels cannot run `geometry`, if they cannot.
pub fn unsupported(geometry: &PatchGeometry) -> Option<String> {
    let (channels, values) = (geometry.shape.channels, geometry.patch_len());
    let label = geometry.score.label();
    if channels > MAX_PATCH_CHANNELS {
        Some(format!(
            "--score {label} on the GPU takes images of at most {MAX_PATCH_CHANNELS} channels, \
             these have {channels}; use --backend cpu"
        ))
    } else if values > MAX_PATCH_VALUES {
        Some(format!(
            "--score {label} on the GPU takes patches of at most {MAX_PATCH_VALUES} values \
             (k² × channels), these have {values}; use a smaller k or --backend cpu"
        ))
    } else {
        None
    }
}

/// One patch size's dictionaries on the device, and its denoise pipeline.
struct Dictionaries {
    geometry: PatchGeometry,
    /// [`Dataset::identity`](crate::model::dataset::Dataset::identity) of the images.
    dataset: u64,
    /// The dictionaries of consecutive runs of images, one buffer each.
    slices: Vec<DictionarySlice>,
    params: wgpu::Buffer,
    denoise: wgpu::ComputePipeline,
}

/// The dictionaries of a run of images in one buffer.
#[derive(Debug)]
struct DictionarySlice {
    /// Every group's patches of these images, back to back.
    patches: wgpu::Buffer,
    /// Per pixel: (first patch of its group, its group's patches).
    pixel_dictionaries: wgpu::Buffer,
    /// Patches of the largest group: how far the chunks of a record reach.
    largest: usize,
}

/// The GPU's patch-score sampler on one device.
pub struct GpuPatch {
    ctx: GpuContext,
    main_layout: wgpu::BindGroupLayout,
    window_layout: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
    init: wgpu::ComputePipeline,
    em: wgpu::ComputePipeline,
    heun: wgpu::ComputePipeline,
    dictionaries: Vec<Dictionaries>,
}

/// The device buffers of one batch.
struct BatchBuffers {
    particles: wgpu::Buffer,
    denoised: wgpu::Buffer,
    partial: wgpu::Buffer,
    softmax_state: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl GpuPatch {
    /// The pipelines of the update stages on `ctx`'s device (the denoise pipelines are made
    /// per patch size, on first use).
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let device = &ctx.device;
        // Group 0: run, particles, denoised, partial, dictionary, pixel dictionaries,
        // softmax state, geometry (patch/params.wgsl and patch_denoise.wgsl).
        let main_layout = buffer_layout(
            device,
            "patch",
            &[
                Uniform, ReadWrite, ReadWrite, ReadWrite, ReadOnly, ReadOnly, ReadWrite, Uniform,
            ],
        );
        // Groups 1 and 2: one record of many (the step or score parameters; the chunk).
        let window_layout = buffer_layout(device, "patch record", &[UniformAtOffset]);
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("patch"),
            bind_group_layouts: &[
                Some(&main_layout),
                Some(&window_layout),
                Some(&window_layout),
            ],
            immediate_size: 0,
        });
        let init = ctx.pipeline(&INIT_NOISE_STAGE, Some(&layout), WORKGROUP as u32);
        let em = ctx.pipeline(&PATCH_EM_STEP_STAGE, Some(&layout), WORKGROUP as u32);
        let heun = ctx.pipeline(&PATCH_HEUN_STEP_STAGE, Some(&layout), WORKGROUP as u32);
        ctx.check()?;
        Ok(Self {
            ctx: ctx.clone(),
            main_layout,
            window_layout,
            layout,
            init,
            em,
            heun,
            dictionaries: Vec::new(),
        })
    }

    /// The index of `geometry`'s dictionaries of `problem`'s images, uploaded on first
    /// use; refused (before any upload) where the kernels or the device cannot hold them.
    fn dictionaries_for(&mut self, geometry: PatchGeometry, problem: &Problem) -> Result<usize> {
        let dataset = problem.dataset;
        if let Some(at) = self
            .dictionaries
            .iter()
            .position(|d| d.geometry == geometry && d.dataset == dataset.identity())
        {
            return Ok(at);
        }
        if let Some(why) = unsupported(&geometry) {
            return Err(Error::invalid("backend", why));
        }
        // Whole images per buffer: as many as the binding limit (or the cap) holds.
        let limit = match dictionary_buffer_cap()? {
            Some(cap) => cap.min(self.ctx.max_storage_bytes()),
            None => self.ctx.max_storage_bytes(),
        };
        let image_bytes = geometry.dictionary_values(1) * 4;
        if image_bytes > limit {
            return Err(Error::invalid(
                "score",
                format!(
                    "--score {} needs {image_bytes} bytes of training patches per image in one GPU \
                     buffer, over its {limit} bytes; use a smaller patch or --backend cpu",
                    geometry.score.label(),
                ),
            ));
        }
        let per_slice = (limit / image_bytes) as usize;
        let device = &self.ctx.device;
        let storage = |label, contents: &[u8]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let len = geometry.patch_len();
        let groups = geometry.groups();
        let mut slices = Vec::new();
        for first_image in (0..dataset.len()).step_by(per_slice) {
            let images = &dataset.points[first_image * dataset.dim
                ..(first_image + per_slice).min(dataset.len()) * dataset.dim];
            let mut patches: Vec<f32> = Vec::new();
            let mut pixel_dictionaries = vec![[0u32; 2]; geometry.pixels()];
            let mut largest = 0;
            for group in &groups {
                let first = patches.len() / len;
                patches.extend(
                    geometry
                        .dictionary(images, group)
                        .into_iter()
                        .map(|v| v as f32),
                );
                let count = patches.len() / len - first;
                largest = largest.max(count);
                for &p in &group.pixels {
                    pixel_dictionaries[p] = [first as u32, count as u32];
                }
            }
            slices.push(DictionarySlice {
                patches: storage("patch dictionaries", bytemuck::cast_slice(&patches)),
                pixel_dictionaries: storage(
                    "pixel dictionaries",
                    bytemuck::cast_slice(&pixel_dictionaries),
                ),
                largest,
            });
        }
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("patch geometry"),
            size: std::mem::size_of::<PatchParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let source =
            PATCH_DENOISE_STAGE.source_for_patch(geometry.score.k, geometry.shape.channels);
        let denoise = self.ctx.pipeline_from_source(
            &PATCH_DENOISE_STAGE,
            &source,
            Some(&self.layout),
            WORKGROUP as u32,
        );
        self.ctx.check()?;
        self.dictionaries.push(Dictionaries {
            geometry,
            dataset: dataset.identity(),
            slices,
            params,
            denoise,
        });
        Ok(self.dictionaries.len() - 1)
    }

    /// Patches per denoise dispatch for `particles` particles of `geometry`.
    fn chunk_patches(&self, geometry: &PatchGeometry, particles: usize) -> usize {
        let len = geometry.patch_len();
        if self.ctx.is_software() {
            (SOFTWARE_LOOP_BUDGET / (len + 4)).max(1)
        } else {
            let per_patch = (particles.max(1) * geometry.pixels() * len) as u64;
            (HARDWARE_DISPATCH_WORK / per_patch).max(1) as usize
        }
    }

    /// Particles of one pass: the particle, denoised and partial buffers (4 D bytes a
    /// particle each) and the softmax state (32 bytes per pixel) fit one binding each.
    fn pass_particles(&self, dim: usize, pixels: usize) -> usize {
        let per_particle = (dim * 4).max(pixels * 32) as u64;
        (self.ctx.max_storage_bytes() / per_particle).max(1) as usize
    }

    /// `Engine::advance_steps` for a problem with a patch score: the batch in passes of
    /// as many particles as the device's buffers hold (particles are independent).
    pub fn advance(&mut self, problem: &Problem, work: BatchWork) -> Result<()> {
        let plan = problem.patch.expect("a patch problem");
        let dim = problem.dataset.dim;
        // Every patch size's dictionaries, before anything runs.
        let which: Vec<usize> = plan
            .steps
            .iter()
            .map(|g| self.dictionaries_for(*g, problem))
            .collect::<Result<_>>()?;
        let pixels = plan.steps.first().map_or(1, |g| g.pixels());
        let pass = self.pass_particles(dim, pixels);
        let BatchWork {
            first_particle,
            mut initial,
            state,
            steps,
            cancel,
            mut on_step,
        } = work;
        let n = state.len() / dim;
        let passes = n.div_ceil(pass);
        for (k, start) in (0..n).step_by(pass).enumerate() {
            let end = (start + pass).min(n);
            let rows = start * dim..end * dim;
            // Progress is reported by the last pass only.
            let last = k + 1 == passes;
            let mut report = |done: usize| {
                if let Some(f) = on_step.as_mut().filter(|_| last) {
                    f(done)
                }
            };
            self.advance_pass(
                problem,
                &which,
                first_particle + start as u64,
                initial.as_mut().map(|i| &mut i[rows.clone()]),
                &mut state[rows],
                steps.clone(),
                cancel,
                &mut report,
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn advance_pass(
        &mut self,
        problem: &Problem,
        which: &[usize],
        first_particle: u64,
        initial: Option<&mut [f32]>,
        samples: &mut [f32],
        steps: std::ops::Range<usize>,
        cancel: &std::sync::atomic::AtomicBool,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let dim = problem.dataset.dim;
        let n = samples.len() / dim;
        if n == 0 {
            return Ok(());
        }
        let device = &self.ctx.device;
        let bytes = (samples.len() * 4) as u64;
        let pixels = self.dictionaries[which[0]].geometry.pixels();
        let buffers = self.batch_buffers(bytes, (n * pixels * 32) as u64);

        // The records of the whole schedule (a heun corrector needs the next step), their
        // step parameters and score scales, one per uniform stride.
        let plan = StepRecords::new(
            problem.sampler,
            &problem.schedule,
            problem.steps,
            0..problem.steps.len(),
        );
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as usize;
        let stride = |size: usize| size.div_ceil(align) * align;
        let record_size = std::mem::size_of::<crate::engine::records::StepParams>();
        let (record_stride, score_stride) = (
            stride(record_size),
            stride(std::mem::size_of::<PatchScoreParams>()),
        );
        let mut record_bytes = vec![0u8; record_stride * plan.records.len().max(1)];
        let mut score_bytes = vec![0u8; score_stride * plan.records.len().max(1)];
        for (r, record) in plan.records.iter().enumerate() {
            record_bytes[r * record_stride..][..record_size].copy_from_slice(record.as_bytes());
            let (mean_scale, inv_two_sigma2) = record.score_scale();
            let score = PatchScoreParams {
                mean_scale,
                inv_two_sigma2,
                _pad: [0; 2],
            };
            score_bytes[r * score_stride..][..std::mem::size_of::<PatchScoreParams>()]
                .copy_from_slice(bytemuck::bytes_of(&score));
        }
        let uniform = |label, contents: &[u8]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let records = uniform("patch step records", &record_bytes);
        let scores = uniform("patch score records", &score_bytes);

        // The chunks of each patch size's dictionaries, one per uniform stride.
        let chunk_size = std::mem::size_of::<ChunkParams>();
        let chunk_stride = stride(chunk_size);
        let mut chunk_bytes = Vec::new();
        // Per dictionary index: its chunks, slice by slice, as (slice, record offset); the
        // softmax starts at the first chunk of the first slice and ends at the last.
        let mut chunk_offsets: Vec<Vec<(usize, u32)>> = vec![Vec::new(); self.dictionaries.len()];
        for &d in which {
            if !chunk_offsets[d].is_empty() {
                continue;
            }
            let dictionaries = &self.dictionaries[d];
            let per_chunk = self.chunk_patches(&dictionaries.geometry, n);
            let slices = dictionaries.slices.len();
            for (k, slice) in dictionaries.slices.iter().enumerate() {
                let count = slice.largest.div_ceil(per_chunk).max(1);
                for c in 0..count {
                    let chunk = ChunkParams {
                        start: (c * per_chunk) as u32,
                        count: per_chunk as u32,
                        first: (k == 0 && c == 0) as u32,
                        last: (k + 1 == slices && c + 1 == count) as u32,
                    };
                    chunk_offsets[d].push((k, chunk_bytes.len() as u32));
                    chunk_bytes.extend_from_slice(bytemuck::bytes_of(&chunk));
                    chunk_bytes.resize(chunk_bytes.len() + chunk_stride - chunk_size, 0);
                }
            }
        }
        let chunks = uniform("patch chunks", &chunk_bytes);
        let window = |label, buffer: &wgpu::Buffer, size: usize| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &self.window_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: 0,
                        size: std::num::NonZeroU64::new(size as u64),
                    }),
                }],
            })
        };
        let record_group = window("patch step record", &records, record_size);
        let score_group = window(
            "patch score record",
            &scores,
            std::mem::size_of::<PatchScoreParams>(),
        );
        let chunk_group = window("patch chunk", &chunks, chunk_size);

        // The run and, per patch size, its geometry and its group 0.
        let max_x = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let grid = |groups: usize| {
            let groups = groups.max(1);
            let rows = groups.div_ceil(max_x);
            let x = groups.div_ceil(rows);
            (x as u32, rows as u32)
        };
        let (init_x, init_y) = grid(n.div_ceil(WORKGROUP));
        let mut run = RunParams::new(
            problem.seed,
            first_particle,
            n as u32,
            dim as u32,
            problem.dataset.len() as u32,
        );
        run.threads_per_row = init_x * WORKGROUP as u32;
        run.initial_std = problem.initial_std as f32;
        let run_buffer = uniform("patch run", bytemuck::bytes_of(&run));
        let particle_blocks = n.div_ceil(WORKGROUP);
        // Per dictionary index, one main group per slice.
        let mut main_groups: Vec<Vec<wgpu::BindGroup>> = vec![Vec::new(); self.dictionaries.len()];
        for &d in which {
            if !main_groups[d].is_empty() {
                continue;
            }
            let dictionaries = &self.dictionaries[d];
            let geometry = dictionaries.geometry;
            let params = PatchParams {
                height: geometry.shape.height as u32,
                width: geometry.shape.width as u32,
                circular: (geometry.score.locality == Locality::Els) as u32,
                particle_blocks: particle_blocks as u32,
            };
            self.ctx
                .queue
                .write_buffer(&dictionaries.params, 0, bytemuck::bytes_of(&params));
            for slice in &dictionaries.slices {
                let entries: Vec<wgpu::BindGroupEntry> = [
                    &run_buffer,
                    &buffers.particles,
                    &buffers.denoised,
                    &buffers.partial,
                    &slice.patches,
                    &slice.pixel_dictionaries,
                    &buffers.softmax_state,
                    &dictionaries.params,
                ]
                .into_iter()
                .zip(0u32..)
                .map(|(buffer, binding)| wgpu::BindGroupEntry {
                    binding,
                    resource: buffer.as_entire_binding(),
                })
                .collect();
                main_groups[d].push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("patch main"),
                    layout: &self.main_layout,
                    entries: &entries,
                }));
            }
        }
        let denoise_grid = grid(particle_blocks * pixels);
        let em_grid = grid((n * dim.div_ceil(4)).div_ceil(WORKGROUP));
        let heun_grid = grid((n * dim).div_ceil(WORKGROUP));

        // Initial noise (and its copy for initial.npy), or the batch's saved state.
        let mut encoder = device.create_command_encoder(&Default::default());
        let any_main = &main_groups[which[0]][0];
        if initial.is_some() {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.init);
            pass.set_bind_group(0, any_main, &[]);
            pass.set_bind_group(1, &record_group, &[0]);
            pass.set_bind_group(2, &chunk_group, &[0]);
            pass.dispatch_workgroups(init_x, init_y, 1);
        } else {
            self.ctx
                .queue
                .write_buffer(&buffers.particles, 0, bytemuck::cast_slice(samples));
        }
        self.ctx.queue.submit([encoder.finish()]);
        if let Some(initial) = initial {
            let copied = self.ctx.read_buffer(&buffers.particles, bytes)?;
            initial.copy_from_slice(bytemuck::cast_slice(&copied));
        }

        // The steps, a few per submission; progress and Ctrl-C between submissions.
        let mut submissions = Vec::new();
        for start in steps.clone().step_by(super::engine::STEPS_PER_SUBMISSION) {
            let end = (start + super::engine::STEPS_PER_SUBMISSION).min(steps.end);
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("patch steps"),
                    timestamp_writes: None,
                });
                // The (dictionary, slice) whose main group is bound: set again only when
                // it changes (once per record where the dictionaries fit one buffer).
                let mut bound = None;
                for (k, &d) in which.iter().enumerate().take(end).skip(start) {
                    for r in plan.first[k]..plan.first[k + 1] {
                        pass.set_pipeline(&self.dictionaries[d].denoise);
                        pass.set_bind_group(1, &score_group, &[(r * score_stride) as u32]);
                        for &(slice, offset) in &chunk_offsets[d] {
                            if bound != Some((d, slice)) {
                                pass.set_bind_group(0, &main_groups[d][slice], &[]);
                                bound = Some((d, slice));
                            }
                            pass.set_bind_group(2, &chunk_group, &[offset]);
                            pass.dispatch_workgroups(denoise_grid.0, denoise_grid.1, 1);
                        }
                        let ((x, y), pipeline) = match plan.records[r] {
                            StepRecord::Em(_) => (em_grid, &self.em),
                            StepRecord::Heun(_) => (heun_grid, &self.heun),
                        };
                        pass.set_pipeline(pipeline);
                        pass.set_bind_group(1, &record_group, &[(r * record_stride) as u32]);
                        pass.dispatch_workgroups(x, y, 1);
                    }
                }
            }
            if end == steps.end {
                encoder.copy_buffer_to_buffer(&buffers.particles, 0, &buffers.staging, 0, bytes);
            }
            submissions.push((end, self.ctx.queue.submit([encoder.finish()])));
        }
        if steps.is_empty() {
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&buffers.particles, 0, &buffers.staging, 0, bytes);
            self.ctx.queue.submit([encoder.finish()]);
        }
        self.ctx
            .await_steps(submissions, steps.end, cancel, on_step)?;
        let positions = map_and_copy(&self.ctx, &buffers.staging, bytes)?;
        samples.copy_from_slice(bytemuck::cast_slice(&positions));
        Ok(())
    }

    /// Buffers for a pass of `bytes` of particles and `state_bytes` of softmax state.
    fn batch_buffers(&self, bytes: u64, state_bytes: u64) -> BatchBuffers {
        use wgpu::BufferUsages as U;
        let make = |label, size, usage| {
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        BatchBuffers {
            particles: make(
                "patch particles",
                bytes,
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
            ),
            denoised: make("patch denoised", bytes, U::STORAGE),
            partial: make("patch partial", bytes, U::STORAGE),
            softmax_state: make("patch softmax state", state_bytes, U::STORAGE),
            staging: make("patch readback", bytes, U::MAP_READ | U::COPY_DST),
        }
    }
}
