//! memodiff: reverse-time diffusion sampling driven by the exact empirical score of a
//! finite training set, on the GPU (wgpu/WGSL) with a CPU twin of every stage.

pub mod bench;
pub mod charts;
pub mod checkpoint;
pub mod cli;
pub mod collapse;
pub mod colormap;
pub mod cpu;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod figure;
pub mod gpu;
pub mod heatmap;
pub mod image_grid;
pub mod measure;
pub mod merge;
pub mod metrics;
pub mod npy;
pub mod output;
pub mod params;
pub mod philox;
pub mod posterior;
pub mod raster;
pub mod reference;
pub mod run_figures;
pub mod run_folder;
pub mod sampler;
pub mod schedule;
pub mod score_field;
pub mod stats;
pub mod sweep;
pub mod synthetic;

pub use error::{Error, Result};
