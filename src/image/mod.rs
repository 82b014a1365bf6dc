//! Pixels: the extent an image covers, colormaps, norms and colorbar ticks, density grids
//! written as PNG images band by band, and the density-grid file formats.

pub mod colorbar;
pub mod colormap;
pub mod extent;
pub mod grid_file;
pub mod norm;
pub mod raster;
