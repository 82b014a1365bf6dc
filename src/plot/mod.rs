//! Pictures a person reads: density grids written as PNG images band by band (with their
//! framed figures and colorbars), framed figures with axes, line charts and image grids,
//! all in one embedded font.

pub mod charts;
pub mod colorbar;
pub mod figure;
pub mod font;
pub mod image_grid;
pub mod raster;
