//! `memodiff render`: draw the density image of existing particles, or re-shade and sum
//! density grids, without sampling.

use crate::cli::options::ImageArgs;
use crate::error::Result;
use crate::model::dataset::Dataset;
use clap::Args;
use std::path::PathBuf;

/// Options of `memodiff render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Inputs, summed: particle files ((P, 2) float32/float64 `.npy`, or `.csv` of x,y rows)
    /// and density grids (an f32 (H, W) `.npy` with its `.json` sidecar, as `sample` and
    /// `render --grid` write them). All grids must have the same size, extent and kernel.
    /// Only files are read: a dataset spec such as `circle:8` is not drawn (to see a
    /// training set, save it as a file, or pass it to `sample --dataset`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    /// The PNG to write (replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,

    /// Also write the summed density grid here: f32 `.npy` (row 0 = top) plus its `.json`
    /// sidecar (extent, kernel, bandwidth, particles, min, max), for re-shading or summing.
    #[arg(long)]
    pub grid: Option<PathBuf>,

    #[command(flatten)]
    pub image: ImageArgs,

    /// Where particles are deposited: `auto` uses a hardware GPU if there is one and the CPU
    /// otherwise; `gpu` any adapter (lavapipe included); `cpu` the f64 CPU deposit, which
    /// reproduces the images `sample` writes byte for byte (the GPU's f32 weights differ
    /// from it by ~1e-5 of a peak). Small bandwidths and the histogram kernel always use
    /// the CPU.
    #[arg(long, value_enum, default_value_t = RenderBackend::Auto)]
    pub backend: RenderBackend,

    /// Also write a framed figure next to the image, OUT_figure.png for --out OUT.png:
    /// title, x/y axes with ticks, the image itself (the PNG's very colours, same norm,
    /// colormap and kernel, bilinearly resampled into the plot area) and a colorbar whose
    /// ticks follow the norm. Works at any --resolution: the figure keeps only the pixels
    /// its plot area reads (memory bounded by the figure's size, not the image's).
    #[arg(long, help_heading = "Figures")]
    pub figure: bool,

    /// Size of the figure in pixels, `WxH` or `N` for N×N (160..8192 a side; the image
    /// keeps --resolution).
    #[arg(long, default_value = crate::run::spec::DEFAULT_FIGURE_SIZE, value_parser = crate::plot::figure::parse_size, requires = "figure", help_heading = "Figures")]
    pub figure_size: (u32, u32),

    /// Mark these points with rings on the figure: a (N, 2) `.npy` (float32/float64) or a
    /// `.csv` of x,y rows, e.g. the training set. Needs --figure.
    #[arg(long, value_name = "FILE", help_heading = "Figures")]
    pub markers: Option<PathBuf>,

    /// Title of the figure (`\n` starts a new line) [default: the image's file name, then
    /// the particles, kernel and norm].
    #[arg(long, help_heading = "Figures")]
    pub title: Option<String>,
}

impl RenderArgs {
    /// Where `--figure` goes: OUT_figure.png next to --out.
    pub fn figure_path(&self) -> PathBuf {
        let stem = self.out.file_stem().unwrap_or_default().to_string_lossy();
        self.out.with_file_name(format!("{stem}_figure.png"))
    }
}

/// Where `render` deposits particles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderBackend {
    /// A hardware GPU if there is one, otherwise the CPU.
    Auto,
    /// Any wgpu adapter, software ones (lavapipe) included.
    Gpu,
    /// The exact f64 CPU deposit (what `sample` uses).
    Cpu,
}

/// `memodiff render`: see [`RenderArgs`]. Returns the sidecar of the grid drawn.
pub fn run(args: &RenderArgs) -> Result<crate::image::grid_file::GridMeta> {
    use crate::density::heatmap::DensityGrid;
    use crate::image::grid_file::{GridFile, GridMeta};
    use crate::plot::raster::{GridOutputs, GridSum};
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(crate::Error::invalid(
            "--out",
            format!("{}: the image must be a .png file", args.out.display()),
        ));
    }
    if !args.figure && (args.markers.is_some() || args.title.is_some()) {
        return Err(crate::Error::invalid(
            if args.markers.is_some() {
                "--markers"
            } else {
                "--title"
            },
            "belongs to the framed figure; add --figure",
        ));
    }
    // Read before any work, so that a bad file writes nothing.
    let markers: Vec<(f64, f64)> = match &args.markers {
        Some(path) => read_particles(path)
            .map_err(|e| crate::Error::invalid("--markers", e.to_string()))?
            .chunks_exact(2)
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect(),
        None => Vec::new(),
    };
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let figure_path = args.figure.then(|| args.figure_path());
    for input in &args.inputs {
        let same = |o: &Option<PathBuf>| {
            o.as_ref()
                .is_some_and(|o| canon(o).is_some() && canon(o) == canon(input))
        };
        if same(&Some(args.out.clone())) || same(&args.grid) || same(&figure_path) {
            return Err(crate::Error::invalid(
                "--out",
                format!("{} is also an input", input.display()),
            ));
        }
    }
    // Sort the inputs: density grids (an f32 .npy with a sidecar) and particle files.
    let mut files = Vec::new();
    let mut particle_inputs = Vec::new();
    for input in &args.inputs {
        if crate::image::grid_file::is_declared_f32_grid(input) {
            files.push(GridFile::open(input)?);
        } else {
            particle_inputs.push(input.clone());
        }
    }
    // The grid's shape: the flags, else the first density grid's, else the defaults.
    let first = files.first().map(|f| f.meta.clone());
    let extent = match (args.image.extent, &first) {
        (Some(e), _) => e,
        (None, Some(m)) => crate::image::grid_file::meta_extent(m)?,
        (None, None) => args.image.extent_or_default(),
    };
    let (width, height) = match (args.image.resolution, &first) {
        (Some(r), _) => r,
        (None, Some(m)) => (m.width, m.height),
        (None, None) => args.image.resolution_or_default(),
    };
    let bandwidth = args
        .image
        .bandwidth
        .or(first.as_ref().map(|m| m.bandwidth))
        .unwrap_or(crate::run::spec::DEFAULT_BANDWIDTH);
    let kernel = args
        .image
        .kernel
        .or(first.as_ref().map(|m| m.kernel))
        .unwrap_or_default();
    let mut grid = DensityGrid::with_kernel(extent, width, height, bandwidth, kernel)?;
    let want = GridMeta::of(&grid);
    for f in &files {
        if !want.same_shape(&f.meta) {
            return Err(crate::Error::invalid(
                "render",
                format!(
                    "cannot sum density grids of different shapes: {} is {}, but the image is {}",
                    f.path().display(),
                    f.meta.describe(),
                    want.describe()
                ),
            ));
        }
    }
    // The GPU deposits particles on the sub-grid; cpu (and grids the GPU path does not
    // cover: small bandwidths, the histogram kernel) use the exact f64 CPU deposit. No
    // device is opened when there are no particles to deposit.
    let backend = match args.backend {
        RenderBackend::Auto => crate::engine::Backend::Auto,
        RenderBackend::Gpu => crate::engine::Backend::Gpu,
        RenderBackend::Cpu => crate::engine::Backend::Cpu,
    };
    let gpu = if particle_inputs.is_empty() || grid.sub_grid().is_none() {
        None
    } else {
        match crate::engine::open_device(backend, None) {
            Ok((crate::engine::OpenedDevice::Gpu(ctx), _)) => {
                Some(crate::engine::gpu::raster::GpuRaster::new(*ctx))
            }
            Ok(_) => None,
            // `auto` deposits on the CPU whatever kept a hardware GPU from opening.
            Err(_) if args.backend == RenderBackend::Auto => None,
            Err(e) => return Err(e),
        }
    };
    let gpu = gpu.filter(|g| g.supports(&grid));
    // Large direct-path images (the histogram kernel, bandwidths under ~1.5 pixels) are
    // computed band by band from the particles, not summed into 8 bytes a pixel first.
    let banded = gpu.is_none()
        && grid.sub_grid().is_none()
        && width * height > crate::plot::raster::IN_MEMORY_PIXELS;
    let mut held: Vec<f32> = Vec::new();
    for input in &particle_inputs {
        let points = read_particles(input)?;
        match &gpu {
            Some(g) => g.accumulate(&mut grid, &points)?,
            None if banded => held.extend_from_slice(&points),
            None => grid.accumulate(&points),
        }
    }
    let held_particles = (held.len() / 2) as u64;
    let point_rows = crate::plot::raster::PointRows {
        grid: &grid,
        points: &held,
    };
    let mut meta = want;
    meta.particles =
        grid.deposits() + held_particles + files.iter().map(|f| f.meta.particles).sum::<u64>();
    let png16 = args.image.png16.then(|| {
        let stem = args.out.file_stem().unwrap_or_default().to_string_lossy();
        args.out.with_file_name(format!("{stem}_gray16.png"))
    });
    let figure = figure_path.map(|path| crate::plot::raster::FigureRequest {
        path,
        size: args.figure_size,
        title: match &args.title {
            Some(t) => t.replace("\\n", "\n"),
            None => format!(
                "{}\n{} particles, {} kernel, {} norm",
                args.out.file_name().unwrap_or_default().to_string_lossy(),
                crate::run::figures::group_thousands(meta.particles),
                kernel.name(),
                args.image.norm.name()
            ),
        },
        quantity: crate::run::figures::quantity_of(kernel).into(),
        markers,
    });
    let outputs = GridOutputs {
        png: Some(args.out.clone()),
        png16,
        npy: args.grid.clone(),
        figure,
    };
    let sum = GridSum {
        width,
        height,
        parts: match (particle_inputs.is_empty(), banded) {
            (true, _) => vec![],
            (false, true) => vec![&point_rows],
            (false, false) => vec![&grid],
        },
        files,
    };
    let meta = crate::plot::raster::write_grid_outputs(&sum, meta, args.image.shading(), &outputs)?;
    let mut written: Vec<String> = vec![args.out.display().to_string()];
    if let Some(g) = &outputs.npy {
        written.push(g.display().to_string());
        written.push(g.with_extension("json").display().to_string());
    }
    if let Some(p) = &outputs.png16 {
        written.push(p.display().to_string());
    }
    if let Some(f) = &outputs.figure {
        written.push(f.path.display().to_string());
    }
    let device = match &gpu {
        Some(g) if !particle_inputs.is_empty() => g.adapter_name(),
        _ => "the CPU".to_string(),
    };
    println!(
        "rendered {} particles into a {}x{} image ({} kernel, {} norm) on {device}; wrote {}",
        meta.particles,
        width,
        height,
        kernel.name(),
        args.image.norm.name(),
        written.join(", ")
    );
    Ok(meta)
}

/// Particles of a (P, 2) `.npy` (float32 or float64) or `.csv` file, row-major f32 pairs.
/// Only the file is read: a missing or unreadable one is an error naming the path and the
/// OS error (the name is never taken for a dataset spec).
fn read_particles(path: &std::path::Path) -> Result<Vec<f32>> {
    let bad = |why: String| crate::Error::invalid("render input", why);
    let is_csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    let (shape, values) = if is_csv {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
        let data = Dataset::from_csv_bytes(&path.display().to_string(), &bytes)?;
        (vec![data.len(), data.dim], data.points_f32())
    } else {
        use crate::io::npy::{read_npy, NpyReadError};
        let array = read_npy(path).map_err(|e| match e {
            NpyReadError::Io(e) => crate::Error::io(path, e),
            NpyReadError::Format(why) => bad(format!("{}: {why}", path.display())),
        })?;
        let values = array.values.into_f32().ok_or_else(|| {
            bad(format!(
                "{}: the array holds integers; particles are float32 or float64",
                path.display()
            ))
        })?;
        (array.shape, values)
    };
    if shape.len() != 2 || shape[1] != 2 {
        // A sidecar beside it that does not declare a density grid is broken: say so.
        let sidecar = path.with_extension("json");
        if path.extension().is_some_and(|e| e == "npy") && sidecar.is_file() {
            let why = match crate::image::grid_file::GridFile::open(path) {
                Err(e) => e.to_string(),
                Ok(_) => "it is not a density-grid sidecar".into(),
            };
            return Err(bad(format!(
                "{} has the sidecar {}, which is broken: {why}",
                path.display(),
                sidecar.display()
            )));
        }
        return Err(bad(format!(
            "{}: expected particles of shape (P, 2) or a density grid with its .json \
             sidecar, got shape {shape:?}",
            path.display()
        )));
    }
    // One rule for every input kind (float32 and float64 .npy, .csv): a particle with a
    // NaN or infinite coordinate (a float64 beyond float32's range included) is refused,
    // never deposited nor counted.
    let bad_rows: Vec<usize> = values
        .chunks_exact(2)
        .enumerate()
        .filter(|(_, p)| !p.iter().all(|v| v.is_finite()))
        .map(|(i, _)| i)
        .collect();
    if let Some(first) = bad_rows.first() {
        return Err(bad(format!(
            "{}: {} particles are not finite in float32 (NaN, inf or beyond ±3.4e38), the \
             first is row {first}; render only finite particles",
            path.display(),
            bad_rows.len()
        )));
    }
    Ok(values)
}
