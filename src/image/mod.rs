//! Pixels from numbers: matplotlib's colormaps, the norms that map densities to colours,
//! and the density-grid file formats (the f32 grids `render` re-shades, the raw integer
//! sums of shards and checkpoints).

pub mod colormap;
pub mod grid_file;
pub mod norm;
