//! A run's output folder: streamed `.npy` files, density images, metrics and `run.json`.
//! The files are written into the folder's staging area ([`crate::io::staging`]) and
//! arrive together when the run commits; the checkpoint and a checkpointed run's
//! `.partial` arrays live in the folder itself, where `resume` finds them.

use crate::density::heatmap::DensityGrid;
use crate::error::{Error, Result};
use crate::io::staging::Staging;
use crate::io::NpyStreamWriter;
use crate::metrics::MemorizationCounter;
use crate::run::checkpoint::CheckpointedRun;
use crate::run::driver::BatchSink;
use crate::run::measure::MetricsSink;
use crate::run::report::DensityOn;
use crate::run::spec::RunSpec;
use std::path::PathBuf;

/// Receives batches from the sampler and turns them into the run folder's files.
pub struct RunFolder {
    /// The run folder (`--out`): the checkpoint and the `.partial` arrays.
    out: PathBuf,
    /// Where the outputs are written: the staging area inside `out`.
    dir: PathBuf,
    /// The streamed `.npy` files, unless the run keeps only images and metrics.
    arrays: Option<(NpyStreamWriter, NpyStreamWriter)>,
    sample_grid: Option<DensityGrid>,
    initial_grid: Option<DensityGrid>,
    metrics: MetricsSink,
    shading: crate::image::norm::Shading,
    png16: bool,
    write_raw_grids: bool,
    /// Checkpointed runs: what each checkpoint records besides the folder's state.
    checkpoint: Option<(CheckpointedRun, crate::model::dataset::Dataset)>,
    /// Batches finished at the last checkpoint this process saved.
    saved_batches: Option<usize>,
    /// `--figure` / `--snapshots` (see [`crate::run::figures`]).
    figures: Option<crate::run::figures::RunFigures>,
    /// samples' density grid on the engine's GPU ([`use_gpu_density`](Self::use_gpu_density)):
    /// batches are deposited there by the sampler, and `sample_grid` receives the sums at
    /// each checkpoint and at the end.
    gpu_samples: Option<crate::engine::gpu::raster::GpuDensity>,
}

/// The memorization counts of a run folder (mergeable, [`crate::metrics::MemorizationCounts`]).
pub const METRICS_COUNTS: &str = "metrics_counts.json";

impl RunFolder {
    /// Open the streamed outputs of `spec`'s particles on `training` in `staging`.
    /// Images are drawn only for D = 2.
    pub fn create(
        staging: &Staging,
        training: &crate::model::dataset::Dataset,
        spec: &RunSpec,
    ) -> Result<Self> {
        Self::open(staging, training, spec, None)
    }

    /// [`create`](Self::create) for a run with checkpoints: the streamed arrays keep
    /// stable temp names and [`BatchSink::checkpoint`] saves `OUT/checkpoint/`.
    pub fn create_checkpointed(
        staging: &Staging,
        training: &crate::model::dataset::Dataset,
        run: CheckpointedRun,
    ) -> Result<Self> {
        let spec = run.spec.clone();
        Self::open(staging, training, &spec, Some((run, None)))
    }

    /// Reopen the folder of a checkpointed run from its checkpoint `saved`.
    /// `metrics` is the run's fresh metrics sink (its posterior recording as the run's);
    /// the checkpoint's counts are added to it.
    pub fn resume(
        staging: &Staging,
        saved: &mut crate::run::checkpoint::Loaded,
        metrics: MetricsSink,
    ) -> Result<Self> {
        let training = saved.training.clone();
        let run = saved.meta.run.clone();
        let spec = run.spec.clone();
        let mut folder = Self::open(
            staging,
            &training,
            &spec,
            Some((run, Some(saved.meta.rows_streamed))),
        )?;
        for (mine, theirs, name) in [
            (&mut folder.sample_grid, saved.sample_grid.take(), "samples"),
            (
                &mut folder.initial_grid,
                saved.initial_grid.take(),
                "initial",
            ),
        ] {
            match (mine.as_ref(), theirs) {
                (Some(fresh), Some(grid)) if fresh.raw_meta().shape == grid.raw_meta().shape => {
                    *mine = Some(grid)
                }
                (None, None) => {}
                _ => {
                    return Err(Error::invalid(
                        "checkpoint",
                        format!("its {name} density grid does not match the run"),
                    ))
                }
            }
        }
        folder.metrics = metrics;
        folder.metrics.counter.add_counts(&saved.counts)?;
        Ok(folder)
    }

    /// Open the folder of `spec`'s run on `training`: its streamed arrays (`spec`'s
    /// particle range) and, for D = 2, its density grids.
    fn open(
        staging: &Staging,
        training: &crate::model::dataset::Dataset,
        spec: &RunSpec,
        checkpoint: Option<(CheckpointedRun, Option<u64>)>,
    ) -> Result<Self> {
        let (out, dir) = (staging.out(), staging.dir());
        let dim = training.dim;
        let range = spec.particle_range();
        let particles = range.end - range.start;
        let images = &spec.images;
        let (sample_grid, initial_grid) = if dim == 2 {
            (
                Some(DensityGrid::with_kernel(
                    images.extent,
                    images.width(),
                    images.height(),
                    images.bandwidth,
                    images.kernel,
                )?),
                Some(DensityGrid::with_kernel(
                    images.initial_extent,
                    images.width(),
                    images.height(),
                    images.bandwidth,
                    images.kernel,
                )?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            out: out.to_path_buf(),
            dir: dir.to_path_buf(),
            arrays: if spec.write_arrays() {
                let open = |name: &str| {
                    let path = dir.join(name);
                    let temp = crate::run::checkpoint::partial_path(out, name);
                    match &checkpoint {
                        None => NpyStreamWriter::create(&path, particles, dim),
                        Some((_, None)) => {
                            NpyStreamWriter::create_persistent(&path, &temp, particles, dim)
                        }
                        Some((_, Some(rows))) => {
                            NpyStreamWriter::reopen(&path, &temp, particles, dim, *rows)
                        }
                    }
                };
                Some((open("samples.npy")?, open("initial.npy")?))
            } else {
                None
            },
            sample_grid,
            initial_grid,
            metrics: MetricsSink::plain(training)?,
            shading: images.shading(),
            png16: images.png16,
            // The raw integer sums that `merge` adds up: shards only (15 MB each at the
            // default settings, and nothing reads them in a whole run).
            write_raw_grids: spec.shard.is_some(),
            checkpoint: checkpoint.map(|(run, _)| (run, training.clone())),
            saved_batches: None,
            figures: None,
            gpu_samples: None,
        })
    }

    /// Also draw `figures` (framed figures, snapshot frames and their animation).
    pub fn with_figures(mut self, figures: Option<crate::run::figures::RunFigures>) -> Self {
        self.figures = figures;
        self
    }

    /// Replace the folder's metrics (before any batch): posterior concentration, GPU
    /// nearest neighbours (see [`MetricsSink`]).
    pub fn set_metrics(&mut self, metrics: MetricsSink) {
        self.metrics = metrics;
    }

    /// Find the metrics' nearest neighbours on this GPU device (exact either way).
    pub fn use_gpu_nearest(&mut self, ctx: &crate::engine::gpu::GpuContext) -> Result<()> {
        self.metrics.use_gpu(ctx)
    }

    /// Deposit the samples' density on the engine's GPU (`ctx`, `None` for the CPU
    /// engines) from its particle buffer, where that grid can be served there: its split
    /// path (the Gaussian kernel at bandwidths of about 1.5 pixels and more), and no
    /// host-side change to the samples after the last step (`--t-min` denoising: `t_min >
    /// 0`). Otherwise the CPU accumulates it, and the returned note says why.
    pub fn use_gpu_density(
        &mut self,
        ctx: Option<&crate::engine::gpu::GpuContext>,
        t_min: f64,
    ) -> DensityOn {
        let mut on = DensityOn {
            samples: "cpu",
            initial: "cpu",
            note: None,
            gpu_tiles: None,
        };
        let Some(grid) = &self.sample_grid else {
            // D != 2: no density images at all.
            on.samples = "none";
            on.initial = "none";
            return on;
        };
        let Some(ctx) = ctx else {
            return on;
        };
        if t_min > 0.0 {
            on.note = Some("--t-min denoises the samples on the host after the last step".into());
            return on;
        }
        match crate::engine::gpu::raster::GpuDensity::new(ctx.clone(), grid, None) {
            Ok(density) => {
                on.gpu_tiles = Some(density.tiles());
                self.gpu_samples = Some(density);
                on.samples = "gpu";
            }
            Err(e) => on.note = Some(e.to_string()),
        }
        on
    }

    /// Add what the GPU deposited since the last call to the samples' grid.
    fn flush_gpu(&mut self) -> Result<()> {
        if let (Some(density), Some(grid)) = (&mut self.gpu_samples, &mut self.sample_grid) {
            density.flush(grid)?;
        }
        Ok(())
    }

    /// Finish the `.npy` files and write the PNGs into the staging area (a checkpointed
    /// run's arrays stay at their `.partial` names, which `staging` adopts); returns the
    /// names of the files written and the memorization counts.
    pub fn finish(mut self, staging: &mut Staging) -> Result<(Vec<String>, MemorizationCounter)> {
        self.flush_gpu()?;
        // The arrays' syncs and the two grids' shading and PNG encoding are independent
        // and each mostly single-threaded: run them side by side, then list the files
        // in a fixed order.
        let (dir, shading, png16, raw) =
            (&self.dir, self.shading, self.png16, self.write_raw_grids);
        let figures = self.figures.as_ref();
        let grid_files = |grid: &Option<DensityGrid>, name: &str| -> Result<Vec<String>> {
            let Some(grid) = grid else {
                return Ok(Vec::new());
            };
            // `--figure`: drawn from the PNG's own colours as its rows are shaded.
            let figure = figures.and_then(|f| f.figure_request(dir, name, grid));
            crate::plot::raster::write_named(dir, name, grid, shading, png16, raw, figure)
        };
        let arrays = self.arrays.take();
        let finish_arrays = || -> Result<Vec<(String, Option<PathBuf>)>> {
            let Some((samples, initial)) = arrays else {
                return Ok(Vec::new());
            };
            let (s, i) = rayon::join(|| samples.finish(), || initial.finish());
            Ok(vec![
                ("samples.npy".to_string(), s?),
                ("initial.npy".to_string(), i?),
            ])
        };
        // The initial grid's PNG first: the widest spread of values, the slowest to
        // compress (at the default run); the other thread takes the samples' PNG and the
        // arrays.
        let (initial_files, (sample_files, array_files)) = rayon::join(
            || grid_files(&self.initial_grid, "initial"),
            || rayon::join(|| grid_files(&self.sample_grid, "samples"), finish_arrays),
        );
        let mut written = Vec::new();
        for (name, kept_at) in array_files? {
            // Kept at a `.partial` name (checkpointed): it arrives with the commit.
            if let Some(temp) = kept_at {
                staging.adopt(&temp, &name);
            }
            written.push(name);
        }
        written.extend(sample_files?);
        written.extend(initial_files?);
        if let Some(figures) = self.figures {
            written.extend(figures.finish(&self.dir)?);
        }
        crate::io::write_json(
            &self.dir.join(METRICS_COUNTS),
            &self.metrics.counter.counts(),
        )?;
        written.push(METRICS_COUNTS.into());
        Ok((written, self.metrics.counter))
    }
}

impl BatchSink for RunFolder {
    fn consume(&mut self, _first: u64, initial: &[f32], samples: &[f32]) -> Result<()> {
        let arrays = &mut self.arrays;
        // Before the join below, not in it: handing the batch to the snapshot accumulator
        // may block, which would hold a rayon worker idle.
        if let Some(f) = &mut self.figures {
            f.consume(initial, samples);
        }
        // A grid on the GPU got this batch from the engine's buffer already.
        let on_gpu = self.gpu_samples.is_some();
        let (sample_grid, initial_grid, metrics) = (
            &mut self.sample_grid,
            &mut self.initial_grid,
            &mut self.metrics,
        );
        // Files, the two grids and the metrics are independent: four tasks, paired so
        // that each pair is about half the work (the deposits cost the most; a grid's own
        // bands run in parallel too, but the samples' few crowded bands leave a thread idle).
        let ((files, ()), ((), counted)) = rayon::join(
            || {
                rayon::join(
                    || -> Result<()> {
                        match arrays {
                            Some((samples_out, initial_out)) => {
                                samples_out.write_rows(samples)?;
                                initial_out.write_rows(initial)
                            }
                            None => Ok(()),
                        }
                    },
                    || {
                        if let Some(g) = sample_grid.as_mut().filter(|_| !on_gpu) {
                            g.accumulate(samples);
                        }
                    },
                )
            },
            || {
                rayon::join(
                    || {
                        if let Some(g) = initial_grid {
                            g.accumulate(initial);
                        }
                    },
                    || metrics.count(samples),
                )
            },
        );
        files.and(counted)
    }

    fn consume_on_device(
        &mut self,
        device: &dyn crate::engine::gpu::DeviceOutputs,
        n: usize,
    ) -> Result<()> {
        match &mut self.gpu_samples {
            Some(density) => device.deposit_samples(n, density),
            None => Ok(()),
        }
    }

    fn snapshot_steps(&self) -> Vec<usize> {
        self.figures
            .as_ref()
            .map_or_else(Vec::new, |f| f.snapshot_steps())
    }

    fn snapshot(&mut self, _first: u64, step: usize, positions: &[f32]) -> Result<()> {
        if let Some(f) = &mut self.figures {
            f.snapshot(step, positions);
        }
        Ok(())
    }

    fn checkpoint(&mut self, at: &crate::run::driver::CheckpointAt) -> Result<()> {
        if self.checkpoint.is_none() {
            return Ok(());
        }
        self.flush_gpu()?;
        let Some((run, training)) = &self.checkpoint else {
            return Ok(());
        };
        let mut rows_streamed = 0;
        if let Some((samples, initial)) = &mut self.arrays {
            samples.persist()?;
            initial.persist()?;
            rows_streamed = samples.rows_written();
        }
        crate::run::checkpoint::save(
            &self.out,
            run,
            training,
            at,
            crate::run::checkpoint::FolderState {
                sample_grid: self.sample_grid.as_ref(),
                initial_grid: self.initial_grid.as_ref(),
                counts: self.metrics.counter.counts(),
                rows_streamed,
                unchanged: self.saved_batches == Some(at.batches_done),
            },
        )?;
        self.saved_batches = Some(at.batches_done);
        Ok(())
    }

    fn observe_steps(&self) -> Vec<usize> {
        self.metrics.observe_steps()
    }

    fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> Result<()> {
        self.metrics.observe(first, step, state)
    }

    fn tap_rows(&self, first: u64, n: usize) -> Option<usize> {
        self.metrics.tap_rows(first, n)
    }

    fn observe_tapped(
        &mut self,
        first: u64,
        step: usize,
        max_weight: &[f32],
        argmax: Vec<u32>,
    ) -> Result<()> {
        self.metrics.observe_tapped(first, step, max_weight, argmax)
    }
}
