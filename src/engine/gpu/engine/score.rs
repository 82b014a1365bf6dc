//! The GPU engine's score evaluation: the empirical score at query points with the score
//! stages (`score.wgsl`, `score_general.wgsl`), one dispatch per chunk of training
//! points, for tests and score-field plots. A child of `engine.rs`, which holds the
//! engine's device state (pipelines, buffers, bind groups).

use super::*;

impl GpuEngine {
    /// Evaluate the empirical score at `points` (row-major, dimension `dataset.dim`) at
    /// forward time `tau`, with the GPU score kernel.
    pub fn evaluate_score(
        &mut self,
        dataset: &Dataset,
        schedule: &crate::model::schedule::VpSchedule,
        tau: f64,
        points: &[f32],
    ) -> Result<Vec<f32>> {
        self.evaluate_score_of(dataset, &StepParams::for_score(schedule, tau), points)
    }

    /// Evaluate the score of `step` ([`StepParams::for_point`]: any score kind) at
    /// `points` (row-major, dimension `dataset.dim`), with the GPU score kernel.
    pub fn evaluate_score_of(
        &mut self,
        dataset: &Dataset,
        step: &StepParams,
        points: &[f32],
    ) -> Result<Vec<f32>> {
        let dim = dataset.dim;
        self.check_problem(dim, dataset.len())?;
        let n = points.len() / dim;
        let bytes = (points.len() * 4) as u64;
        if n > self.max_batch_particles(dim) {
            let max = self.ctx.max_storage_bytes();
            return Err(Error::invalid(
                "points",
                format!(
                    "{n} query points of dimension {dim} need {} bytes of coordinates and {} \
                     bytes of softmax state, over this adapter's largest storage buffer \
                     binding of {max} bytes; evaluate them in smaller sets",
                    bytes,
                    n as u64 * state_bytes_per_particle(dim)
                ),
            ));
        }
        let chunk_points = self.chunk_points_for(dim, n);
        self.prepare_problem(dataset, bytemuck::bytes_of(step).to_vec(), chunk_points);
        self.prepare_batch(bytes.max(16), dim);
        let general = dim > MAX_DIM;
        let score_pipeline = self.pipeline_for(
            match (general, self.uses_tiled(dataset.len())) {
                (true, _) => &SCORE_GENERAL_STAGE,
                (false, true) => &SCORE_TILED_STAGE,
                (false, false) => &SCORE_STAGE,
            },
            dim,
        );
        let (gx, gy) = if general {
            self.general_grid(n)
        } else {
            self.reduction_grid(n)
        };
        // The score stages find their particles from the grid (threads_per_row unused).
        let run = RunParams::new(0, 0, n as u32, dim as u32, dataset.len() as u32);
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.run_params, 0, bytemuck::bytes_of(&run));
        let batch = self.batch.as_mut().unwrap();
        batch.resident = None;
        queue.write_buffer(&batch.particles, 0, bytemuck::cast_slice(points));
        let main = self.main_bind_group();
        let step = self.step_bind_group();
        let chunk_group = self.chunk_bind_group();
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&score_pipeline);
            pass.set_bind_group(0, &main, &[]);
            pass.set_bind_group(1, &step, &[0]);
            for offset in self.chunk_offsets() {
                pass.set_bind_group(2, &chunk_group, &[offset]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
        }
        queue.submit([encoder.finish()]);
        let out = self
            .ctx
            .read_buffer(&self.batch.as_ref().unwrap().scratch, bytes)?;
        Ok(bytemuck::cast_slice(&out).to_vec())
    }
}
