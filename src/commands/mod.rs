//! The command line: `Cli` (clap) and its dispatch, and one module per subcommand with its
//! options and its body. Option groups, parsers and printing shared by several
//! subcommands are in `crate::cli`; `main.rs` only parses, installs the Ctrl-C handler,
//! calls [`run`] and prints the error.

pub mod bench;
pub mod collapse;
pub mod devices;
pub mod merge;
pub mod render;
pub mod sample;
pub mod score_field;
pub mod speciation;
pub mod sweep;

use crate::error::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "memodiff",
    version,
    about = "Reverse-time diffusion sampling with the exact empirical score: watch samples \
             collapse onto the training points (memorization), at millions of particles, \
             on the GPU (wgpu/WGSL) or the CPU."
)]
/// The command line of the `memodiff` binary.
pub struct Cli {
    /// The subcommand and its options.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the reverse SDE and write samples, density images, metrics and run.json.
    Sample(Box<sample::SampleArgs>),
    /// Time the engines on a matrix of workloads and print a markdown table.
    Bench(bench::BenchArgs),
    /// Combine the folders of the shards of one run (`sample --shard k/n`) into one run
    /// folder, bit-identical to the unsharded run on the same backend.
    Merge(merge::MergeArgs),
    /// Continue a run of `sample --checkpoint-every K` that was stopped (Ctrl-C, a kill, a
    /// crash) from its last checkpoint; the results are bit-identical to an uninterrupted
    /// run on the same backend.
    Resume(sample::ResumeArgs),
    /// List the GPU adapters (the indices `sample --device N` takes) and their limits.
    Devices(devices::DevicesArgs),
    /// Draw the density image of existing particles ((P, 2) `.npy`/`.csv`, e.g. a run's
    /// samples.npy) without sampling, or re-shade / sum density grids (`*_density.npy` with
    /// their `.json` sidecars) of the same extent and size.
    Render(render::RenderArgs),
    /// Evaluate the empirical score on a grid at one forward time t: a quiver plot
    /// (score_field.png) and the vectors as score_field.npy, shape (G, 4): x, y, score_x,
    /// score_y.
    ScoreField(score_field::ScoreFieldArgs),
    /// Measure the collapse time of the reverse process on Gaussian training sets for a
    /// grid of (N, d) and compare it with the prediction of Biroli et al. (2024),
    /// t_C = 1/2 ln(1 + sigma^2 / (N^(2/d) - 1)); writes a CSV and a plot. Measured t_C:
    /// the Ornstein–Uhlenbeck time B(tau)/2 at which the normalised mean of max_i w_i,
    /// (m - 1/N) / (1 - 1/N), first reaches 1/2 along the reverse process.
    Collapse(collapse::CollapseArgs),
    /// Measure the speciation time with Biroli et al.'s cloning experiment: each particle
    /// is cloned at K times of the reverse process, the clone continuing with its own
    /// noise, and φ (both clones end in the same class) is plotted against the OU time
    /// with the prediction t_S = 1/2 ln Λ (Λ the largest eigenvalue of the data's
    /// covariance); measured t_S: where φ first reaches 3/4. Writes a CSV, a plot and JSON.
    Speciation(speciation::SpeciationArgs),
    /// Sweep one parameter (N, D, kde width h or t-min) over a list of values and write the
    /// memorized fraction (d1/d2 < 1/3, with its 95% bootstrap interval) as a CSV and a plot.
    Sweep(sweep::SweepArgs),
}

/// The staging area of a command's `--out` folder (see [`crate::io::staging`]), printing
/// what it repaired of a killed command's files.
fn begin_out(out: &std::path::Path) -> Result<crate::io::staging::Staging> {
    let (staging, repaired) = crate::io::staging::Staging::begin(out)?;
    if let Some(note) = repaired {
        println!("{note}");
    }
    Ok(staging)
}

/// The engine of `backend`, printing why `auto` fell back to the CPU when it did.
fn open_engine(backend: crate::engine::Backend) -> Result<Box<dyn crate::engine::Engine>> {
    let (engine, note) = crate::engine::open_backend(backend, None)?;
    if let Some(note) = note {
        println!("{note}");
    }
    Ok(engine)
}

/// Run a parsed command line: each subcommand's `run` in `crate::commands`.
/// Run the command, its errors naming the command-line flags of the library parameters
/// they are about (see `crate::cli::flags`).
pub fn run(cli: Cli) -> Result<()> {
    run_command(cli).map_err(crate::cli::flags::name_flags)
}

fn run_command(cli: Cli) -> Result<()> {
    // An invalid MEMODIFF_CPU_ISA is refused before any command reads or writes anything
    // (the kernels deep inside a run could not report it without a half-written folder).
    crate::isa::Isa::selected()?;
    match cli.command {
        Command::Sample(args) => sample::run(&args).map(|_| ()),
        Command::Resume(args) => sample::resume(&args).map(|_| ()),
        Command::Bench(args) => bench::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Devices(args) => devices::run(&args),
        Command::Render(args) => render::run(&args).map(|_| ()),
        Command::ScoreField(args) => score_field::run(&args).map(|_| ()),
        Command::Collapse(args) => collapse::run(&args).map(|_| ()),
        Command::Speciation(args) => speciation::run(&args).map(|_| ()),
        Command::Sweep(args) => sweep::run(&args).map(|_| ()),
    }
}
