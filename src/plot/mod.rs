//! Figures a person reads: framed images with axes, line charts, image grids, and the
//! figures of a run.

pub mod charts;
pub mod figure;
pub mod image_grid;
pub mod run_figures;
