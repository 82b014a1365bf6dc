//! Density grids of particle clouds (histograms and kernel density estimates) over a
//! rectangle of the data plane (its extent).

pub mod extent;
pub mod heatmap;
