//! Checkpoints of a `sample` run (`--checkpoint-every K`) and what `memodiff resume` reads.
//!
//! A checkpoint is the folder `OUT/checkpoint/`, replaced as a whole at each save (written
//! as `checkpoint.tmp/`, every file synced, then swapped in by renames):
//!
//! - `checkpoint.json`: the run's spec and execution ([`CheckpointedRun`]), the backend and device used,
//!   where the run stands (batch start, batch length, steps done in that batch, batches
//!   done) and how many rows of `samples.npy`/`initial.npy` were streamed;
//! - `state.npy`, `initial.npy`: the batch in flight (positions after `step` steps, initial
//!   noise), only when `step > 0`;
//! - `samples_density_raw.npy/.json`, `initial_density_raw.npy/.json`, `metrics_counts.json`:
//!   the density sums and memorization counts of the finished batches;
//! - `training.npy`: the training set (f64), so that a resume does not depend on the
//!   `--dataset` file.
//!
//! The streamed arrays themselves stay in `OUT` as `.samples.npy.partial` and
//! `.initial.npy.partial` (synced at each save); a resume cuts them back to the saved rows.

use crate::density::heatmap::DensityGrid;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::metrics::MemorizationCounts;
use crate::model::dataset::{Dataset, ImageShape};
use crate::run::driver::{CheckpointAt, ResumePoint};
use crate::run::spec::{Execution, RunSpec};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The checkpoint folder's name inside the run folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const TEMP_DIR: &str = "checkpoint.tmp";
const OLD_DIR: &str = "checkpoint.old";
const FORMAT: &str = "memodiff-checkpoint-3";
/// Every folder a checkpoint occupies (the current one and those of a save under way).
pub const FOLDERS: [&str; 3] = [CHECKPOINT_DIR, OLD_DIR, TEMP_DIR];

/// Stable name of the temp file of a streamed array `name` (e.g. `samples.npy`) of a
/// checkpointed run.
pub fn partial_path(out: &Path, name: &str) -> PathBuf {
    out.join(format!(".{name}.partial"))
}

/// Everything that rebuilds a run: its spec, how it was carried out, and what the first
/// process found (the batch size, the engine, the command line) that `resume` must
/// reproduce or report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointedRun {
    pub spec: RunSpec,
    pub execution: Execution,
    /// The batch size the run resolved on its device.
    pub batch_size: usize,
    /// The backend and device the run used, and the note of `--backend auto`.
    #[serde(with = "crate::run::spec::backend_name")]
    pub backend: Backend,
    pub device_name: String,
    pub backend_note: Option<String>,
    /// The command line of the `sample` run.
    pub command: Vec<String>,
    /// (H, W, C) of one image of an image training set (`training.npy` keeps only the
    /// points; `--image-grid` draws samples back as images).
    pub image_shape: Option<ImageShape>,
}

/// `checkpoint.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub run: CheckpointedRun,
    /// First particle of the batch in flight (the end of the run's range once all are done).
    pub batch_start: u64,
    pub batch_len: usize,
    /// Steps done in the batch in flight (0: not started).
    pub step: usize,
    /// Batches finished; their rows are in the streamed files, their sums in the grids.
    pub batches_done: usize,
    /// Rows of `samples.npy` and `initial.npy` written (0 without arrays).
    pub rows_streamed: u64,
    /// [`digest`] of `run` and the training set as saved: `resume` refuses a checkpoint
    /// whose parameters or `training.npy` were edited since (a changed seed would give a
    /// hybrid of two runs).
    pub digest: String,
}

/// A 64-bit FNV-1a digest of the run's parameters (as JSON, which round-trips every
/// field exactly) and the training set's shape and f64 bits, in hex. Not a defence against
/// forgery; it catches edits and swapped files.
pub fn digest(run: &CheckpointedRun, training: &Dataset) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    feed(serde_json::to_string(run).expect("serializable").as_bytes());
    feed(&(training.dim as u64).to_le_bytes());
    feed(&(training.len() as u64).to_le_bytes());
    for v in &training.points {
        feed(&v.to_bits().to_le_bytes());
    }
    format!("{hash:016x}")
}

/// What a run folder adds to a checkpoint: its grids, counts and streamed rows.
pub struct FolderState<'a> {
    pub sample_grid: Option<&'a DensityGrid>,
    pub initial_grid: Option<&'a DensityGrid>,
    pub counts: MemorizationCounts,
    pub rows_streamed: u64,
    /// The grids and training set are those of the checkpoint on disk (no batch finished
    /// since): link its files instead of writing them again. (The counts are always
    /// written: the posterior concentration's change inside a batch.)
    pub unchanged: bool,
}

/// Write a checkpoint of `out` atomically (see the module documentation).
pub fn save(
    out: &Path,
    run: &CheckpointedRun,
    training: &Dataset,
    at: &CheckpointAt,
    folder: FolderState,
) -> Result<()> {
    let temp = out.join(TEMP_DIR);
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
    }
    fs::create_dir(&temp).map_err(|e| Error::io(&temp, e))?;
    let dim = training.dim;
    if at.step > 0 {
        crate::io::write_npy_f32(&temp.join("state.npy"), at.n as u64, dim, at.state)?;
        crate::io::write_npy_f32(&temp.join("initial.npy"), at.n as u64, dim, at.initial)?;
    }
    crate::io::write_json(&temp.join("metrics_counts.json"), &folder.counts)?;
    let current = out.join(CHECKPOINT_DIR);
    let linked = folder.unchanged && {
        // The counts are written every time (small; with the posterior concentration
        // they change inside a batch), the grids and training set are linked.
        let mut names = vec!["training.npy"];
        if folder.sample_grid.is_some() {
            names.extend(["samples_density_raw.npy", "samples_density_raw.json"]);
        }
        if folder.initial_grid.is_some() {
            names.extend(["initial_density_raw.npy", "initial_density_raw.json"]);
        }
        names
            .iter()
            .all(|name| fs::hard_link(current.join(name), temp.join(name)).is_ok())
    };
    if !linked {
        if let Some(grid) = folder.sample_grid {
            crate::image::grid_file::write_raw(&temp.join("samples_density_raw.npy"), grid)?;
        }
        if let Some(grid) = folder.initial_grid {
            crate::image::grid_file::write_raw(&temp.join("initial_density_raw.npy"), grid)?;
        }
        crate::io::write_npy_f64(
            &temp.join("training.npy"),
            training.len() as u64,
            dim,
            &training.points,
        )?;
    }
    let meta = CheckpointMeta {
        format: FORMAT.into(),
        run: run.clone(),
        batch_start: at.first,
        batch_len: at.n,
        step: at.step,
        batches_done: at.batches_done,
        rows_streamed: folder.rows_streamed,
        digest: digest(run, training),
    };
    crate::io::write_json(&temp.join("checkpoint.json"), &meta)?;
    let old = out.join(OLD_DIR);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if current.exists() {
        fs::rename(&current, &old).map_err(|e| Error::io(&current, e))?;
    }
    crate::io::rename_synced(&temp, &current).map_err(|e| Error::io(&current, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// A checkpoint read back by [`load`].
pub struct Loaded {
    pub meta: CheckpointMeta,
    pub training: Dataset,
    pub resume: ResumePoint,
    pub sample_grid: Option<DensityGrid>,
    pub initial_grid: Option<DensityGrid>,
    pub counts: MemorizationCounts,
}

/// Read the checkpoint of run folder `out` (`checkpoint/`, or `checkpoint.old/` when a
/// save was cut between its two renames).
pub fn load(out: &Path) -> Result<Loaded> {
    let dir = [CHECKPOINT_DIR, OLD_DIR]
        .iter()
        .map(|name| out.join(name))
        .find(|d| d.join("checkpoint.json").is_file())
        .ok_or_else(|| {
            Error::Output(format!(
                "{} holds no checkpoint ({} is missing): only a run started with \
                 `memodiff sample --checkpoint-every K` that has not finished can be resumed",
                out.display(),
                out.join(CHECKPOINT_DIR).join("checkpoint.json").display()
            ))
        })?;
    let bad = |why: String| Error::invalid("checkpoint", format!("{}: {why}", dir.display()));
    let meta_path = dir.join("checkpoint.json");
    let text = fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if meta.format != FORMAT {
        return Err(bad(format!(
            "format '{}', expected '{FORMAT}'",
            meta.format
        )));
    }
    let training_path = dir.join("training.npy");
    let bytes = fs::read(&training_path).map_err(|e| Error::io(&training_path, e))?;
    let mut training = Dataset::from_npy_bytes(&meta.run.spec.dataset, &bytes)?;
    training.image_shape = meta.run.image_shape;
    if digest(&meta.run, &training) != meta.digest {
        return Err(bad(
            "checkpoint.json or training.npy changed since the checkpoint was saved (their \
             digest differs); resuming would mix two runs, so it is refused"
                .into(),
        ));
    }
    let dim = training.dim;
    let mut resume = ResumePoint {
        first: meta.batch_start,
        step: meta.step,
        batches_done: meta.batches_done,
        ..Default::default()
    };
    if meta.step > 0 {
        for (name, into) in [
            ("state.npy", &mut resume.state),
            ("initial.npy", &mut resume.initial),
        ] {
            let (shape, values) = crate::io::read_npy_f32(&dir.join(name))?;
            if shape != [meta.batch_len, dim] {
                return Err(bad(format!(
                    "{name} has shape {shape:?}, expected [{}, {dim}]",
                    meta.batch_len
                )));
            }
            *into = values;
        }
    }
    let grid = |name: &str| -> Result<Option<DensityGrid>> {
        let path = dir.join(name);
        if path.is_file() {
            crate::image::grid_file::read_raw(&path).map(Some)
        } else {
            Ok(None)
        }
    };
    let counts_path = dir.join("metrics_counts.json");
    let text = fs::read_to_string(&counts_path).map_err(|e| Error::io(&counts_path, e))?;
    let counts: MemorizationCounts = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    Ok(Loaded {
        sample_grid: grid("samples_density_raw.npy")?,
        initial_grid: grid("initial_density_raw.npy")?,
        meta,
        training,
        resume,
        counts,
    })
}

/// Remove the checkpoint folders of `out` (after the run finished).
pub fn remove(out: &Path) -> Result<()> {
    for name in FOLDERS {
        let dir = out.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    crate::io::sync_dir(out);
    Ok(())
}
