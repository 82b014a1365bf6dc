//! `memodiff merge`: combine the run folders of the shards of one run (`sample --shard k/n`)
//! into the run folder of the whole run.
//!
//! Everything is checked before anything is written: the inputs must be shards `0..n` of
//! one run, each exactly once (same parameters except the shard, same backend), with the
//! files their `run.json` lists. Then samples.npy and initial.npy are concatenated in
//! particle-index order, streamed a block of rows at a time; the raw density grids (integer
//! sums, [`crate::image::grid_file::write_raw`]) are added exactly and re-rendered; the memorization
//! counts are added; and a run.json for the whole run is written (shard: null,
//! merged_from: the inputs). Because particle i depends only on (seed, i) and the grids and
//! counts are integer sums, the result is bit-identical to the unsharded run on the same
//! backend.

use crate::density::heatmap::{DensityGrid, RawGridMeta};
use crate::error::{Error, Result};
use crate::io::npy_header;
use crate::io::NpyStreamWriter;
use crate::metrics::MemorizationCounts;
use crate::plot::raster::write_named;
use crate::run::folder::METRICS_COUNTS;
use crate::run::report::{MergeTimings, RunParameters, RunReport, Timings};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Rows copied per block while concatenating `.npy` files.
const BLOCK_ROWS: usize = 1 << 16;

/// One input folder, checked.
struct Part {
    dir: PathBuf,
    run: RunReport,
    range: std::ops::Range<u64>,
}

fn bad(why: impl Into<String>) -> Error {
    Error::invalid("merge", why.into())
}

/// Read a JSON file as `T`.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// A shard's parameters without those that differ between the shards of one run (the
/// shard, its particle range and its batching).
fn shared_parameters(run: &RunReport) -> RunParameters {
    let mut p = run.parameters.clone();
    p.spec.shard = None;
    p.facts.particle_range = [0, 0];
    p.facts.batch_size = 0;
    p.facts.batches = 0;
    p.facts.density_inexact = false;
    p
}

/// The parameters in which `a` and `b` differ, as `name (a vs b)`.
fn differences(a: &RunParameters, b: &RunParameters) -> Vec<String> {
    let as_map = |p: &RunParameters| match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(a), as_map(b));
    a.iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let theirs = b.get(k.as_str()).cloned().unwrap_or_default();
            format!("{k} ({v} vs {theirs})")
        })
        .collect()
}

/// What `merge` wrote.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub particles: u64,
    pub shards: u64,
    pub files: Vec<String>,
}

/// Check the inputs and return them in shard order, or the reason they are not the shards
/// of one run.
fn check_inputs(inputs: &[PathBuf], out: &Path) -> Result<Vec<Part>> {
    if inputs.is_empty() {
        return Err(bad("no input folders given"));
    }
    let out_canon = std::fs::canonicalize(out).ok();
    let mut parts = Vec::new();
    for dir in inputs {
        if out_canon.is_some() && std::fs::canonicalize(dir).ok() == out_canon {
            return Err(bad(format!(
                "--out {} is also an input; merge into a new folder",
                out.display()
            )));
        }
        let run = RunReport::read(dir)?;
        let Some(shard) = run.parameters.spec.shard else {
            return Err(bad(format!(
                "{} is not a shard (its run.json has no parameters.shard)",
                dir.display()
            )));
        };
        let range = shard.range(run.parameters.spec.particles);
        let recorded = run.parameters.facts.particle_range;
        if recorded != [range.start, range.end] {
            return Err(bad(format!(
                "{}: particle_range {recorded:?} is not shard {}/{}'s range {range:?}",
                dir.display(),
                shard.index,
                shard.count
            )));
        }
        parts.push((
            shard,
            Part {
                dir: dir.clone(),
                run,
                range,
            },
        ));
    }
    let count = parts[0].0.count;
    let first_dir = parts[0].1.dir.clone();
    for (shard, part) in &parts {
        if shard.count != count {
            return Err(bad(format!(
                "{} is shard {}/{} but {} is a shard of {count}",
                part.dir.display(),
                shard.index,
                shard.count,
                first_dir.display()
            )));
        }
    }
    let mut slots: Vec<Option<Part>> = (0..count).map(|_| None).collect();
    for (shard, part) in parts {
        let slot = &mut slots[shard.index as usize];
        if let Some(previous) = slot {
            return Err(bad(format!(
                "shard {}/{count} given twice: {} and {}",
                shard.index,
                previous.dir.display(),
                part.dir.display()
            )));
        }
        *slot = Some(part);
    }
    let missing: Vec<String> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(k, _)| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!("missing shard(s) {}", missing.join(", "))));
    }
    let parts: Vec<Part> = slots.into_iter().map(|s| s.expect("checked")).collect();

    // Same run: every parameter but the per-shard ones, the same backend, the same files.
    let reference = &parts[0];
    let ref_params = shared_parameters(&reference.run);
    let ref_files = &reference.run.files;
    for part in &parts[1..] {
        let params = shared_parameters(&part.run);
        if params != ref_params {
            let differ = differences(&ref_params, &params);
            return Err(bad(format!(
                "{} and {} are not shards of the same run: {}",
                reference.dir.display(),
                part.dir.display(),
                if differ.is_empty() {
                    "their parameters differ".to_string()
                } else {
                    format!("different {}", differ.join(", "))
                }
            )));
        }
        if part.run.backend != reference.run.backend {
            return Err(bad(format!(
                "{} ran on backend {} but {} on {}: results would not be those of one run",
                part.dir.display(),
                part.run.backend.name(),
                reference.dir.display(),
                reference.run.backend.name()
            )));
        }
        if &part.run.files != ref_files {
            return Err(bad(format!(
                "{} and {} hold different files",
                reference.dir.display(),
                part.dir.display()
            )));
        }
    }

    // Every listed input file is there, with the expected size where it is known.
    let dim = reference.run.parameters.facts.dim;
    for part in &parts {
        for name in ["samples.npy", "initial.npy"] {
            if ref_files.iter().any(|f| f == name) {
                let rows = (part.range.end - part.range.start) as usize;
                let expected =
                    npy_header("<f4", &[rows, dim]).len() as u64 + 4 * (rows * dim) as u64;
                let path = part.dir.join(name);
                let len = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                if len != expected {
                    return Err(bad(format!(
                        "{} has {len} bytes, expected {expected} for {rows} rows of {dim}",
                        path.display()
                    )));
                }
            }
        }
        for grid in ["samples", "initial"] {
            let raw = format!("{grid}_density_raw.json");
            if ref_files.contains(&raw) {
                let meta: RawGridMeta = read_json(&part.dir.join(&raw))?;
                let ref_meta: RawGridMeta = read_json(&reference.dir.join(&raw))?;
                if (
                    meta.width,
                    meta.height,
                    meta.extent,
                    meta.bandwidth,
                    &meta.path,
                    meta.shape,
                ) != (
                    ref_meta.width,
                    ref_meta.height,
                    ref_meta.extent,
                    ref_meta.bandwidth,
                    &ref_meta.path,
                    ref_meta.shape,
                ) {
                    return Err(bad(format!(
                        "{} and {} describe different density grids",
                        part.dir.join(&raw).display(),
                        reference.dir.join(&raw).display()
                    )));
                }
            }
        }
        if !part.dir.join(METRICS_COUNTS).is_file() {
            return Err(bad(format!(
                "{} has no {METRICS_COUNTS} (written by memodiff sample since shards can be merged)",
                part.dir.display()
            )));
        }
    }
    Ok(parts)
}

/// Append the rows of a memodiff `.npy` file (`<f4`, `rows` x `dim`) to `out`, a block at a
/// time.
fn append_npy(out: &mut NpyStreamWriter, path: &Path, rows: usize, dim: usize) -> Result<()> {
    let header = npy_header("<f4", &[rows, dim]);
    let mut file = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).map_err(|e| Error::io(path, e))?,
    );
    let mut head = vec![0u8; header.len()];
    file.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    if head != header {
        return Err(bad(format!(
            "{} is not the ({rows}, {dim}) <f4 array memodiff writes",
            path.display()
        )));
    }
    let mut bytes = vec![0u8; BLOCK_ROWS * dim * 4];
    let mut values = Vec::with_capacity(BLOCK_ROWS * dim);
    let mut left = rows;
    while left > 0 {
        let n = left.min(BLOCK_ROWS);
        let chunk = &mut bytes[..n * dim * 4];
        file.read_exact(chunk).map_err(|e| Error::io(path, e))?;
        values.clear();
        values.extend(
            chunk
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
        out.write_rows(&values)?;
        left -= n;
    }
    Ok(())
}

/// Merge the shard folders `inputs` into `out` (see the module documentation). Nothing is
/// written when the inputs are not the shards of one run.
pub fn merge(inputs: &[PathBuf], out: &Path, force: bool) -> Result<MergeReport> {
    let started = std::time::Instant::now();
    let parts = check_inputs(inputs, out)?;
    crate::io::out_dir::check_out(out, force)?;
    let reference = &parts[0];
    let spec = &reference.run.parameters.spec;
    let particles = spec.particles;
    let dim = reference.run.parameters.facts.dim;
    let in_files = &reference.run.files;
    // Everything is checked before anything is written: each shard's raw density grids
    // (their descriptions against their files, and against one another: only the
    // particles behind them may differ) and their metrics counts (a count that does not
    // match a shard's particle range is refused, whatever the other shards say). The sums
    // themselves are read one grid at a time while writing, so memory holds one total.
    let grid_names: Vec<&str> = ["samples", "initial"]
        .into_iter()
        .filter(|name| in_files.contains(&format!("{name}_density_raw.npy")))
        .collect();
    for name in &grid_names {
        let mut first: Option<RawGridMeta> = None;
        for part in &parts {
            let path = part.dir.join(format!("{name}_density_raw.npy"));
            let mut meta = crate::image::grid_file::check_raw(&path)?;
            meta.deposits = 0;
            match &first {
                None => first = Some(meta),
                Some(m) if *m != meta => {
                    return Err(bad(format!(
                        "{} does not describe the same grid as the first shard's",
                        path.with_extension("json").display()
                    )))
                }
                Some(_) => {}
            }
        }
    }
    let mut counts: Option<MemorizationCounts> = None;
    for part in &parts {
        let path = part.dir.join(METRICS_COUNTS);
        let c: MemorizationCounts = read_json(&path)?;
        let rows = part.range.end - part.range.start;
        if c.particles != rows {
            return Err(bad(format!(
                "{} counts {} particles but the shard holds {rows}: it does not belong to \
                 this shard",
                path.display(),
                c.particles
            )));
        }
        match &mut counts {
            None => counts = Some(c),
            Some(t) => t.merge(&c)?,
        }
    }
    let counts = counts.expect("at least one shard");
    if counts.particles != particles {
        return Err(bad(format!(
            "the shards' metrics count {} particles, the run has {particles}",
            counts.particles
        )));
    }

    // The merged files arrive in `out` together, run.json last.
    let staging = super::begin_out(out)?;
    let mut files = Vec::new();

    for name in ["samples.npy", "initial.npy"] {
        if in_files.iter().any(|f| f == name) {
            let mut writer = NpyStreamWriter::create(&staging.path(name), particles, dim)?;
            for part in &parts {
                let rows = (part.range.end - part.range.start) as usize;
                append_npy(&mut writer, &part.dir.join(name), rows, dim)?;
            }
            writer.finish()?;
            files.push(name.to_string());
        }
    }
    let mut density_inexact = false;
    for grid_name in &grid_names {
        let raw = format!("{grid_name}_density_raw.npy");
        let mut total: Option<DensityGrid> = None;
        for part in &parts {
            let grid = crate::image::grid_file::read_raw(&part.dir.join(&raw))?;
            match &mut total {
                None => total = Some(grid),
                Some(t) => t.merge(&grid)?,
            }
        }
        let total = total.expect("at least one shard");
        density_inexact |= !total.is_exact();
        // The merged folder is a whole run: no raw sums, like an unsharded run.
        let shading = spec.images.shading();
        files.extend(write_named(
            staging.dir(),
            grid_name,
            &total,
            shading,
            spec.images.png16,
            false,
            None,
        )?);
    }
    crate::io::write_json(&staging.path(METRICS_COUNTS), &counts)?;
    files.push(METRICS_COUNTS.into());
    files.push("run.json".into());

    let mut run = reference.run.clone();
    run.parameters.spec.shard = None;
    run.parameters.facts.particle_range = [0, particles];
    run.parameters.facts.density_inexact = density_inexact;
    run.parameters.facts.batches = parts.iter().map(|q| q.run.parameters.facts.batches).sum();
    let mut devices: Vec<&str> = Vec::new();
    for part in &parts {
        if !devices.contains(&part.run.device.as_str()) {
            devices.push(&part.run.device);
        }
    }
    run.device = devices.join("; ");
    run.command = crate::cli::command_line();
    run.memorization = counts.summary();
    run.timings_s = Timings::Merge(MergeTimings {
        merge: started.elapsed().as_secs_f64(),
        shards_sampling: parts.iter().map(|q| q.run.timings_s.sampling()).sum(),
    });
    run.merged_from = Some(parts.iter().map(|q| q.dir.display().to_string()).collect());
    run.files = files.clone();
    crate::io::write_json(&staging.path("run.json"), &run)?;
    let previous = crate::io::staging::listed_files(&out.join("run.json"));
    staging.commit("run.json", &previous)?;
    Ok(MergeReport {
        particles,
        shards: parts.len() as u64,
        files,
    })
}

/// Options of `memodiff merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shard folders, all n of them, in any order (e.g. `run/shard-*`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    /// Output folder of the merged run (created if missing; not one of the inputs).
    #[arg(long)]
    pub out: PathBuf,

    /// Write into an existing non-empty --out folder (files of the same names are replaced;
    /// others are left alone). Without it such a folder is refused.
    #[arg(long)]
    pub force: bool,
}

/// `memodiff merge`: see [`crate::commands::merge`].
pub fn run(args: &MergeArgs) -> Result<()> {
    let report = crate::commands::merge::merge(&args.inputs, &args.out, args.force)?;
    println!(
        "merged {} shards, {} particles; wrote {}: {}",
        report.shards,
        report.particles,
        args.out.display(),
        report.files.join(", ")
    );
    Ok(())
}
