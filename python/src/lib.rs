//! The native half of the `memodiff` Python package: a thin layer over the memodiff
//! library's public API. Arrays arrive as contiguous NumPy arrays of the right dtype (the
//! Python half converts and checks shapes); results leave as NumPy arrays that own the
//! Rust buffers (no copy). Library errors become `ValueError` (bad parameters, named as
//! the Python argument), `KeyboardInterrupt` (a run stopped by Ctrl-C) or `RuntimeError`.

use memodiff::{
    Backend, DensityGrid, Error, Extent, Kernel, MemorizationCounter, Progress, SampleConfig,
    SampleSink, Sampler, SamplerKind, ScheduleShape, ScoreEvaluator, ScoreKind, Shading, Shard,
    VpSchedule,
};
use numpy::{
    IntoPyArray, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The library's parameter names as the Python API spells them.
fn python_name(name: &'static str) -> &'static str {
    match name {
        "time points" => "steps",
        "beta_min/beta_max" => "beta_min/beta_max",
        "dataset spec" | "training set" | "dataset" => "train",
        "points" => "x",
        other => other,
    }
}

/// A library error as the Python exception the package documents.
fn to_py(error: Error) -> PyErr {
    match error {
        Error::InvalidParameter { name, message } => {
            PyValueError::new_err(format!("invalid {}: {message}", python_name(name)))
        }
        Error::Dataset { message, .. } => {
            PyValueError::new_err(format!("invalid train: {message}"))
        }
        Error::Interrupted(m) => PyKeyboardInterrupt::new_err(m),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// A name of a library option enum (`em`, `cpu`, `coolwarm`, ...), as the CLI parses it.
fn parse_name<T: clap::ValueEnum>(argument: &str, name: &str) -> PyResult<T> {
    T::from_str(name, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        PyValueError::new_err(format!(
            "invalid {argument}: {name:?} is not one of {}",
            names.join(", ")
        ))
    })
}

/// The training set `train` (row-major (N, D), float64) as the library's dataset.
/// The training set of the (N, D) array `train`, images of `image_shape` (H, W, C) when
/// given (the Python side flattened (N, H, W[, C]) arrays).
fn dataset(
    train: &PyReadonlyArray2<f64>,
    image_shape: Option<(usize, usize, usize)>,
) -> PyResult<memodiff::Dataset> {
    let dim = train.shape()[1];
    let points = train
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut set = memodiff::Dataset::new("python array", dim, points.to_vec()).map_err(to_py)?;
    if let Some((height, width, channels)) = image_shape {
        if height * width * channels != dim {
            return Err(PyValueError::new_err(format!(
                "invalid train: images of {height}x{width}x{channels} do not have {dim} values"
            )));
        }
        set.image_shape = Some(memodiff::ImageShape {
            height,
            width,
            channels,
        });
    }
    Ok(set)
}

/// Keeps a run's samples (and initial positions) in buffers of their final size, and
/// counts memorization as the run folder does.
struct Keep {
    samples: Vec<f32>,
    initial: Option<Vec<f32>>,
    counter: MemorizationCounter,
    dim: usize,
    /// The positions after each asked-for number of updates (increasing, no repeats).
    snapshots: Vec<(usize, Vec<f32>)>,
    /// The number of updates of the run: its snapshot is the samples.
    updates: usize,
}

impl SampleSink for Keep {
    fn consume(&mut self, _: u64, initial: &[f32], samples: &[f32]) -> memodiff::Result<()> {
        self.counter.add_batch(samples, self.dim)?;
        self.samples.extend_from_slice(samples);
        if let Some(kept) = &mut self.initial {
            kept.extend_from_slice(initial);
        }
        for (step, kept) in &mut self.snapshots {
            if *step == 0 {
                kept.extend_from_slice(initial);
            } else if *step == self.updates {
                kept.extend_from_slice(samples);
            }
        }
        Ok(())
    }

    fn snapshot_steps(&self) -> Vec<usize> {
        self.snapshots
            .iter()
            .map(|(step, _)| *step)
            .filter(|&step| step > 0 && step < self.updates)
            .collect()
    }

    fn snapshot(&mut self, _: u64, step: usize, positions: &[f32]) -> memodiff::Result<()> {
        if let Some((_, kept)) = self.snapshots.iter_mut().find(|(s, _)| *s == step) {
            kept.extend_from_slice(positions);
        }
        Ok(())
    }
}

/// Progress for Python: at most every 100 ms it takes the GIL, lets Python's signal
/// handlers run (Ctrl-C raises KeyboardInterrupt there: the run is then cancelled through
/// the library's flag and the exception re-raised when it has stopped) and calls the
/// optional callback with (done, total) particle-steps.
struct PythonProgress<'a> {
    callback: Option<Py<PyAny>>,
    cancel: &'a AtomicBool,
    raised: Option<PyErr>,
    total: u64,
    /// The particle-steps last reported by the run.
    done: u64,
    last: Instant,
}

impl PythonProgress<'_> {
    fn poll(&mut self, done: u64, force: bool) {
        self.done = done;
        if !force && self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                self.cancel.store(true, Ordering::SeqCst);
                self.raised.get_or_insert(e);
                return;
            }
            if let Some(callback) = &self.callback {
                if let Err(e) = callback.call1(py, (done, self.total)) {
                    self.cancel.store(true, Ordering::SeqCst);
                    self.raised.get_or_insert(e);
                }
            }
        });
    }
}

impl Progress for PythonProgress<'_> {
    fn start(&mut self, particles: u64, steps: u64) {
        self.total = particles * steps;
        self.poll(0, true);
    }
    fn advance_to(&mut self, done: u64) {
        self.poll(done, false);
    }
    fn finish(&mut self) {
        // The last count reaches the callback, however soon after the one before.
        if self.raised.is_none() {
            self.poll(self.done, true);
        }
    }
}

/// What `sample` returns: the samples, the initial positions (when asked for), the
/// snapshots (step, positions), the metrics and the run's description (both JSON).
type Sampled<'py> = (
    Bound<'py, PyArray2<f32>>,
    Option<Bound<'py, PyArray2<f32>>>,
    Vec<(usize, Bound<'py, PyArray2<f32>>)>,
    String,
    String,
);

/// Sample; see `memodiff.sample` for the arguments. Returns (samples, initial or None,
/// metrics as JSON, run information as JSON).
#[pyfunction]
#[pyo3(signature = (train, particles, steps, seed, beta_min, beta_max, schedule, sampler, eta, score, t_min, grid_start, preset, backend, device, batch, shard, return_initial, initial, snapshots, progress, image_shape, patch_size))]
#[allow(clippy::too_many_arguments)]
fn sample<'py>(
    py: Python<'py>,
    train: PyReadonlyArray2<'py, f64>,
    particles: u64,
    steps: usize,
    seed: u64,
    beta_min: f64,
    beta_max: f64,
    schedule: &str,
    sampler: &str,
    eta: f64,
    score: &str,
    t_min: f64,
    grid_start: Option<f64>,
    preset: Option<&str>,
    backend: &str,
    device: Option<usize>,
    batch: Option<usize>,
    shard: Option<(u64, u64)>,
    return_initial: bool,
    initial: Option<PyReadonlyArray2<'py, f32>>,
    snapshots: Vec<usize>,
    progress: Option<Py<PyAny>>,
    image_shape: Option<(usize, usize, usize)>,
    patch_size: Option<Vec<usize>>,
) -> PyResult<Sampled<'py>> {
    let training = dataset(&train, image_shape)?;
    let dim = training.dim;
    let mut config = SampleConfig::new(training.clone());
    config.particles = particles;
    config.time_points = steps;
    config.seed = seed;
    config.schedule = VpSchedule {
        shape: parse_name::<ScheduleShape>("schedule", schedule)?,
        ..VpSchedule::new(beta_min, beta_max)
    };
    config.sampler = parse_name::<SamplerKind>("sampler", sampler)?;
    config.ddim_eta = eta;
    config.patch_sizes = patch_size;
    config.score = score
        .parse::<ScoreKind>()
        .map_err(|e| PyValueError::new_err(format!("invalid score: {e}")))?;
    config.t_min = t_min;
    config.grid_start = grid_start;
    if let Some(name) = preset {
        let preset = parse_name::<memodiff::Preset>("preset", name)?;
        preset.apply_to_config(&mut config).map_err(to_py)?;
    }
    config.batch = batch;
    config.shard = shard.map(|(index, count)| Shard { index, count });
    if let Some(given) = &initial {
        let rows = given
            .as_slice()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        config.initial = Some(rows.to_vec().into());
    }
    config.validate().map_err(to_py)?;
    let backend = parse_name::<Backend>("backend", backend)?;
    let range = config.particle_range();
    let rows = (range.end - range.start) as usize;
    let counter = MemorizationCounter::new(&training.points, dim).map_err(to_py)?;
    let updates = steps - 1;
    let mut wanted = snapshots.clone();
    wanted.sort_unstable();
    wanted.dedup();
    if let Some(&beyond) = wanted.iter().find(|&&k| k > updates) {
        return Err(PyValueError::new_err(format!(
            "invalid snapshots: step {beyond} is beyond the run's {updates} updates \
             (0 is the initial positions, {updates} the samples)"
        )));
    }
    let snapshot_bytes = (wanted.len() * rows * dim) as u128 * 4;
    if snapshot_bytes > 1 << 36 {
        return Err(PyValueError::new_err(format!(
            "invalid snapshots: {} of {rows} particles would hold {snapshot_bytes} bytes",
            wanted.len()
        )));
    }
    let mut keep = Keep {
        samples: Vec::with_capacity(rows * dim),
        initial: return_initial.then(|| Vec::with_capacity(rows * dim)),
        counter,
        dim,
        snapshots: wanted
            .iter()
            .map(|&k| (k, Vec::with_capacity(rows * dim)))
            .collect(),
        updates,
    };
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let (outcome, raised) = {
        let mut progress = PythonProgress {
            callback: progress,
            cancel: &cancel,
            raised: None,
            total: 0,
            done: 0,
            last: Instant::now(),
        };
        // The engine runs without the GIL; the progress takes it back briefly.
        let outcome = py.detach(|| {
            let plan = config.patch_plan()?;
            let mut opened = Sampler::open_for(backend, device, plan.as_ref())?;
            let timing = opened.run(&config, &mut keep, &mut progress, &cancel)?;
            Ok::<_, Error>((
                timing,
                opened.backend(),
                opened.device_name(),
                opened.note().map(str::to_string),
            ))
        });
        (outcome, progress.raised)
    };
    if let Some(e) = raised {
        return Err(e);
    }
    let (timing, used, device_name, note) = outcome.map_err(to_py)?;
    let summary = keep.counter.summary();
    let metrics = serde_json::to_string(&summary).expect("a summary serializes");
    let info = serde_json::json!({
        "backend": used.name(),
        "backend_requested": backend.name(),
        "backend_note": note,
        "device": device_name,
        "timings_s": {
            "sampling": timing.sampling_s,
            "outputs": timing.consume_s,
            "total": started.elapsed().as_secs_f64(),
        },
        "parameters": {
            "particles": particles,
            "particle_range": [range.start, range.end],
            "steps": config.time_points,
            "seed": seed,
            "beta_min": beta_min,
            "beta_max": beta_max,
            "schedule": config.schedule.shape.name(),
            "sampler": config.sampler.name(),
            "eta": config.ddim_eta,
            "score": score,
            "patch_sizes": config.patch_sizes,
            "t_min": t_min,
            "grid_start": config.grid_start,
            "n_train": training.len(),
            "dim": dim,
            "batch_size": timing.batch_size,
            "batches": timing.batches,
            "initial_given": config.initial.is_some(),
        },
    })
    .to_string();
    let samples = keep.samples.into_pyarray(py).reshape([rows, dim])?;
    let initial = match keep.initial {
        Some(v) => Some(v.into_pyarray(py).reshape([rows, dim])?),
        None => None,
    };
    let snapshots = keep
        .snapshots
        .into_iter()
        .map(|(k, v)| Ok((k, v.into_pyarray(py).reshape([rows, dim])?)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((samples, initial, snapshots, metrics, info))
}

/// Biroli et al.'s cloning experiment on `train`: the measurement as JSON.
#[pyfunction]
#[pyo3(signature = (train, classes, labels, particles, steps, clones, seed, beta_min, beta_max, backend, device))]
#[allow(clippy::too_many_arguments)]
fn speciation(
    py: Python<'_>,
    train: PyReadonlyArray2<'_, f64>,
    classes: &str,
    labels: Option<Vec<i64>>,
    particles: u64,
    steps: usize,
    clones: usize,
    seed: u64,
    beta_min: f64,
    beta_max: f64,
    backend: &str,
    device: Option<usize>,
) -> PyResult<String> {
    let training = dataset(&train, None)?;
    let classes = match (classes, labels) {
        (_, Some(labels)) => memodiff::Classes::Labels(labels),
        ("two-halves", None) => memodiff::Classes::TwoHalves,
        _ => memodiff::Classes::Nearest,
    };
    let mut config = SampleConfig::new(training);
    config.particles = particles;
    config.time_points = steps;
    config.seed = seed;
    config.schedule = VpSchedule::new(beta_min, beta_max);
    let backend = parse_name::<Backend>("backend", backend)?;
    let measured = py
        .detach(|| Sampler::open(backend, device)?.speciation(&config, clones, &classes))
        .map_err(to_py)?;
    Ok(serde_json::to_string(&measured).expect("a measurement serializes"))
}

/// The score (`empirical` or `kde:h`) of `train` at the rows of `x` at forward time `t`.
#[pyfunction]
#[pyo3(signature = (x, t, train, score, beta_min, beta_max, backend, device, image_shape))]
#[allow(clippy::too_many_arguments)]
fn score<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    t: f64,
    train: PyReadonlyArray2<'py, f64>,
    score: &str,
    beta_min: f64,
    beta_max: f64,
    backend: &str,
    device: Option<usize>,
    image_shape: Option<(usize, usize, usize)>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let training = dataset(&train, image_shape)?;
    let kind = score
        .parse::<ScoreKind>()
        .map_err(|e| PyValueError::new_err(format!("invalid score: {e}")))?;
    let (n, dim) = (x.shape()[0], x.shape()[1]);
    if dim != training.dim {
        return Err(PyValueError::new_err(format!(
            "invalid x: its rows have dimension {dim}, the training set's {}",
            training.dim
        )));
    }
    let points = x
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .to_vec();
    let backend = parse_name::<Backend>("backend", backend)?;
    let schedule = VpSchedule::new(beta_min, beta_max);
    let values = py
        .detach(|| {
            let (mut evaluator, _) = ScoreEvaluator::open(backend, device)?;
            evaluator.evaluate(&training, &schedule, kind, t, &points)
        })
        .map_err(to_py)?;
    values.into_pyarray(py).reshape([n, dim])
}

/// The kernel density of the (P, 2) `points` on a (height, width) grid, row 0 at the top.
#[pyfunction]
#[pyo3(signature = (points, extent, width, height, bandwidth, kernel))]
fn density<'py>(
    py: Python<'py>,
    points: PyReadonlyArray2<'py, f32>,
    extent: (f64, f64, f64, f64),
    width: usize,
    height: usize,
    bandwidth: f64,
    kernel: &str,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let kernel = parse_name::<Kernel>("kernel", kernel)?;
    let (a, b, c, d) = extent;
    let extent = Extent::new(a, b, c, d).map_err(to_py)?;
    let points = points
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let values: Vec<f32> = py
        .detach(|| {
            let mut grid = DensityGrid::with_kernel(extent, width, height, bandwidth, kernel)?;
            grid.accumulate(points);
            Ok::<_, Error>(grid.data().iter().map(|&v| v as f32).collect())
        })
        .map_err(to_py)?;
    values.into_pyarray(py).reshape([height, width])
}

/// The colours of a (H, W) grid as the PNGs have them: (H, W, 3) uint8.
#[pyfunction]
fn shade<'py>(
    py: Python<'py>,
    grid: PyReadonlyArray2<'py, f32>,
    colormap: &str,
    norm: &str,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let (h, w) = (grid.shape()[0], grid.shape()[1]);
    let shading = Shading {
        colormap: parse_name("colormap", colormap)?,
        norm: parse_name("norm", norm)?,
    };
    let values = grid
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let pixels: Vec<u8> = memodiff::shade(values, shading)
        .into_iter()
        .flatten()
        .collect();
    pixels.into_pyarray(py).reshape([h, w, 3])
}

/// A built-in training set by its spec (`circle:8`, `moons:1000:0.05`, ...): (N, D) float64.
#[pyfunction]
#[pyo3(signature = (spec, data_seed))]
fn dataset_from_spec<'py>(
    py: Python<'py>,
    spec: &str,
    data_seed: u64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let set = memodiff::Dataset::parse_seeded(spec, data_seed).map_err(|e| match e {
        Error::Dataset { message, .. } | Error::InvalidParameter { message, .. } => {
            PyValueError::new_err(format!("invalid spec: {message}"))
        }
        other => to_py(other),
    })?;
    let (n, dim) = (set.len(), set.dim);
    set.points.into_pyarray(py).reshape([n, dim])
}

/// The exported digits' files (images, labels), or a ValueError saying how to export them.
#[pyfunction]
fn digits_files() -> PyResult<(String, String)> {
    let path = |found: memodiff::Result<std::path::PathBuf>| {
        found
            .map(|p| p.display().to_string())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    };
    Ok((
        path(memodiff::digits_file())?,
        path(memodiff::digits_labels_file())?,
    ))
}

/// The GPU adapters, as `memodiff devices` lists them (JSON).
#[pyfunction]
fn devices() -> String {
    serde_json::to_string(&memodiff::devices()).expect("adapters serialize")
}

#[pymodule]
fn _memodiff(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(speciation, m)?)?;
    m.add_function(wrap_pyfunction!(density, m)?)?;
    m.add_function(wrap_pyfunction!(shade, m)?)?;
    m.add_function(wrap_pyfunction!(dataset_from_spec, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(digits_files, m)?)?;
    m.add("DEFAULT_BANDWIDTH", memodiff::DEFAULT_BANDWIDTH)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
