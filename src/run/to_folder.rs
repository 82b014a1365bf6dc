//! A whole run into a run folder, as one library call: what `memodiff sample` and
//! `memodiff resume` do, without the command line. The caller passes a cancellation flag
//! and a progress display (the binary's Ctrl-C handler sets the flag; nothing here
//! installs a signal handler) and a place for the messages a user should see.

use crate::engine::{Backend, Engine};
use crate::error::{Error, Result};
use crate::io::out_dir::refuse_non_empty_out;
use crate::io::staging::Staging;
use crate::model::dataset::{Dataset, ImageShape};
use crate::run::checkpoint::CheckpointedRun;
use crate::run::driver::{self, NoProgress, Progress, SampleConfig, SampleTiming};
use crate::run::folder::RunFolder;
use crate::run::report::{CulledPairs, RunFacts, RunParameters, RunReport, SampleTimings, Timings};
use crate::run::spec::{Execution, ExtraOutputs, RunSpec};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// How a run into a folder is watched and steered.
pub struct FolderControl<'a> {
    /// Write into a non-empty folder (its files of the same names are replaced). Without
    /// it such a folder is refused before anything runs.
    pub force: bool,
    /// Set it to stop the run at the next step boundary: the call returns
    /// [`Error::Interrupted`] and the folder keeps what it held (a checkpointed run keeps
    /// its checkpoint, so [`resume_in_folder`] continues it).
    pub cancel: &'a AtomicBool,
    /// Told how far the sampling is.
    pub progress: &'a mut dyn Progress,
    /// Receives the lines a user should read while the run goes on (which backend was
    /// chosen and why, where a resumed run starts, outputs that are skipped).
    pub notes: &'a mut dyn FnMut(&str),
    /// What started the run, recorded in run.json (the command line for the CLI).
    pub command: Vec<String>,
}

impl<'a> FolderControl<'a> {
    /// A run that shows nothing and refuses a non-empty folder, stopped by `cancel`:
    /// change the fields that differ, e.g. `FolderControl { force: true,
    /// ..FolderControl::quiet(&cancel) }`.
    pub fn quiet(cancel: &'a AtomicBool) -> Self {
        FolderControl {
            force: false,
            cancel,
            // Both are zero-sized: leaking them allocates nothing.
            progress: Box::leak(Box::new(NoProgress)),
            notes: Box::leak(Box::new(|_: &str| {})),
            command: Vec::new(),
        }
    }
}

/// Run `spec` on the training set `training` as `execution` says, writing every output
/// and run.json into `out` (created if missing). Everything that can be checked is
/// checked before the folder is touched: the parameters, the free space for the arrays,
/// an existing non-empty folder (see [`FolderControl::force`]) and the engine, which is
/// opened first.
pub fn sample_to_folder(
    spec: &RunSpec,
    execution: &Execution,
    training: Dataset,
    out: &Path,
    control: FolderControl,
) -> Result<RunReport> {
    let started = Instant::now();
    crate::io::out_dir::check_out_location(out)?;
    // Before the other checks: a run too large for the disk is told so, even when it is
    // also too large to run.
    if spec.write_arrays() {
        check_free_space(spec, training.dim, out)?;
    }
    let image_grid = spec.validate(&training, execution)?;
    if !control.force {
        refuse_non_empty_out(out)?;
    }
    let mut config = spec.sample_config(training, execution.batch);
    config.initial = load_initial(spec, config.dataset.dim)?;
    config.validate()?;
    // Open the engine before touching the folder: a run that cannot start writes nothing.
    let plan = config.patch_plan()?;
    let (backend, score_note) =
        crate::engine::backend_for_score(execution.backend, execution.device, plan.as_ref())?;
    let (engine, note) = crate::engine::open_backend(backend, execution.device)?;
    for note in score_note.iter().chain(&note) {
        (control.notes)(note);
    }
    if let Some(plan) = &plan {
        (control.notes)(&plan.describe(config.dataset.len()));
        if engine.backend() == crate::engine::Backend::Cpu {
            let note = crate::engine::cpu::patch::memory_note(plan, config.dataset.len())?;
            (control.notes)(&note);
        }
    }
    // A folder this run creates goes again if the run fails with nothing in it (an
    // engine that refuses the problem only once it has it: the GPU's dictionaries).
    let created = !out.exists();
    let result = (|| {
        let (staging, repaired) = Staging::begin(out)?;
        if let Some(note) = &repaired {
            (control.notes)(note);
        }
        // A checkpoint left by an earlier run in this folder (force) is stale, checkpointed
        // run or not: `resume` would otherwise bring the old run back over this one.
        crate::run::checkpoint::remove(out)?;
        let folder = match execution.checkpoint_every {
            None => RunFolder::create(&staging, &config.dataset, spec)?,
            Some(_) => {
                let run = CheckpointedRun {
                    spec: spec.clone(),
                    execution: execution.clone(),
                    batch_size: driver::batch_size(&config, engine.as_ref()),
                    backend: engine.backend(),
                    device_name: engine.device_name(),
                    backend_note: note.clone(),
                    command: control.command.clone(),
                    image_shape: config.dataset.image_shape,
                };
                RunFolder::create_checkpointed(&staging, &config.dataset, run)?
            }
        };
        let mut folder =
            folder.with_figures(crate::run::figures::from_spec(spec, &config.dataset)?);
        folder.set_metrics(crate::run::measure::MetricsSink::new(
            &config,
            posterior_plan(spec),
        )?);
        let checkpoints = driver::Checkpoints {
            every: execution.checkpoint_every,
            resume: None,
        };
        let run = Prepared {
            started,
            spec: spec.clone(),
            config,
            engine,
            note,
            backend_requested: execution.backend,
            image_grid,
        };
        complete(run, staging, folder, checkpoints, control)
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// Continue the checkpointed run in `out` (from its `checkpoint/`) on the backend and
/// device it used, and finish it exactly as [`sample_to_folder`] would have: the outputs
/// are bit-identical to those of the uninterrupted run. `control.force` and
/// `control.command` are not used (the folder is the run's own; run.json records the
/// command that started it).
pub fn resume_in_folder(out: &Path, control: FolderControl) -> Result<RunReport> {
    let started = Instant::now();
    // A run killed while its results were moving into place finishes that first (and
    // then has no checkpoint left to resume).
    if let Some(note) = crate::io::staging::repair(out)? {
        (control.notes)(&note);
    }
    let mut saved = crate::run::checkpoint::load(out)?;
    let run = saved.meta.run.clone();
    let bad = |why: String| Error::invalid("checkpoint", why);
    if run.backend == Backend::Reference {
        return Err(bad(
            "the reference backend cannot resume bit-identically".into()
        ));
    }
    let image_grid = run.spec.validate(&saved.training, &run.execution)?;
    let config = run
        .spec
        .sample_config(saved.training.clone(), Some(run.batch_size));
    // The same backend and device as the stopped run, or nothing.
    let (engine, _) = crate::engine::open_backend(run.backend, run.execution.device)?;
    if engine.backend() != run.backend || engine.device_name() != run.device_name {
        return Err(bad(format!(
            "the run used the {} backend on {}, but this resume got the {} backend on {}; \
             results would not be bit-identical, so it is refused",
            run.backend.name(),
            run.device_name,
            engine.backend().name(),
            engine.device_name()
        )));
    }
    if driver::batch_size(&config, engine.as_ref()) != run.batch_size {
        return Err(bad(format!(
            "the batch size {} of the run does not fit this device",
            run.batch_size
        )));
    }
    let metrics = crate::run::measure::MetricsSink::new(&config, posterior_plan(&run.spec))?;
    let (staging, _) = Staging::begin(out)?;
    let folder = RunFolder::resume(&staging, &mut saved, metrics)?;
    let at = &saved.meta;
    (control.notes)(&format!(
        "resuming {} from {}: batch {} at step {} of {}",
        out.display(),
        crate::run::checkpoint::CHECKPOINT_DIR,
        at.batches_done + 1,
        at.step,
        config.time_points - 1
    ));
    let checkpoints = driver::Checkpoints {
        every: run.execution.checkpoint_every,
        resume: Some(std::mem::take(&mut saved.resume)),
    };
    let prepared = Prepared {
        started,
        spec: run.spec,
        config,
        engine,
        note: run.backend_note,
        backend_requested: run.execution.backend,
        image_grid,
    };
    let control = FolderControl {
        command: run.command,
        ..control
    };
    complete(prepared, staging, folder, checkpoints, control)
}

/// The rows of `spec.initial` (`--initial FILE.npy`): (P, D) of the whole run, finite.
fn load_initial(spec: &RunSpec, dim: usize) -> Result<Option<std::sync::Arc<[f32]>>> {
    let Some(path) = &spec.initial else {
        return Ok(None);
    };
    let (shape, values) = crate::io::read_npy_as_f32(Path::new(path))
        .map_err(|e| Error::invalid("initial", e.to_string()))?;
    if shape.len() != 2 || shape[1] != dim || shape[0] as u64 != spec.particles {
        return Err(Error::invalid(
            "initial",
            format!(
                "{path} has shape {shape:?}; the run needs ({}, {dim}): one row of \
                 dimension D = {dim} per particle of the whole run",
                spec.particles
            ),
        ));
    }
    Ok(Some(values.into()))
}

/// Refuse a run whose samples.npy and initial.npy (P x D f32 each) cannot fit in the free
/// space of the file system of `out`, before anything is allocated or written.
fn check_free_space(spec: &RunSpec, dim: usize, out: &Path) -> Result<()> {
    let range = spec.particle_range();
    let rows = u128::from(range.end.saturating_sub(range.start));
    let needed = rows * dim as u128 * 4 * 2;
    let Some(free) = crate::io::available_space(out) else {
        return Ok(()); // unknown here: the writes themselves will report a full disk
    };
    if needed > u128::from(free) {
        return Err(Error::invalid(
            "particles",
            format!(
                "samples.npy and initial.npy for {rows} particles of dimension {dim} would \
                 need {needed} bytes ({}), but {} has only {free} bytes ({}) free; use fewer \
                 particles, --shard k/n or --no-samples",
                crate::io::human_bytes(needed),
                out.display(),
                crate::io::human_bytes(u128::from(free)),
            ),
        ));
    }
    Ok(())
}

/// The posterior-concentration recording of `spec` (none when it records no step or no
/// particle).
fn posterior_plan(spec: &RunSpec) -> Option<crate::run::measure::PosteriorPlan> {
    let ExtraOutputs {
        posterior_records: records,
        posterior_particles: particles,
        ..
    } = spec.extras;
    (records > 0 && particles > 0).then(|| {
        crate::run::measure::PosteriorPlan::spread(spec.time_points - 1, records, particles)
    })
}

/// What a run and a resumed run have set up before sampling.
struct Prepared {
    started: Instant,
    spec: RunSpec,
    config: SampleConfig,
    engine: Box<dyn Engine>,
    note: Option<String>,
    backend_requested: Backend,
    /// `image_grid`: the image shape and how many samples to draw.
    image_grid: Option<(ImageShape, usize)>,
}

/// Sample into `folder`, finish it, write run.json and commit the staged files into the
/// run folder (a checkpointed run's checkpoint goes with that commit).
fn complete(
    run: Prepared,
    mut staging: Staging,
    mut folder: RunFolder,
    checkpoints: driver::Checkpoints,
    control: FolderControl,
) -> Result<RunReport> {
    let out = staging.out().to_path_buf();
    let out = out.as_path();
    let Prepared {
        started,
        spec,
        config,
        mut engine,
        note,
        backend_requested,
        image_grid,
    } = run;
    let FolderControl {
        cancel,
        progress,
        notes,
        command,
        ..
    } = control;
    let checkpointed = checkpoints.every.is_some();
    // The metrics' nearest neighbours on the run's GPU, when it has one (exact either way).
    let device = engine.device_outputs().map(|d| d.context());
    let nearest_on = match device {
        Some(ctx) => {
            folder.use_gpu_nearest(ctx)?;
            "gpu"
        }
        None => "cpu",
    };
    let density_on = folder.use_gpu_density(device, config.t_min);
    let range = config.particle_range();
    let setup = started.elapsed().as_secs_f64();
    let timing: SampleTiming = driver::run_checkpointed(
        &config,
        engine.as_mut(),
        &mut folder,
        progress,
        cancel,
        checkpoints,
    )
    .map_err(|e| match e {
        Error::Interrupted(m) if checkpointed => Error::Interrupted(format!(
            "{m}; `memodiff resume {}` continues the run",
            out.display()
        )),
        e => e,
    })?;

    let finishing = Instant::now();
    let (mut files, metrics) = folder.finish(&mut staging)?;
    if let Some((shape, count)) = image_grid {
        crate::plot::image_grid::write(
            &staging.current_path("samples.npy"),
            &config.dataset,
            shape,
            count,
            &staging.path("samples_grid.png"),
        )?;
        files.push("samples_grid.png".into());
    }
    if config.dataset.dim != 2 {
        notes(&format!(
            "dataset has D = {}: density images are drawn for D = 2 only, skipping the PNGs",
            config.dataset.dim
        ));
    }
    files.push("run.json".into());
    let finish = finishing.elapsed().as_secs_f64();
    let report = RunReport {
        memodiff_version: env!("CARGO_PKG_VERSION").into(),
        command,
        parameters: RunParameters {
            facts: RunFacts {
                particle_range: [range.start, range.end],
                steps: spec.time_points - 1,
                n_train: config.dataset.len(),
                dim: config.dataset.dim,
                image_shape: config.dataset.image_shape,
                batch_size: timing.batch_size,
                batches: timing.batches,
                nearest_neighbours_on: nearest_on.into(),
                density_on,
                density_inexact: config.dataset.dim == 2
                    && !crate::density::heatmap::DensityGrid::exact_for(range.end - range.start),
            },
            spec,
        },
        backend: engine.backend(),
        backend_requested,
        backend_note: note,
        device: engine.device_name(),
        timings_s: Timings::Sample(SampleTimings {
            setup,
            sampling: timing.sampling_s,
            outputs: timing.consume_s,
            finish,
            total: started.elapsed().as_secs_f64(),
        }),
        culled_pairs: engine.pair_counts().map(|(pairs, culled)| CulledPairs {
            pairs,
            culled,
            fraction: culled as f64 / pairs as f64,
        }),
        memorization: metrics.summary(),
        merged_from: None,
        files,
    };
    crate::io::write_json(&staging.path("run.json"), &report)?;
    if checkpointed {
        for dir in crate::run::checkpoint::FOLDERS {
            staging.remove_dir_at_commit(dir);
        }
    }
    let previous = crate::io::staging::listed_files(&out.join("run.json"));
    staging.commit("run.json", &previous)?;
    Ok(report)
}
