//! The cpu engine's kernel for D > 4: the empirical score as attention (particles are the
//! queries, training points the keys and values), blocked like a GEMM and fused.
//!
//! - Per step, a work item's particles (`x' = x / s`, so the training points need no
//!   per-step scaling) meet the training points block by block (`block_points(D)` points,
//!   sized so a block in both layouts stays in L2). Within a block, a register tile of
//!   `R` particles x `PANEL` (32) points computes the dot products `x'·a_i` from panels
//!   stored coordinate-major (`[k][32]`), one FMA per pair and coordinate; the particles'
//!   rows stay in L1 while each block is read once per work item, not once per particle.
//! - Logits in base 2, `L_i = κ (x'·a_i − |a_i|²/2 − |x'|²/2) = −κ |x' − a_i|² / 2` with
//!   `κ = s² log2(e) / σ²`. The dot form cancels digits at small σ² (see
//!   `docs/performance-cpu-attention.md`): each pair carries a rigorous bound `e_i` of its
//!   f32 error, and a pair whose bound exceeds `RECOMPUTE_TOLERANCE` and whose logit may
//!   lie within `e_i + margin` of the running max is recomputed in the direct form
//!   `|x' − a_i|²` (no cancellation). Pairs further below have weights under
//!   `2^-(log2 N + 25)` of the max, true and computed, so they do not matter.
//! - Online softmax per particle across blocks (one rescale per block at most), the
//!   weights of a block exponentiated in place, then the weighted mean `W·A` as a second
//!   register-tiled product over row-major points (`R` particles x 32 coordinates).
//!   No N-wide temporaries: the only per-particle buffers are one block of weights and
//!   the D-wide accumulator.
//! - Every particle's arithmetic (its own accumulators, the fixed block order, its own
//!   recompute decisions) is independent of which particles share its tile or work item,
//!   so results are bit-identical for any batch size or thread count on a given ISA.
//!
//! The blocking, the register tiles and the online softmax are here; the logits' error
//! bounds and their refinement in `logit_bounds.rs`; the training set's layouts they
//! read (`TrainingPanels`) in `panels.rs`.

use super::approx::{exp2, mad};
use super::cull::dead_panels;
use super::fast::particle_normals;
#[cfg(target_arch = "x86_64")]
use super::lanes16::x86;
use super::lanes16::{
    fold16, fold_max, half16, half16_mut, lane_maxima, Fused16, Lanes16, Portable16,
};
use super::logit_bounds::RECOMPUTE_TOLERANCE;
use super::logit_bounds::{block_norms, bound_terms, refine_logits, BoundTerms};
pub use super::panels::{block_points, TrainingPanels, MEAN_CHUNK, PANEL};
use crate::engine::records::{HeunParams, StepParams, StepRecord};
use crate::isa::{isa_dispatch, Isa};
use std::borrow::Cow;

/// Beyond `log2 N` this many base-2 units below the max, a point's weight is below
/// 2^-25 / N of the max: all of them together move the sum by less than 2^-24.
const CULL_MARGIN_BITS: f32 = 25.0;

/// Particles per register tile, per instruction set: AVX-512 8 x 32 points = 16 zmm
/// accumulators; AVX2 3 x 32 = 12 ymm; SSE2 1 x 32 = 8 xmm.
pub fn tile_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 8,
        Isa::Avx2 => 3,
        Isa::Portable => 1,
    }
}

/// One score evaluation's coefficients (an em step or a heun half).
#[derive(Debug, Clone, Copy)]
pub struct ScoreScale {
    /// `1 / s`: particles are divided by it instead of scaling the points.
    pub inv_scale: f32,
    /// `κ = s² log2(e) / σ²`.
    pub kappa: f32,
}

impl ScoreScale {
    pub fn new(mean_scale: f32, inv_two_sigma2: f32) -> Self {
        let s = mean_scale as f64;
        Self {
            inv_scale: (1.0 / s) as f32,
            kappa: (2.0 * s * s * inv_two_sigma2 as f64 * std::f64::consts::LOG2_E) as f32,
        }
    }
}

/// The score's scale and temperature of a record (an update of the rows' `x`, in place:
/// an em step draws its noise from Philox (step, lane block); a Heun predictor also
/// writes the corrector's part).
pub(crate) fn score_scale(update: &StepRecord) -> ScoreScale {
    let (mean_scale, inv_two_sigma2) = update.score_scale();
    ScoreScale::new(mean_scale, inv_two_sigma2)
}

/// The posterior tap of one record: `(max_i w_i, argmax_i)` of the softmax (ties: the
/// lowest index), for the first rows of a call.
pub type PosteriorSample = (f32, u32);

/// Per-work-item scratch, allocated once per item and reused by every step.
#[derive(Debug, Clone)]
pub struct Scratch {
    rows: usize,
    /// `x'` coordinate-major per tile of `R` particles (`[tile][k][R]`).
    tiles: Vec<f32>,
    /// `x'` row-major (`[p][dim]`), for the direct-form recomputes.
    scaled: Vec<f32>,
    /// One block of logits, then weights, per particle of the current tile
    /// (`[r][block]`).
    weights: Vec<f32>,
    /// The weighted sums per particle (`[p][mean_width]`).
    acc: Vec<f32>,
    running_max: Vec<f32>,
    weight_sum: Vec<f32>,
    argmax: Vec<u32>,
    /// The points of the current block that weigh something for the current tile.
    live: Vec<u32>,
    /// Pairs recomputed in the direct form (statistics).
    pub recomputed: u64,
    /// (Tile, point) pairs skipped by the weighted mean because every weight was 0
    /// (statistics).
    pub skipped_mean_points: u64,
    /// With culling: per row, per panel, whether the panel is dead for the row's particle
    /// (`[row][panel]`; padding rows are all dead), and one row of centre distances.
    dead: Vec<bool>,
    distances: Vec<f64>,
    /// With culling: per row, a lower bound of its best true logit (else `-inf`).
    best_floor: Vec<f32>,
    /// (Particle, real training point) pairs evaluated, and those culled (statistics).
    pub pairs: u64,
    pub culled_pairs: u64,
    /// Per row, the parts of its dot-form error bound (see `bound_terms`).
    bounds: Vec<BoundTerms>,
}

impl Scratch {
    pub fn new(particles: usize, r: usize, training: &TrainingPanels) -> Self {
        let panels = training.balls.as_ref().map(|b| b.panels());
        Self::with_sizes(particles, r, training.dim, training.mean_width(), panels)
    }

    /// For keys of `dim` coordinates, `mean_width` accumulators per query, not culled
    /// (a training set read in chunks, `KeyChunks`).
    pub fn unculled(particles: usize, r: usize, dim: usize, mean_width: usize) -> Self {
        Self::with_sizes(particles, r, dim, mean_width, None)
    }

    /// `culled_panels`: the panels of a culled training set.
    fn with_sizes(
        particles: usize,
        r: usize,
        dim: usize,
        mean_width: usize,
        culled_panels: Option<usize>,
    ) -> Self {
        let rows = particles.div_ceil(r) * r;
        Self {
            rows,
            tiles: vec![0f32; rows * dim],
            scaled: vec![0f32; rows * dim],
            weights: vec![0f32; r * block_points(dim)],
            acc: vec![0f32; rows * mean_width],
            running_max: vec![0f32; rows],
            weight_sum: vec![0f32; rows],
            argmax: vec![0u32; rows],
            live: Vec::with_capacity(block_points(dim)),
            recomputed: 0,
            skipped_mean_points: 0,
            dead: culled_panels.map_or(Vec::new(), |panels| vec![true; rows * panels]),
            distances: culled_panels.map_or(Vec::new(), |panels| vec![0.0; panels]),
            best_floor: vec![f32::NEG_INFINITY; rows],
            pairs: 0,
            culled_pairs: 0,
            bounds: Vec::with_capacity(rows),
        }
    }
}

/// A training set as the attention kernel reads it: in consecutive chunks, each a
/// `TrainingPanels`, so that a set too large to hold in memory can be built a chunk at a
/// time. The online softmax carries over from chunk to chunk as from block to block (a
/// chunk of whole blocks gives the bits of the same points read in one), and the
/// recompute margin counts every point of the set. A `TrainingPanels` is one chunk.
pub trait KeyChunks {
    /// Coordinates per key.
    fn dim(&self) -> usize;
    /// Accumulators per query (`TrainingPanels::mean_width`).
    fn mean_width(&self) -> usize;
    /// Values per query of the means: the values' width, else `dim`.
    fn mean_len(&self) -> usize;
    /// Keys in all chunks together, merged keys counted with their counts.
    fn total_points(&self) -> usize;
    /// Number of chunks.
    fn chunks(&self) -> usize;
    /// Chunk `index` and the set's index of its first key. (Not a visitor closure: the
    /// kernel calls this from code compiled for its instruction set, which a closure
    /// would not be.)
    fn chunk(&self, index: usize) -> (Cow<'_, TrainingPanels>, usize);
}

impl KeyChunks for TrainingPanels {
    fn dim(&self) -> usize {
        self.dim
    }

    fn mean_width(&self) -> usize {
        TrainingPanels::mean_width(self)
    }

    fn mean_len(&self) -> usize {
        self.values.as_ref().map_or(self.dim, |v| v.width)
    }

    fn total_points(&self) -> usize {
        self.points
    }

    fn chunks(&self) -> usize {
        1
    }

    fn chunk(&self, _index: usize) -> (Cow<'_, TrainingPanels>, usize) {
        (Cow::Borrowed(self), 0)
    }
}

/// The updates a work item's particles go through, and where their noise comes from.
#[derive(Clone, Copy)]
pub struct ItemSteps<'a> {
    /// The step records (em steps, or the halves of Heun steps), in order.
    pub updates: &'a [StepRecord],
    /// The run's Philox key.
    pub key: [u32; 2],
    /// The global index of the item's row 0 (its noise stream).
    pub first_particle: u64,
}

isa_dispatch! {
    /// Run one work item's particles (`xs`: `particles` rows of `dim`, row-major, updated in
    /// place) through `steps.updates`, on `isa`. `partials` (same shape as `xs`) carries the
    /// Heun corrector's known part between halves. `tap`: for the updates whose index is
    /// listed (`tap.0`), the posterior of the first `tap.1.len() / tap.0.len()` rows goes to
    /// `tap.1[record * rows + row]`.
    ///
    /// [`advance_with`] with the lane type, register tile and FMA of `isa`, compiled for
    /// `isa`.
    pub fn advance(
        training: &TrainingPanels,
        xs: &mut [f32],
        partials: &mut [f32],
        steps: ItemSteps,
        scratch: &mut Scratch,
        tap: Option<(&[usize], &mut [PosteriorSample])>,
    ) {
        Avx512 => advance_with::<Fused16, 8, true>(training, xs, partials, steps, scratch, tap),
        Avx2 => advance_with::<x86::Avx2x16, 3, true>(training, xs, partials, steps, scratch, tap),
        Portable => {
            advance_with::<Portable16, 1, false>(training, xs, partials, steps, scratch, tap)
        }
    }
}

isa_dispatch! {
    /// The softmax-weighted means of `training`'s points (or of its values) for every row
    /// of `xs` (`dim` coordinates each) at `scale`, into `means` (`mean_width()` values per
    /// row): the attention kernel alone,
    /// for scores whose queries are not whole particles (the patch-local scores,
    /// `engine::cpu::patch`). Each row's mean depends only on that row.
    pub fn softmax_means(
        training: &dyn KeyChunks,
        xs: &[f32],
        scale: ScoreScale,
        scratch: &mut Scratch,
        means: &mut [f32],
    ) {
        Avx512 => softmax_means_with::<Fused16, 8, true>(training, xs, scale, scratch, means),
        Avx2 => softmax_means_with::<x86::Avx2x16, 3, true>(training, xs, scale, scratch, means),
        Portable => softmax_means_with::<Portable16, 1, false>(training, xs, scale, scratch, means),
    }
}

#[inline(always)]
fn softmax_means_with<V: Lanes16, const R: usize, const FMA: bool>(
    training: &dyn KeyChunks,
    xs: &[f32],
    scale: ScoreScale,
    scratch: &mut Scratch,
    means: &mut [f32],
) {
    let dim = training.dim();
    let (width, out) = (training.mean_width(), training.mean_len());
    let particles = xs.len() / dim;
    assert_eq!(particles * out, means.len());
    let rows = particles.div_ceil(R) * R;
    assert!(scratch.rows >= rows);
    let total_points = training.total_points();
    prepare_queries::<R>(dim, width, xs, scale, scratch);
    for index in 0..training.chunks() {
        let (chunk, first_point) = training.chunk(index);
        assert!(chunk.balls.is_none() || chunk.points == total_points);
        // SAFETY: the wrappers only instantiate `V` for features this CPU has.
        unsafe {
            accumulate_keys::<V, R, FMA>(
                &chunk,
                particles,
                scale,
                scratch,
                first_point,
                total_points,
            )
        };
    }
    canonical_zero(&mut scratch.acc[..rows * width]);
    for (p, mean) in means.chunks_exact_mut(out).enumerate() {
        let sum = scratch.weight_sum[p];
        for (m, &a) in mean
            .iter_mut()
            .zip(&scratch.acc[p * width..p * width + out])
        {
            *m = a / sum;
        }
    }
}

#[inline(always)]
fn advance_with<V: Lanes16, const R: usize, const FMA: bool>(
    training: &TrainingPanels,
    xs: &mut [f32],
    partials: &mut [f32],
    steps: ItemSteps,
    scratch: &mut Scratch,
    mut tap: Option<(&[usize], &mut [PosteriorSample])>,
) {
    let ItemSteps {
        updates,
        key,
        first_particle,
    } = steps;
    let dim = training.dim;
    let particles = xs.len() / dim;
    assert!(scratch.rows >= particles && scratch.rows.is_multiple_of(R));
    assert_eq!(partials.len(), xs.len());
    for (u, update) in updates.iter().enumerate() {
        // SAFETY: the wrappers only instantiate `V` for features this CPU has.
        unsafe { score_means::<V, R, FMA>(training, xs, score_scale(update), scratch) };
        // The tap: weights are relative to the running max, whose point weighs 1.
        if let Some((records, out)) = tap.as_mut() {
            if let Some(record) = records.iter().position(|&r| r == u) {
                let rows = out.len() / records.len();
                for row in 0..rows.min(particles) {
                    out[record * rows + row] = (
                        1.0 / scratch.weight_sum[row],
                        training.original_index(scratch.argmax[row]),
                    );
                }
            }
        }
        let width = training.row_width;
        let mut noise = vec![0f32; dim];
        for (p, (x, partial)) in xs
            .chunks_exact_mut(dim)
            .zip(partials.chunks_exact_mut(dim))
            .enumerate()
        {
            let acc = &scratch.acc[p * width..p * width + dim];
            let sum = scratch.weight_sum[p];
            match update {
                StepRecord::Em(step) => em_update::<FMA>(
                    x,
                    acc,
                    sum,
                    step,
                    key,
                    first_particle + p as u64,
                    &mut noise,
                ),
                StepRecord::Heun(half) => heun_update(x, partial, acc, sum, half),
            }
        }
    }
}

/// `x' = keep x + mean_coeff m + noise_coeff z` (the twin's `em_update`, with
/// `m = acc / weight_sum`), the normals of coordinates 4b..4b+3 from lane block b
/// (vectorised over lane blocks: `noise` is scratch of `x.len()` values).
#[inline(always)]
pub(crate) fn em_update<const FMA: bool>(
    x: &mut [f32],
    acc: &[f32],
    weight_sum: f32,
    step: &StepParams,
    key: [u32; 2],
    particle: u64,
    noise: &mut [f32],
) {
    particle_normals::<FMA>(particle, step.step_index, key, noise);
    for ((x, &a), &z) in x.iter_mut().zip(acc).zip(noise.iter()) {
        let m = a / weight_sum;
        *x = step.keep_coeff * *x + step.mean_coeff * m + step.noise_coeff * z;
    }
}

/// The twin's `heun_update` with `m = acc / weight_sum`.
#[inline(always)]
pub(crate) fn heun_update(
    x: &mut [f32],
    partial: &mut [f32],
    acc: &[f32],
    weight_sum: f32,
    step: &HeunParams,
) {
    for d in 0..x.len() {
        let m = acc[d] / weight_sum;
        let next = step.x_coeff * x[d] + step.mean_coeff * m;
        if step.phase == 0 {
            partial[d] = step.partial_x_coeff * x[d] + step.partial_mean_coeff * m;
            x[d] = next;
        } else {
            x[d] = partial[d] + next;
        }
    }
}

/// The softmax-weighted sums `acc[p] = Σ_i 2^(L_i − M) a_i`, `weight_sum[p]`,
/// `running_max[p]` and `argmax[p]` of every row of `xs` (the fused pass).
#[inline(always)]
unsafe fn score_means<V: Lanes16, const R: usize, const FMA: bool>(
    training: &TrainingPanels,
    xs: &[f32],
    scale: ScoreScale,
    scratch: &mut Scratch,
) {
    let (dim, width) = (training.dim, training.mean_width());
    let particles = xs.len() / dim;
    prepare_queries::<R>(dim, width, xs, scale, scratch);
    accumulate_keys::<V, R, FMA>(training, particles, scale, scratch, 0, training.points);
    canonical_zero(&mut scratch.acc[..particles.div_ceil(R) * R * width]);
}

/// Start an evaluation: the rows of `xs` as the kernel reads them (`x' = x / s`,
/// row-major and per tile coordinate-major; padding rows are zero), their error-bound
/// terms, and fresh softmax states with `width` accumulators each.
#[inline(always)]
fn prepare_queries<const R: usize>(
    dim: usize,
    width: usize,
    xs: &[f32],
    scale: ScoreScale,
    scratch: &mut Scratch,
) {
    let particles = xs.len() / dim;
    let rows = particles.div_ceil(R) * R;
    scratch.scaled[..rows * dim].fill(0.0);
    for (x, xp) in xs
        .chunks_exact(dim)
        .zip(scratch.scaled.chunks_exact_mut(dim))
    {
        for (o, &v) in xp.iter_mut().zip(x) {
            *o = v * scale.inv_scale;
        }
    }
    for t in 0..rows / R {
        let tile = &mut scratch.tiles[t * R * dim..(t + 1) * R * dim];
        for r in 0..R {
            let row = &scratch.scaled[(t * R + r) * dim..(t * R + r + 1) * dim];
            for (k, &v) in row.iter().enumerate() {
                tile[k * R + r] = v;
            }
        }
    }
    scratch.acc[..rows * width].fill(0.0);
    scratch.running_max[..rows].fill(f32::NEG_INFINITY);
    scratch.weight_sum[..rows].fill(0.0);
    scratch.argmax[..rows].fill(0);
    // Per-particle parts of the error bound of a dot-form logit (see `bound_terms`).
    scratch.bounds.clear();
    for xp in scratch.scaled[..particles * dim].chunks_exact(dim) {
        scratch.bounds.push(bound_terms(xp, scale.kappa));
    }
}

/// Reduce the keys of `training`, the chunk of a set of `total_points` keys whose first
/// is the set's `first_point`, into the states `prepare_queries` started for the first
/// `particles` rows.
#[inline(always)]
unsafe fn accumulate_keys<V: Lanes16, const R: usize, const FMA: bool>(
    training: &TrainingPanels,
    particles: usize,
    scale: ScoreScale,
    scratch: &mut Scratch,
    first_point: usize,
    total_points: usize,
) {
    let dim = training.dim;
    let rows = particles.div_ceil(R) * R;
    let width = training.mean_width();
    let block = block_points(dim);
    let bounds = std::mem::take(&mut scratch.bounds);
    let margin = (total_points as f32).log2() + CULL_MARGIN_BITS;
    // Culling: which panels each particle can skip (its own state only).
    let panel_count = training.padded_points() / PANEL;
    scratch.pairs += (particles * training.points) as u64;
    if let Some(balls) = &training.balls {
        let cull_margin = (training.points as f64).log2() + CULL_MARGIN_BITS as f64;
        for p in 0..particles {
            let (culled, lower) = dead_panels(
                &scratch.scaled[p * dim..(p + 1) * dim],
                scale.kappa,
                balls,
                &training.rows,
                training.row_width,
                cull_margin,
                &mut scratch.distances,
                &mut scratch.dead[p * panel_count..(p + 1) * panel_count],
            );
            scratch.culled_pairs += culled;
            // Rounded down to f32 (the bound is < 0: away from zero).
            scratch.best_floor[p] = (lower * (1.0 + 1e-6)) as f32;
        }
    }
    let culling = training.balls.is_some();
    let padded_points = training.padded_points();
    let mut start = 0;
    while start < padded_points {
        let count = block.min(padded_points - start);
        // The block's largest |a| and |a|²/2 (real points only): a particle whose error
        // bound is within the tolerance at these is within it at every pair (the bound
        // is monotone in both, rounding included), so its logits need no refinement.
        let (block_norm, block_half_norm2) = block_norms(
            &training.norm[start..start + count],
            &training.half_norm2[start..start + count],
        );
        // Tile by tile, so that the tile's block of logits stays in L1 from step 1 to 3.
        for t in 0..rows / R {
            // 1. The tile's logits of the block into the weights buffer, and each
            // particle's lane maxima.
            let tile = &scratch.tiles[t * R * dim..(t + 1) * R * dim];
            // Padding rows have no bound terms: any `q` serves them.
            let half_q: [f32; R] =
                std::array::from_fn(|r| bounds.get(t * R + r).map_or(0.0, |b| b.half_norm2));
            let mut best = [V::splat(f32::NEG_INFINITY); R];
            for j in 0..count / PANEL {
                let panel_index = start / PANEL + j;
                // A panel dead for every particle of the tile is skipped; one dead for
                // some is masked per particle in step 2.
                if culling && (0..R).all(|r| scratch.dead[(t * R + r) * panel_count + panel_index])
                {
                    continue;
                }
                let panel =
                    &training.panels[panel_index * dim * PANEL..(panel_index + 1) * dim * PANEL];
                let half_norm2 = &training.half_norm2[panel_index * PANEL..][..PANEL];
                let out = &mut scratch.weights[j * PANEL..];
                logit_tile::<V, R>(
                    tile,
                    panel,
                    half_norm2,
                    &half_q,
                    scale.kappa,
                    out,
                    block,
                    &mut best,
                );
            }
            let mut best_lanes = [[0f32; 16]; R];
            for (lanes, best) in best_lanes.iter_mut().zip(&best) {
                best.store(lanes);
            }
            // 2. Per particle: refinement where needed, online max, weights.
            for (r, bound) in bounds[t * R..].iter().take(R).enumerate() {
                let p = t * R + r;
                let w = &mut scratch.weights[r * block..r * block + count];
                let mut best = best_lanes[r];
                if culling {
                    // The particle's dead panels weigh exactly 0 (logit -inf), whether its
                    // tile computed them or not; a block dead for it is skipped whole.
                    let dead = &scratch.dead[p * panel_count + start / PANEL..][..count / PANEL];
                    if dead.iter().all(|&d| d) {
                        w.fill(0.0);
                        continue;
                    }
                    for (wp, _) in w.chunks_exact_mut(PANEL).zip(dead).filter(|(_, &d)| d) {
                        wp.fill(f32::NEG_INFINITY);
                    }
                    best = lane_maxima(w);
                }
                let (block_max, recomputed) =
                    if bound.pair::<FMA>(block_norm, block_half_norm2) > RECOMPUTE_TOLERANCE {
                        refine_logits::<FMA>(
                            w,
                            &scratch.scaled[p * dim..(p + 1) * dim],
                            training,
                            start,
                            bound,
                            scale.kappa,
                            &best,
                            // The culling's lower bound of the best true logit tightens the
                            // recompute threshold from the first block on: the panel order
                            // groups points, so the running max of the first blocks can be
                            // far below the best, and every loose pair above `running max −
                            // margin` was recomputed.
                            scratch.running_max[p].max(scratch.best_floor[p]),
                            margin,
                        )
                    } else {
                        (fold_max(&best), 0)
                    };
                scratch.recomputed += recomputed;
                let old = scratch.running_max[p];
                if block_max > old {
                    // Rescale what came before (nothing on the first block: sums are 0).
                    let keep = if old == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp2::<FMA>(old - block_max)
                    };
                    for a in &mut scratch.acc[p * width..(p + 1) * width] {
                        *a *= keep;
                    }
                    scratch.weight_sum[p] *= keep;
                    scratch.running_max[p] = block_max;
                    // The first point of the block at the max (ties: the lowest index).
                    let first = first_equal(w, block_max);
                    scratch.argmax[p] = (first_point + start + first) as u32;
                }
                let m = scratch.running_max[p];
                // With culling, also below 2^-100 of the best's lower bound: in the panel
                // order the first blocks' running max can be far below the best, and the
                // weights they keep (the weighted mean's work) would only be rescaled away.
                let cut = scratch.best_floor[p] - 100.0;
                // The weights, summed in 16 lanes (folded below in a fixed order), one
                // chunk of 16 at a time: fixed-size lanes that LLVM keeps in one register
                // (over the whole row it chose 8-wide vectors, and split the sums' lanes).
                let mut lanes = [0f32; 16];
                match &training.values {
                    // One value per point (grey-level patches): its weighted sum in the same
                    // pass, the weights never stored (12% of the patch kernel).
                    // Each weight counts its key's count times (merged identical keys;
                    // a count of 1 gives the bits of an add), and the value column holds
                    // the values times the counts.
                    Some(values) if values.width == 1 => {
                        let column = &values.columns[start..][..count];
                        let counts = &values.counts[start..][..count];
                        let mut dot = [0f32; 16];
                        for ((chunk, v16), c16) in w
                            .chunks_exact(16)
                            .zip(column.chunks_exact(16))
                            .zip(counts.chunks_exact(16))
                        {
                            let mut weight: [f32; 16] = chunk.try_into().unwrap();
                            exp_chunk::<FMA>(&mut weight, m, cut);
                            let v16: &[f32; 16] = v16.try_into().unwrap();
                            let c16: &[f32; 16] = c16.try_into().unwrap();
                            lanes =
                                std::array::from_fn(|l| mad::<FMA>(weight[l], c16[l], lanes[l]));
                            dot = std::array::from_fn(|l| mad::<FMA>(weight[l], v16[l], dot[l]));
                        }
                        // Folded from memory: seeing through, LLVM laid the lanes out for
                        // the fold's pairs and shuffled every chunk (3× slower).
                        let (folded, dot) = std::hint::black_box((lanes, dot));
                        lanes = folded;
                        scratch.acc[p * width] += fold16(&dot);
                    }
                    _ => {
                        for chunk in w.chunks_exact_mut(16) {
                            weigh_chunk::<FMA>(chunk.try_into().unwrap(), m, cut, &mut lanes);
                        }
                    }
                }
                scratch.weight_sum[p] += fold16(&lanes);
            }
            // 3'. Several narrow values per point (colour patches): per particle and value,
            // the dot product of its weights with the value column, 16 lanes folded in a
            // fixed order (the particle's own weights only, so the bits do not depend on its
            // tile mates). One value per point was summed with the weights above.
            if let Some(values) = &training.values {
                if values.width == 1 {
                    continue;
                }
                for r in 0..R.min(particles - t * R) {
                    let p = t * R + r;
                    let w = &scratch.weights[r * block..r * block + count];
                    for c in 0..values.width {
                        let column = &values.columns[c * padded_points + start..][..count];
                        // A plain 16-lane array updated whole (as the weights' sum above):
                        // through `V` and a store, LLVM split the lanes into the pairs the
                        // fold adds and shuffled them every chunk.
                        let mut lanes = [0f32; 16];
                        for (w16, v16) in w.chunks_exact(16).zip(column.chunks_exact(16)) {
                            let w16: &[f32; 16] = w16.try_into().unwrap();
                            let v16: &[f32; 16] = v16.try_into().unwrap();
                            lanes = std::array::from_fn(|l| mad::<FMA>(w16[l], v16[l], lanes[l]));
                        }
                        // Folded from memory (as above).
                        let lanes = std::hint::black_box(lanes);
                        scratch.acc[p * width + c] += fold16(&lanes);
                    }
                }
                continue;
            }
            // 3. The weighted sums of the block's rows over the points that weigh
            // something for at least one particle of the tile. Late in a trajectory
            // nearly every weight is 0 (flushed above), and those products were half the
            // flops. The skip is exact: see `canonical_zero` below.
            let rows_of_block = &training.rows[start * width..(start + count) * width];
            let weights = &scratch.weights[..R * block];
            let live = &mut scratch.live;
            // 16 points at a time: which weigh something for any particle, by OR-ing the
            // weights' bits (a weight is +0 or positive; integer lanes vectorize, `bool`
            // lanes did not), then their indices appended without a branch per point.
            live.resize(count, 0);
            let mut kept = 0;
            for base in (0..count).step_by(16) {
                let mut any = [0u32; 16];
                for r in 0..R {
                    let row = half16(weights, r * block + base);
                    any = std::array::from_fn(|l| any[l] | row[l].to_bits());
                }
                for (l, &a) in any.iter().enumerate() {
                    live[kept] = (base + l) as u32;
                    kept += (a != 0) as usize;
                }
            }
            live.truncate(kept);
            scratch.skipped_mean_points += (count - live.len()) as u64;
            let acc = &mut scratch.acc[t * R * width..(t + 1) * R * width];
            mean_tile::<V, R>(weights, block, live, rows_of_block, width, acc);
        }
        start += count;
    }
    scratch.bounds = bounds;
}

/// 16 logits turned in place into their softmax weights `2^(L − m)` against the running
/// max `m`, added to the 16 lanes of the weights' sum. Weights below 2^-100 of the max
/// are exactly 0: they move no sum by an f32 ulp, and left in, their products with the
/// points can be subnormal, which costs a microcode assist per FMA on Intel x86. So are
/// those of logits at or below `cut` (culling's floor).
#[inline(always)]
fn weigh_chunk<const FMA: bool>(chunk: &mut [f32; 16], m: f32, cut: f32, sum: &mut [f32; 16]) {
    // One loop in place: with the sum in a loop of its own, or as `array::from_fn`
    // (LLVM left that closure out of line without the caller's CPU features: `mul_add`
    // became a libm call, 25× slower), D = 64 lost 8–18%.
    for l in 0..16 {
        chunk[l] = softmax_weight::<FMA>(chunk[l], m, cut);
        sum[l] += chunk[l];
    }
}

/// 16 logits turned in place into their softmax weights (see `weigh_chunk`).
#[inline(always)]
fn exp_chunk<const FMA: bool>(chunk: &mut [f32; 16], m: f32, cut: f32) {
    for w in chunk {
        *w = softmax_weight::<FMA>(*w, m, cut);
    }
}

/// The weight `2^(logit − m)`, 0 below 2^-100 or at or below `cut`.
#[inline(always)]
fn softmax_weight<const FMA: bool>(logit: f32, m: f32, cut: f32) -> f32 {
    let d = logit - m;
    if d > -100.0 && logit > cut {
        exp2::<FMA>(d)
    } else {
        0.0
    }
}

/// Turn `-0` into `+0`, leaving every other value alone (`-0 + +0 = +0` in
/// round-to-nearest; LLVM may not fold `v + 0.0` away, it is not an identity).
///
/// Why the skip of zero weights in `score_means` is exact, and why this is needed: a
/// skipped term is `fma(+0, a, acc)` (the weights are `>= +0`, never NaN, the points
/// finite), whose exact value is `±0 + acc`: it is `acc` itself unless `acc` is a zero,
/// and a zero otherwise. So an accumulator that skips such terms and one that does not
/// stay equal up to the sign of a zero: later terms and the rescale by `keep` preserve
/// that (a sum with a non-zero term or a product of equal values is the same either
/// way). The accumulators do start at `+0`, but they *can* become `-0` (a negative sum
/// rescaled by a `keep` that underflows to 0, or a product that underflows), so the
/// argument "they never become -0" does not hold; whether a point is skipped for a
/// particle depends on its tile mates (it is skipped only when it weighs 0 for all of
/// them), so without this step the sign of a zero mean coordinate could depend on the
/// batch. Canonicalizing once per evaluation makes the results bit-identical again.
#[inline(always)]
fn canonical_zero(acc: &mut [f32]) {
    for a in acc {
        *a += 0.0;
    }
}

/// The index of the first value of `w` equal to `v` (0 if none): 16 at a time, so the
/// comparisons vectorize (an early exit per value does not).
#[inline(always)]
fn first_equal(w: &[f32], v: f32) -> usize {
    for (c, chunk) in w.chunks(16).enumerate() {
        if chunk.iter().fold(false, |hit, &x| hit | (x == v)) {
            return 16 * c + chunk.iter().position(|&x| x == v).unwrap_or(0);
        }
    }
    0
}

/// The base-2 logits the kernel uses for one particle `x` against every training point
/// (dot form with the bounded recomputes, block by block as in a step), on the portable
/// build, and the number of pairs recomputed: for the accuracy tests and measurements.
pub fn particle_logits(
    training: &TrainingPanels,
    x: &[f32],
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> (Vec<f32>, u64) {
    let dim = training.dim;
    let scale = ScoreScale::new(mean_scale, inv_two_sigma2);
    let xp: Vec<f32> = x.iter().map(|&v| v * scale.inv_scale).collect();
    let bound = bound_terms(&xp, scale.kappa);
    let margin = (training.points as f32).log2() + CULL_MARGIN_BITS;
    let block = block_points(dim);
    let padded = training.padded_points();
    let mut out = Vec::with_capacity(padded);
    let mut running_max = f32::NEG_INFINITY;
    let mut recomputed = 0;
    let mut start = 0;
    while start < padded {
        let count = block.min(padded - start);
        let mut w = vec![0f32; count];
        // SAFETY (here and below): the portable lanes need no CPU feature.
        let mut best = [unsafe { Portable16::splat(f32::NEG_INFINITY) }];
        for j in 0..count / PANEL {
            let index = start / PANEL + j;
            let panel = &training.panels[index * dim * PANEL..(index + 1) * dim * PANEL];
            let half_norm2 = &training.half_norm2[index * PANEL..][..PANEL];
            unsafe {
                logit_tile::<Portable16, 1>(
                    &xp,
                    panel,
                    half_norm2,
                    &[bound.half_norm2],
                    scale.kappa,
                    &mut w[j * PANEL..],
                    count,
                    &mut best,
                )
            };
        }
        let mut lanes = [0f32; 16];
        unsafe { best[0].store(&mut lanes) };
        let (block_max, r) = refine_logits::<false>(
            &mut w,
            &xp,
            training,
            start,
            &bound,
            scale.kappa,
            &lanes,
            running_max,
            margin,
        );
        running_max = running_max.max(block_max);
        recomputed += r;
        out.extend_from_slice(&w);
        start += count;
    }
    out.truncate(training.points);
    (out, recomputed)
}

/// `R` particles x `PANEL` points: the dot products `x'[r]·a_l`, one FMA chain per pair,
/// k in order (independent of the tile's other particles), turned in registers into
/// base-2 logits `κ ((x'·a − |a|²/2) − |x'|²/2)` (written to `out[r * stride ..][..PANEL]`),
/// and each particle's lane maxima `best[r]` updated (lane `l`: points `l`, then `l + 16`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn logit_tile<V: Lanes16, const R: usize>(
    tile: &[f32],
    panel: &[f32],
    half_norm2: &[f32],
    half_q: &[f32; R],
    kappa: f32,
    out: &mut [f32],
    stride: usize,
    best: &mut [V; R],
) {
    let mut acc = [[V::zero(); 2]; R];
    for (xk, ak) in tile.chunks_exact(R).zip(panel.chunks_exact(PANEL)) {
        let a0 = V::load(half16(ak, 0));
        let a1 = V::load(half16(ak, 16));
        for r in 0..R {
            let xv = V::splat(xk[r]);
            acc[r][0] = xv.mul_add(a0, acc[r][0]);
            acc[r][1] = xv.mul_add(a1, acc[r][1]);
        }
    }
    let h = [
        V::load(half16(half_norm2, 0)),
        V::load(half16(half_norm2, 16)),
    ];
    let kappa = V::splat(kappa);
    for (r, acc) in acc.iter().enumerate() {
        let q = V::splat(half_q[r]);
        for half in 0..2 {
            let logit = kappa.mul(acc[half].sub(h[half]).sub(q));
            logit.store(half16_mut(out, r * stride + 16 * half));
            best[r] = logit.max(best[r]);
        }
    }
}

/// `acc[r][d] += Σ_i w[r][i] a_i[d]` over the block's points listed in `live`, in order,
/// in register tiles of `R` particles x `MEAN_CHUNK` coordinates.
#[inline(always)]
unsafe fn mean_tile<V: Lanes16, const R: usize>(
    weights: &[f32],
    block: usize,
    live: &[u32],
    rows: &[f32],
    width: usize,
    acc: &mut [f32],
) {
    for d0 in (0..width).step_by(MEAN_CHUNK) {
        let mut tile = [[V::zero(); 2]; R];
        for (r, t) in tile.iter_mut().enumerate() {
            t[0] = V::load(half16(acc, r * width + d0));
            t[1] = V::load(half16(acc, r * width + d0 + 16));
        }
        for &i in live {
            let i = i as usize;
            let row = &rows[i * width..(i + 1) * width];
            let a0 = V::load(half16(row, d0));
            let a1 = V::load(half16(row, d0 + 16));
            for (r, t) in tile.iter_mut().enumerate() {
                let w = V::splat(weights[r * block + i]);
                t[0] = w.mul_add(a0, t[0]);
                t[1] = w.mul_add(a1, t[1]);
            }
        }
        for (r, t) in tile.iter().enumerate() {
            t[0].store(half16_mut(acc, r * width + d0));
            t[1].store(half16_mut(acc, r * width + d0 + 16));
        }
    }
}
