//! Figures a person reads: framed images with axes, line charts, image grids, and the
//! figures of a run, all in one embedded font.

pub mod charts;
pub mod figure;
pub mod font;
pub mod image_grid;
pub mod run_figures;
