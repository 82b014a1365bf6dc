//! The command-line interface: the clap types of the command line, the option groups and
//! number parsers several commands share, the progress bar and the printed summaries.
//! Each subcommand's options and body live in its own file in `crate::commands`;
//! `main.rs` only parses, installs the Ctrl-C handler, calls [`run`] and prints errors.

pub mod flags;
pub mod options;
pub mod parse;
pub mod print;
pub mod progress;

use crate::error::Result;
use clap::{Parser, Subcommand};

/// Set by the binary's Ctrl-C handler: `sample` stops at the next step boundary.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Parser)]
#[command(
    name = "memodiff",
    version,
    about = "Reverse-time diffusion sampling with the exact empirical score: watch samples \
             collapse onto the training points (memorization), at millions of particles, \
             on the GPU (wgpu/WGSL) or the CPU."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the reverse SDE and write samples, density images, metrics and run.json.
    Sample(crate::commands::sample::SampleArgs),
    /// Time the engines on a matrix of workloads and print a markdown table.
    Bench(crate::commands::bench::BenchArgs),
    /// Combine the folders of the shards of one run (`sample --shard k/n`) into one run
    /// folder, bit-identical to the unsharded run on the same backend.
    Merge(crate::commands::merge::MergeArgs),
    /// Continue a run of `sample --checkpoint-every K` that was stopped (Ctrl-C, a kill, a
    /// crash) from its last checkpoint; the results are bit-identical to an uninterrupted
    /// run on the same backend.
    Resume(crate::commands::sample::ResumeArgs),
    /// List the GPU adapters (the indices `sample --device N` takes) and their limits.
    Devices(crate::commands::devices::DevicesArgs),
    /// Draw the density image of existing particles ((P, 2) `.npy`/`.csv`, e.g. a run's
    /// samples.npy) without sampling, or re-shade / sum density grids (`*_density.npy` with
    /// their `.json` sidecars) of the same extent and size.
    Render(crate::commands::render::RenderArgs),
    /// Evaluate the empirical score on a grid at one forward time t: a quiver plot
    /// (score_field.png) and the vectors as score_field.npy, shape (G, 4): x, y, score_x,
    /// score_y.
    ScoreField(crate::commands::score_field::ScoreFieldArgs),
    /// Measure the collapse time of the reverse process on Gaussian training sets for a
    /// grid of (N, d) and compare it with the prediction of Biroli et al. (2024),
    /// t_C = 1/2 ln(1 + sigma^2 / (N^(2/d) - 1)); writes a CSV and a plot. Measured t_C:
    /// the Ornstein–Uhlenbeck time B(tau)/2 at which the normalised mean of max_i w_i,
    /// (m - 1/N) / (1 - 1/N), first reaches 1/2 along the reverse process.
    Collapse(crate::commands::collapse::CollapseArgs),
    /// Sweep one parameter (N, D, kde width h or t-min) over a list of values and write the
    /// memorized fraction (d1/d2 < 1/3, with its 95% bootstrap interval) as a CSV and a plot.
    Sweep(crate::commands::sweep::SweepArgs),
}

/// Run a parsed command line: each subcommand's `run` in `crate::commands`.
/// Run the command, its errors naming the command-line flags of the library parameters
/// they are about (see [`flags`]).
pub fn run(cli: Cli) -> Result<()> {
    run_command(cli).map_err(flags::name_flags)
}

fn run_command(cli: Cli) -> Result<()> {
    use crate::commands::*;
    match cli.command {
        Command::Sample(args) => sample::run(&args).map(|_| ()),
        Command::Resume(args) => sample::resume(&args).map(|_| ()),
        Command::Bench(args) => bench::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Devices(args) => devices::run(&args),
        Command::Render(args) => render::run(&args).map(|_| ()),
        Command::ScoreField(args) => score_field::run(&args).map(|_| ()),
        Command::Collapse(args) => collapse::run(&args).map(|_| ()),
        Command::Sweep(args) => sweep::run(&args).map(|_| ()),
    }
}
