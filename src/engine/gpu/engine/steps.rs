//! The GPU engine's steps: a batch advanced through its time steps (the dispatches of
//! each step encoded into command buffers of a few steps each, the posterior tap, the
//! readback) and the timestamp queries that time the kernels. A child of `engine.rs`,
//! which holds the engine's device state (pipelines, buffers, bind groups).

use super::*;

impl GpuEngine {
    /// `Engine::advance_batch`, and `advance_batch_tapped` when `tap` is given.
    pub(super) fn advance(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: Option<&mut PosteriorTap>,
    ) -> Result<()> {
        let BatchWork {
            first_particle,
            initial,
            state: samples,
            steps,
            cancel,
            mut on_step,
        } = work;
        let dim = problem.dataset.dim;
        self.check_problem(dim, problem.dataset.len())?;
        let n = samples.len() / dim;
        let bytes = (samples.len() * 4) as u64;
        if n == 0 {
            return Ok(());
        }
        let limit = self.max_batch_particles(dim);
        if n > limit {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{n} particles of dimension {dim} need {bytes} bytes per particle buffer \
                     and {} bytes of softmax state, over this adapter's largest storage \
                     buffer binding of {} bytes; at most {limit} particles fit a batch",
                    n as u64 * state_bytes_per_particle(dim),
                    self.ctx.max_storage_bytes()
                ),
            ));
        }
        // The step records of the whole problem; `first_record[k]` is step k's first.
        let plan = StepRecords::new(
            problem.sampler,
            &problem.schedule,
            problem.steps,
            0..problem.steps.len(),
        );
        let records: Vec<u8> = plan
            .records
            .iter()
            .flat_map(StepRecord::as_bytes)
            .copied()
            .collect();
        let first_record = plan.first;
        let chunk_points = self.chunk_points_for(dim, n);
        self.prepare_problem(problem.dataset, records, chunk_points);
        self.prepare_batch(bytes, dim);
        let tiled = self.uses_tiled(problem.dataset.len());
        let step_pipeline = self.step_pipeline(problem.sampler, dim, tiled, false);
        // The posterior tap of this segment: the tapped steps inside `steps`, each with
        // its region of the tap buffer (region r of `tapped`, at r * region_stride).
        let tap_rows = tap.as_ref().map_or(0, |t| t.rows);
        let tapped: Vec<(usize, usize)> = match &tap {
            Some(t) if t.rows > 0 => {
                t.check();
                assert!(t.rows <= n, "tap rows beyond the batch");
                assert!(
                    t.steps.windows(2).all(|w| w[0] < w[1]),
                    "tap steps not strictly increasing"
                );
                t.steps
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| steps.contains(k))
                    .map(|(j, &k)| (j, k))
                    .collect()
            }
            _ => Vec::new(),
        };
        let region_bytes = (tap_rows * std::mem::size_of::<TapEntry>()) as u64;
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        let region_stride = region_bytes.div_ceil(align) * align;
        let tap_bytes = region_stride * tapped.len() as u64;
        let tapped_pipeline =
            (!tapped.is_empty()).then(|| self.step_pipeline(problem.sampler, dim, tiled, true));
        if tap_bytes > 0 {
            self.prepare_tap(tap_bytes);
        }
        let tap_group = (tap_bytes > 0).then(|| self.tap_bind_group(region_bytes));

        let (gx, gy, threads_per_row) = self.dispatch_grid(n);
        let general = dim > MAX_DIM;
        // The step stages run one workgroup per tile of particles (init_noise does not).
        let (step_gx, step_gy) = if general {
            self.general_grid(n)
        } else {
            self.reduction_grid(n)
        };
        let mut run = RunParams::new(
            problem.seed,
            first_particle,
            n as u32,
            dim as u32,
            problem.dataset.len() as u32,
        );
        run.threads_per_row = threads_per_row;
        run.initial_std = problem.initial_std as f32;
        run.tap_rows = tap_rows as u32;
        self.ctx
            .queue
            .write_buffer(&self.run_params, 0, bytemuck::bytes_of(&run));

        let main = self.main_bind_group();
        let step_group = self.step_bind_group();
        let chunk_group = self.chunk_bind_group();
        let chunk_offsets = self.chunk_offsets();
        let stride = self.problem.as_ref().unwrap().step_stride;
        let batch = self.batch.as_mut().unwrap();
        // The particles are already on the device when this segment continues the last
        // one from the positions it read back (the sampler's usual segments).
        let resident = initial.is_none()
            && batch.resident.as_ref().is_some_and(|(first, positions)| {
                *first == first_particle
                    && positions.len() == samples.len()
                    && positions
                        .iter()
                        .zip(samples.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits())
            });
        batch.resident = None;
        let batch = self.batch.as_ref().unwrap();
        let device = &self.ctx.device;
        let initial_staging = initial.is_some().then_some(&batch.initial_staging);
        let final_staging = &batch.final_staging;

        // Initial noise, and a copy of it for initial.npy, in the first submission; or the
        // saved state of a batch that continues.
        let mut encoder = device.create_command_encoder(&Default::default());
        if let Some(initial_staging) = &initial_staging {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.init_pipeline);
            pass.set_bind_group(0, &main, &[]);
            pass.set_bind_group(1, &step_group, &[0]);
            pass.set_bind_group(2, &chunk_group, &[0]);
            pass.dispatch_workgroups(gx, gy, 1);
            drop(pass);
            encoder.copy_buffer_to_buffer(&batch.particles, 0, initial_staging, 0, bytes);
        } else if !resident {
            self.ctx
                .queue
                .write_buffer(&batch.particles, 0, bytemuck::cast_slice(samples));
        }
        self.ctx.queue.submit([encoder.finish()]);

        // The steps, STEPS_PER_SUBMISSION dispatches per submission, queued back to back.
        let n_steps = steps.end;
        let mut submissions = Vec::new();
        for chunk_start in steps.clone().step_by(STEPS_PER_SUBMISSION) {
            let chunk_end = (chunk_start + STEPS_PER_SUBMISSION).min(n_steps);
            let mut encoder = device.create_command_encoder(&Default::default());
            {
                // Timestamps bracket all steps: start of the first pass, end of the last.
                let (first, last) = (chunk_start == steps.start, chunk_end == n_steps);
                let timestamp_writes =
                    self.timestamps.as_ref().filter(|_| first || last).map(|t| {
                        wgpu::ComputePassTimestampWrites {
                            query_set: &t.queries,
                            beginning_of_pass_write_index: first.then_some(0),
                            end_of_pass_write_index: last.then_some(1),
                        }
                    });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("em steps"),
                    timestamp_writes,
                });
                pass.set_pipeline(&step_pipeline);
                pass.set_bind_group(0, &main, &[]);
                for k in chunk_start..chunk_end {
                    // A tapped step's score evaluation (em: its record; heun: its
                    // predictor, the first record) runs the tapped pipeline.
                    let region = tapped.iter().position(|&(_, t)| t == k);
                    for record in first_record[k]..first_record[k + 1] {
                        let tap_here = region.filter(|_| record == first_record[k]);
                        if let (Some(r), Some(pipeline), Some(group)) =
                            (tap_here, &tapped_pipeline, &tap_group)
                        {
                            pass.set_pipeline(pipeline);
                            pass.set_bind_group(0, &main, &[]);
                            pass.set_bind_group(3, group, &[(r as u64 * region_stride) as u32]);
                        }
                        pass.set_bind_group(1, &step_group, &[(record as u64 * stride) as u32]);
                        for &offset in &chunk_offsets {
                            pass.set_bind_group(2, &chunk_group, &[offset]);
                            pass.dispatch_workgroups(step_gx, step_gy, 1);
                        }
                        if tap_here.is_some() {
                            pass.set_pipeline(&step_pipeline);
                            pass.set_bind_group(0, &main, &[]);
                        }
                    }
                }
            }
            if chunk_end == n_steps {
                encoder.copy_buffer_to_buffer(&batch.particles, 0, final_staging, 0, bytes);
                if let Some(t) = self.tap_buffers.as_ref().filter(|_| tap_bytes > 0) {
                    encoder.copy_buffer_to_buffer(&t.output, 0, &t.staging, 0, tap_bytes);
                }
                if let Some(t) = &self.timestamps {
                    t.resolve(&mut encoder);
                }
            }
            submissions.push((chunk_end, self.ctx.queue.submit([encoder.finish()])));
        }
        if steps.is_empty() {
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&batch.particles, 0, final_staging, 0, bytes);
            self.ctx.queue.submit([encoder.finish()]);
        }
        // Ctrl-C: stop between submissions (those already queued finish unread).
        self.ctx
            .await_steps(submissions, n_steps, cancel, &mut |done| {
                if let Some(on_step) = on_step.as_mut() {
                    on_step(done)
                }
            })?;
        if let (Some(initial), Some(staging)) = (initial, initial_staging) {
            initial.copy_from_slice(bytemuck::cast_slice(&map_and_copy(
                &self.ctx, staging, bytes,
            )?));
        }
        let positions: Vec<f32> =
            bytemuck::cast_slice(&map_and_copy(&self.ctx, final_staging, bytes)?).to_vec();
        samples.copy_from_slice(&positions);
        self.batch.as_mut().unwrap().resident = Some((first_particle, positions));
        if let (Some(tap), Some(buffers)) = (tap, self.tap_buffers.as_ref()) {
            if tap_bytes > 0 {
                let bytes = map_and_copy(&self.ctx, &buffers.staging, tap_bytes)?;
                let records = tap.steps.len();
                for (r, &(j, _)) in tapped.iter().enumerate() {
                    let at = r * region_stride as usize;
                    let region: &[TapEntry] =
                        bytemuck::cast_slice(&bytes[at..at + region_bytes as usize]);
                    for (row, entry) in region.iter().enumerate() {
                        tap.max_weight[row * records + j] = entry.max_weight;
                        tap.argmax[row * records + j] = entry.argmax;
                    }
                }
            }
        }
        self.last_kernel_seconds = match (&self.timestamps, steps.len()) {
            (Some(t), 1..) => Some(t.read_seconds(&self.ctx)?),
            _ => None,
        };
        Ok(())
    }
}

/// A pair of timestamp queries around a batch's steps, and the buffers to read them.
pub(super) struct Timestamps {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f32,
}

impl Timestamps {
    pub(super) fn new(ctx: &GpuContext) -> Self {
        let device = &ctx.device;
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("step timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolved: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: ctx.queue.get_timestamp_period(),
        }
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.readback, 0, 16);
    }

    fn read_seconds(&self, ctx: &GpuContext) -> Result<f64> {
        let bytes = map_and_copy(ctx, &self.readback, 16)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        Ok(ticks[1].wrapping_sub(ticks[0]) as f64 * self.period_ns as f64 * 1e-9)
    }
}
