//! Density grids of particle clouds (histograms and kernel density estimates).

pub mod heatmap;
