//! A grid's whole state as integer sums and their description ([`RawGridMeta`]): what
//! shards and checkpoints store and `merge` adds up. The files are
//! [`crate::image::grid_file`]'s.

use super::fixed_point::{QUANTUM_BITS, SCALE};
use super::{DensityGrid, Extent, Kernel, Store};
use crate::error::{Error, Result};
use serde::Serialize;

/// Identifies the raw grid files written by [`crate::image::grid_file::write_raw`].
pub const RAW_FORMAT: &str = "memodiff-density-raw-1";

/// What a raw (mergeable) density grid is: everything [`DensityGrid::from_raw`] checks
/// before it accepts integer sums, so that grids of different shapes are never added.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RawGridMeta {
    /// [`RAW_FORMAT`].
    pub format: String,
    pub width: usize,
    pub height: usize,
    /// `[xmin, xmax, ymin, ymax]`.
    pub extent: [f64; 4],
    pub bandwidth: f64,
    /// `"split"` (sums on the sub-grid), `"direct"` (sums on the pixels, row 0 = top) or
    /// `"histogram"` (counts on the pixels, [`Kernel::Histogram`]).
    pub path: String,
    /// Shape of the integer array: `[sub-rows, stored sub-columns]` or `[height, width]`.
    pub shape: [usize; 2],
    /// Value of one unit, in particle peak weights: `2^-QUANTUM_BITS`.
    pub quantum: f64,
    /// Particles accumulated (all shards, for a merged grid).
    pub deposits: u64,
}

impl DensityGrid {
    /// The metadata of [`raw_counts`](Self::raw_counts).
    pub fn raw_meta(&self) -> RawGridMeta {
        let (path, shape) = match &self.store {
            Store::Direct(_) if self.kernel == Kernel::Histogram => {
                ("histogram", [self.height, self.width])
            }
            Store::Direct(_) => ("direct", [self.height, self.width]),
            Store::Split(split) => ("split", [split.plan.n_sub, split.plan.stride]),
        };
        let e = self.extent;
        RawGridMeta {
            format: RAW_FORMAT.to_string(),
            width: self.width,
            height: self.height,
            extent: [e.xmin, e.xmax, e.ymin, e.ymax],
            bandwidth: self.bandwidth,
            path: path.to_string(),
            shape,
            quantum: 1.0 / SCALE,
            deposits: self.deposits,
        }
    }

    /// The integer sums, row-major of shape `raw_meta().shape`: the whole state of the grid
    /// ([`data`](Self::data) is a function of them). Sums of grids of the same shape add
    /// exactly: `from_raw` of the element-wise sum is the grid of all their particles.
    pub fn raw_counts(&self) -> std::borrow::Cow<'_, [i64]> {
        match &self.store {
            Store::Direct(direct) => std::borrow::Cow::Borrowed(&direct.acc),
            Store::Split(split) if split.rows.is_empty() => {
                std::borrow::Cow::Owned(vec![0; split.plan.n_sub * split.plan.stride])
            }
            Store::Split(split) => std::borrow::Cow::Borrowed(&split.rows),
        }
    }

    /// A grid from its raw sums; refuses metadata that does not describe a grid memodiff
    /// would build for that size, extent and bandwidth (or a count of values that does not
    /// fill the shape).
    pub fn from_raw(meta: &RawGridMeta, counts: Vec<i64>) -> Result<Self> {
        let bad = |why: String| Error::invalid("raw density grid", why);
        if meta.format != RAW_FORMAT {
            return Err(bad(format!(
                "format '{}', expected '{RAW_FORMAT}'",
                meta.format
            )));
        }
        if meta.quantum != 1.0 / SCALE {
            return Err(bad(format!(
                "quantum {} is not 2^-{QUANTUM_BITS}",
                meta.quantum
            )));
        }
        let [xmin, xmax, ymin, ymax] = meta.extent;
        let extent = Extent::new(xmin, xmax, ymin, ymax)?;
        let kernel = if meta.path == "histogram" {
            Kernel::Histogram
        } else {
            Kernel::Gaussian
        };
        let mut grid =
            DensityGrid::with_kernel(extent, meta.width, meta.height, meta.bandwidth, kernel)?;
        let expected = grid.raw_meta();
        if (expected.path.as_str(), expected.shape) != (meta.path.as_str(), meta.shape) {
            return Err(bad(format!(
                "a {}x{} grid over {extent} (bandwidth {}) is a {} grid of shape {:?}, not {} {:?}",
                meta.width,
                meta.height,
                meta.bandwidth,
                expected.path,
                expected.shape,
                meta.path,
                meta.shape
            )));
        }
        if counts.len() != meta.shape[0] * meta.shape[1] {
            return Err(bad(format!(
                "{} values do not fill shape {:?}",
                counts.len(),
                meta.shape
            )));
        }
        grid.deposits = meta.deposits;
        match &mut grid.store {
            Store::Direct(direct) => direct.acc = counts,
            Store::Split(split) => split.rows = counts,
        }
        Ok(grid)
    }
}
