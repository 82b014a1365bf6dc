//! Pixels from numbers: matplotlib's colormaps, the norms that map densities to colours,
//! and the density-grid file formats (the f32 grids `render` re-shades, the raw integer
//! sums of shards and checkpoints).

pub mod colormap;
pub mod grid_file;
pub mod norm;

use norm::{shade_indices, stats_of, Shading};

/// The colours of `values` (the cells of a grid, in any order) as the density PNGs shade
/// them: `shading.norm` over the range of the finite values (eq-hist: over their
/// histogram), then the 256-entry table of `shading.colormap`.
pub fn shade(values: &[f32], shading: Shading) -> Vec<[u8; 3]> {
    let lut = shading.colormap.lut();
    let stats = stats_of(values, shading.norm);
    shade_indices(values, shading.norm, &stats)
        .into_iter()
        .map(|i| lut[i])
        .collect()
}
