//! The training set in the layouts the attention kernel (`attention.rs`) reads: panels of
//! `PANEL` points stored coordinate-major for the register-tiled dot products, rows for
//! the weighted means and the direct-form recomputes, the norms its error bounds use,
//! and, where a score needs them, the culling's clustering, separate values per point
//! (the patch scores' centre pixels) and counts.

use super::cull::{panel_order, PanelBalls};
use super::logit_bounds::UNIT_ROUNDOFF;

/// Training points per panel of the logits kernel (and per weights row of its tile).
pub const PANEL: usize = 32;
/// Coordinates per register tile of the weighted-mean kernel; rows are padded to it.
pub const MEAN_CHUNK: usize = 32;
/// Training points per block for dimension `dim`: both layouts of a block in about
/// 1 MiB (half of a 2 MiB L2), a whole number of panels, 32..=512 points. It depends on D
/// only, so the online softmax's block boundaries (and the bits) never change with the
/// batch.
pub fn block_points(dim: usize) -> usize {
    ((131_072 / dim.max(1)) / PANEL * PANEL).clamp(PANEL, 512)
}

/// The training set in the layouts the micro-kernels read, built once per dataset (the
/// cpu engine keeps it for all segments of all batches).
#[derive(Debug, Clone)]
pub struct TrainingPanels {
    /// Dimension D of the points.
    pub dim: usize,
    /// Number of real points N.
    pub points: usize,
    /// Row width of `rows` and of the accumulators: `dim` rounded up to `MEAN_CHUNK`.
    pub row_width: usize,
    /// Panels of `PANEL` points, coordinate-major: panel j holds `[k][PANEL]` at
    /// `j * dim * PANEL`; points beyond N are zero.
    pub panels: Vec<f32>,
    /// Row-major points padded with zeros to `row_width` and to a whole panel.
    pub rows: Vec<f32>,
    /// `|a_i|² / 2` (from f64, rounded once; `inf` for padding points, so their logits are
    /// `-inf`) and `|a_i|` (0 for padding), per (padded) point.
    pub half_norm2: Vec<f32>,
    /// `|a_i|` per (padded) point, for the culling bounds.
    pub norm: Vec<f32>,
    /// With culling (`clustered`): the original index of the point at each position,
    /// and the panels' balls.
    pub order: Option<Vec<u32>>,
    /// The bounding balls of the panels (culling only).
    pub balls: Option<PanelBalls>,
    /// What the weighted means are taken of where it is not the points themselves (see
    /// [`with_values`](Self::with_values)); `None`: the points.
    pub values: Option<PointValues>,
}

/// A few values per training point that the weighted means are taken of instead of the
/// point (the patch scores: a patch is the key, its centre pixel the value).
#[derive(Debug, Clone)]
pub struct PointValues {
    /// Values per point.
    pub width: usize,
    /// Value-major, per (padded) point in kernel order: `[value][point]`, each value times
    /// its point's count; padding points are zero.
    pub columns: Vec<f32>,
    /// Per (padded) point, how many identical keys it stands for (1 unless merged; 0 for
    /// padding): its weight counts that many times. Merged keys need one value per point.
    pub counts: Vec<f32>,
}

impl TrainingPanels {
    /// The layouts of the row-major `points` of dimension `dim`.
    pub fn new(points: &[f64], dim: usize) -> Self {
        let n = points.len() / dim;
        let padded = n.div_ceil(PANEL) * PANEL;
        let row_width = dim.div_ceil(MEAN_CHUNK) * MEAN_CHUNK;
        let mut panels = vec![0f32; padded * dim];
        let mut rows = vec![0f32; padded * row_width];
        let mut half_norm2 = vec![f32::INFINITY; padded];
        let mut norm = vec![0f32; padded];
        for (i, a) in points.chunks_exact(dim).enumerate() {
            let (j, l) = (i / PANEL, i % PANEL);
            for (k, &v) in a.iter().enumerate() {
                panels[j * dim * PANEL + k * PANEL + l] = v as f32;
                rows[i * row_width + k] = v as f32;
            }
            // The norms of the f32 points the kernels actually use.
            let n2: f64 = a.iter().map(|&v| (v as f32 as f64).powi(2)).sum();
            half_norm2[i] = (0.5 * n2) as f32;
            norm[i] = (n2.sqrt() * (1.0 + 4.0 * UNIT_ROUNDOFF)) as f32;
        }
        Self {
            dim,
            points: n,
            row_width,
            panels,
            rows,
            half_norm2,
            norm,
            order: None,
            balls: None,
            values: None,
        }
    }

    /// The layouts of the row-major `points` (keys, `dim` coordinates each) whose weighted
    /// means are taken of `values` (row-major, `width` per point) instead: the means then
    /// have `width` values per query, and cost one multiply-add per value and pair instead
    /// of per coordinate (rounded up to 32) and pair.
    /// With `clustered`, in the culling's panel order (see [`clustered`](Self::clustered)).
    /// With `counts`, point `i` stands for `counts[i]` identical keys (one value per
    /// point only: see [`PointValues::counts`]).
    pub fn with_values(
        points: &[f64],
        dim: usize,
        values: &[f64],
        width: usize,
        counts: Option<&[u32]>,
        clustered: bool,
    ) -> Self {
        assert!(
            counts.is_none() || width == 1,
            "merged keys need one value per point"
        );
        let mut panels = if clustered {
            Self::clustered(points, dim)
        } else {
            Self::new(points, dim)
        };
        let padded = panels.padded_points();
        let mut columns = vec![0f32; width * padded];
        let mut point_counts = vec![0f32; padded];
        for position in 0..panels.points {
            let i = panels.original_index(position as u32) as usize;
            let count = counts.map_or(1.0, |c| c[i] as f32);
            point_counts[position] = count;
            for (c, &value) in values[i * width..(i + 1) * width].iter().enumerate() {
                columns[c * padded + position] = count * value as f32;
            }
        }
        panels.values = Some(PointValues {
            width,
            columns,
            counts: point_counts,
        });
        panels
    }

    /// Bytes these layouts take per point of dimension `dim` whose means are taken of
    /// `values` values (`with_values`): the panels, the padded rows, the two norms, the
    /// values and the count.
    pub fn bytes_per_point(dim: usize, values: usize) -> u64 {
        let row_width = dim.div_ceil(MEAN_CHUNK) * MEAN_CHUNK;
        4 * (dim + row_width + 3 + values) as u64
    }

    /// Values per query of the weighted means (and of their accumulators): the values'
    /// width, else the row width.
    pub fn mean_width(&self) -> usize {
        self.values.as_ref().map_or(self.row_width, |v| v.width)
    }

    /// The training set reordered into panels of nearby points (`cull::panel_order`),
    /// with a ball per panel, for the kernel's exact culling.
    pub fn clustered(points: &[f64], dim: usize) -> Self {
        let order = panel_order(points, dim);
        let reordered: Vec<f64> = order
            .iter()
            .flat_map(|&i| &points[i as usize * dim..(i as usize + 1) * dim])
            .copied()
            .collect();
        let mut panels = Self::new(&reordered, dim);
        panels.balls = Some(PanelBalls::new(&reordered, dim));
        panels.order = Some(order);
        panels
    }

    /// The original index of the point at kernel position `position`.
    pub fn original_index(&self, position: u32) -> u32 {
        self.order
            .as_ref()
            .map_or(position, |order| order[position as usize])
    }

    pub(super) fn padded_points(&self) -> usize {
        self.half_norm2.len()
    }
}
