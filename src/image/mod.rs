//! Pixels: colormaps, norms, and density grids written as PNG images band by band.

pub mod colormap;
pub mod raster;
