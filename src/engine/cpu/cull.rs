//! Exact culling for the attention kernel: a clustering of the training set into balls of
//! one panel (`PANEL` = 32 points) each, and per particle the panels whose every weight
//! is provably below `2^-(log2 N + 25)` of the particle's best, which the kernel then
//! skips (all of them together move the softmax sum by less than 2^-25 of it).
//!
//! Determinism: the clustering is a function of the training set only (a recursive
//! median split with a total order on the keys), and a panel's fate for a particle
//! depends only on that particle's own `x'` and `κ`, never on the batch, the work item
//! or the tile mates. So results stay bit-identical across batch sizes, shards and
//! resume with culling on.

use super::attention::PANEL;
use super::logit_bounds::direct_distance2;

/// Positions of the training points in panel order: `order[position] = original index`.
/// A recursive split of the index range, each time along the coordinate of largest
/// variance, at a whole number of panels (the left half takes `floor(panels / 2)` full
/// panels), ties broken by the original index; a leaf (one panel) lists its points in
/// their original order. Only the last panel can be partial. Identical points keep
/// their original relative order (same keys everywhere, index tie-break), so the
/// kernel's "lowest index among ties" argmax still picks the lowest original index among
/// duplicates.
pub fn panel_order(points: &[f64], dim: usize) -> Vec<u32> {
    let n = points.len() / dim;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let value = |i: u32, k: usize| points[i as usize * dim + k] as f32 as f64;
    // An explicit stack instead of recursion: depth is log2(N / 32), but cheap either way.
    let mut stack = vec![(0usize, n)];
    while let Some((lo, hi)) = stack.pop() {
        let part = &mut order[lo..hi];
        if part.len() <= PANEL {
            part.sort_unstable();
            continue;
        }
        // Per coordinate mean, then sum of squared deviations, point by point (rows are
        // contiguous; a coordinate at a time would miss the cache on every point).
        let mut mean = vec![0f64; dim];
        for &i in part.iter() {
            for (m, &v) in mean.iter_mut().zip(&points[i as usize * dim..][..dim]) {
                *m += v as f32 as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= part.len() as f64);
        let mut spread = vec![0f64; dim];
        for &i in part.iter() {
            for ((s, &m), &v) in spread
                .iter_mut()
                .zip(&mean)
                .zip(&points[i as usize * dim..][..dim])
            {
                *s += (v as f32 as f64 - m).powi(2);
            }
        }
        // The first coordinate of largest spread.
        let k = spread
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (k, &s)| {
                if s > best.1 {
                    (k, s)
                } else {
                    best
                }
            })
            .0;
        let left = part.len().div_ceil(PANEL) / 2 * PANEL;
        part.select_nth_unstable_by(left, |&a, &b| {
            value(a, k).total_cmp(&value(b, k)).then(a.cmp(&b))
        });
        stack.push((lo + left, hi));
        stack.push((lo, lo + left));
    }
    order
}

/// One ball per panel: a centre and a radius that contains every real point of the
/// panel, computed in f64 and rounded outward. The centre is the panel's own point
/// nearest to its mean: being a training point, its distance also bounds the particle's
/// best logit from below far more tightly than `d + r` would (at the price of a radius
/// somewhat larger than the mean's).
#[derive(Debug, Clone)]
pub struct PanelBalls {
    pub dim: usize,
    /// `[panel][dim]`, row-major.
    pub centres: Vec<f32>,
    pub radii: Vec<f64>,
    /// Real points per panel (32 but for a partial last panel).
    pub counts: Vec<u32>,
}

impl PanelBalls {
    /// `points` in panel order (row-major, f64 values the kernel rounds to f32).
    pub fn new(points: &[f64], dim: usize) -> Self {
        let n = points.len() / dim;
        let panels = n.div_ceil(PANEL);
        let mut centres = vec![0f32; panels * dim];
        let mut radii = vec![0f64; panels];
        let mut counts = vec![0u32; panels];
        // sqrt and a sum of D squares in f64: relative error below (D + 4) ε.
        let outward = 1.0 + (dim as f64 + 4.0) * f64::EPSILON;
        for j in 0..panels {
            let members = &points[j * PANEL * dim..((j + 1) * PANEL).min(n) * dim];
            let count = members.len() / dim;
            counts[j] = count as u32;
            let mean: Vec<f64> = (0..dim)
                .map(|k| {
                    let sum: f64 = members.chunks_exact(dim).map(|a| a[k] as f32 as f64).sum();
                    sum / count as f64
                })
                .collect();
            let distance2 = |a: &[f64], c: &[f64]| -> f64 {
                a.iter()
                    .zip(c)
                    .map(|(&v, &c)| (v as f32 as f64 - c).powi(2))
                    .sum()
            };
            // The first of the points nearest to the mean.
            let (nearest, _) =
                members
                    .chunks_exact(dim)
                    .enumerate()
                    .fold((0, f64::INFINITY), |best, (i, a)| {
                        let d = distance2(a, &mean);
                        if d < best.1 {
                            (i, d)
                        } else {
                            best
                        }
                    });
            let centre = &mut centres[j * dim..(j + 1) * dim];
            for (c, &v) in centre.iter_mut().zip(&members[nearest * dim..]) {
                *c = v as f32;
            }
            let far = members
                .chunks_exact(dim)
                .map(|a| {
                    a.iter()
                        .zip(centre.iter())
                        .map(|(&v, &c)| (v as f32 as f64 - c as f64).powi(2))
                        .sum::<f64>()
                })
                .fold(0f64, f64::max);
            radii[j] = far.sqrt() * outward;
        }
        Self {
            dim,
            centres,
            radii,
            counts,
        }
    }

    pub fn panels(&self) -> usize {
        self.radii.len()
    }
}

/// Mark in `dead` (one entry per panel) the panels whose every point's true base-2 logit
/// `−κ |x' − a|² / 2` lies more than `margin` below a lower bound of the particle's best
/// true logit, and return the number of real points they hold.
///
/// `|x' − c|²` is computed in f32 (`direct_distance2`: differences, squares and a sum of
/// non-negative terms, so its relative error is at most `γ_(D+3)`); the rest in f64 with
/// a slack far above its rounding. Per panel, with `d` the distance to the centre and
/// `r` the radius: every point's logit is at most `−κ max(0, d − r)² / 2`. The
/// particle's best logit is at least that of any training point: of the nearest centre
/// (a training point; the first among ties) and of every point of its panel, whose
/// distances are computed for that: the centres alone bound it too loosely once the
/// particle sits near one point of a panel.
/// `rows`: the points in panel order, row-major, rows of `row_width`. Returns the number
/// of points culled and the lower bound of the particle's best true logit.
/// Inlined into the kernel's `#[target_feature]` wrappers, so that the distances use
/// their vector width (called on its own, it ran on SSE2 and took a fifth of the time).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn dead_panels(
    xp: &[f32],
    kappa: f32,
    balls: &PanelBalls,
    rows: &[f32],
    row_width: usize,
    margin: f64,
    distances: &mut [f64],
    dead: &mut [bool],
) -> (u64, f64) {
    let dim = balls.dim;
    let u = f32::EPSILON as f64 / 2.0;
    let terms = dim as f64 + 4.0;
    let gamma = terms * u / (1.0 - terms * u);
    let kappa = kappa as f64;
    // Below the f32 normal range the relative bound fails; an absolute term covers it.
    let tiny = terms * f64::from_bits(0x36a0_0000_0000_0000); // 2^-149
    let mut nearest = (0usize, f64::INFINITY);
    for (j, d) in distances.iter_mut().enumerate() {
        let computed = direct_distance2(xp, &balls.centres[j * dim..(j + 1) * dim]) as f64;
        if computed < nearest.1 {
            nearest = (j, computed);
        }
        *d = computed;
    }
    // The best true logit is at least any training point's: the nearest centre's and
    // those of its panel's points.
    let (j, mut best) = nearest;
    for i in j * PANEL..j * PANEL + balls.counts[j] as usize {
        let computed = direct_distance2(xp, &rows[i * row_width..i * row_width + dim]) as f64;
        best = best.min(computed);
    }
    let lower = -0.5 * kappa * (best / (1.0 - gamma) + tiny) * (1.0 + 1e-15);
    // The slack covers the f64 rounding of everything below (a few ulps relative) many
    // times over.
    let threshold = lower - margin - 1e-9 * (lower.abs() + 1.0);
    // A panel's bound `−κ max(0, d_lo − r)² / 2` is below the threshold (< 0) exactly
    // when `d_lo > r + reach`; with `d_lo² = computed · shrink`, no square root per panel.
    let reach = (-2.0 * threshold / kappa).sqrt();
    let shrink = (1.0 - 1e-15) * (1.0 - 1e-15) / (1.0 + gamma);
    let mut culled = 0u64;
    for (j, (&computed, dead)) in distances.iter().zip(dead.iter_mut()).enumerate() {
        let limit = balls.radii[j] + reach;
        *dead = computed * shrink > limit * limit;
        if *dead {
            culled += balls.counts[j] as u64;
        }
    }
    (culled, lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg_points(n: usize, dim: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n * dim)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn panel_order_is_a_permutation_with_duplicates_in_index_order() {
        let dim = 3;
        let mut points = lcg_points(100, dim, 1);
        // Points 10, 50 and 99 are identical.
        for i in [50, 99] {
            let (a, b) = points.split_at_mut(i * dim);
            b[..dim].copy_from_slice(&a[10 * dim..11 * dim]);
        }
        let order = panel_order(&points, dim);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        let at = |i: u32| order.iter().position(|&o| o == i).unwrap();
        assert!(at(10) < at(50) && at(50) < at(99), "{order:?}");
    }

    #[test]
    fn balls_contain_their_points_and_dead_panels_are_far() {
        let dim = 7;
        let n = 200;
        // 7 tight blobs (radius 0.02) around random centres.
        let blobs = lcg_points(7, dim, 3);
        let raw: Vec<f64> = lcg_points(n, dim, 2)
            .chunks_exact(dim)
            .enumerate()
            .flat_map(|(i, a)| {
                let c = &blobs[(i % 7) * dim..(i % 7 + 1) * dim];
                a.iter()
                    .zip(c)
                    .map(|(&v, &c)| c + 0.01 * v)
                    .collect::<Vec<_>>()
            })
            .collect();
        let order = panel_order(&raw, dim);
        let points: Vec<f64> = order
            .iter()
            .flat_map(|&i| raw[i as usize * dim..(i as usize + 1) * dim].to_vec())
            .collect();
        let balls = PanelBalls::new(&points, dim);
        assert_eq!(balls.panels(), 7);
        assert_eq!(balls.counts.iter().sum::<u32>(), n as u32);
        for (i, a) in points.chunks_exact(dim).enumerate() {
            let j = i / PANEL;
            let c = &balls.centres[j * dim..(j + 1) * dim];
            let d: f64 = a
                .iter()
                .zip(c)
                .map(|(&v, &c)| (v as f32 as f64 - c as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(d <= balls.radii[j], "point {i} outside its ball");
        }
        // A particle on point 0 at a sharp posterior: some panels die, and every point of
        // a dead panel is more than the margin below the best point, in f64.
        let kappa = 2000.0f32;
        let margin = (n as f64).log2() + 25.0;
        let xp: Vec<f32> = points[..dim].iter().map(|&v| v as f32).collect();
        let mut distances = vec![0f64; balls.panels()];
        let mut dead = vec![false; balls.panels()];
        let rows: Vec<f32> = points.iter().map(|&v| v as f32).collect();
        let (culled, lower) = dead_panels(
            &xp,
            kappa,
            &balls,
            &rows,
            dim,
            margin,
            &mut distances,
            &mut dead,
        );
        assert!(culled > 0, "nothing culled");
        assert!(!dead[0], "the particle's own panel died");
        let logit = |a: &[f64]| {
            -0.5 * kappa as f64
                * a.iter()
                    .zip(&xp)
                    .map(|(&v, &x)| (v as f32 as f64 - x as f64).powi(2))
                    .sum::<f64>()
        };
        let best = points
            .chunks_exact(dim)
            .map(logit)
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            lower <= best,
            "lower bound {lower} above the best logit {best}"
        );
        for (i, a) in points.chunks_exact(dim).enumerate() {
            if dead[i / PANEL] {
                assert!(logit(a) < best - margin, "point {i} culled too close");
            }
        }
        // At a wide posterior nothing dies.
        let (culled, _) = dead_panels(
            &xp,
            0.01,
            &balls,
            &rows,
            dim,
            margin,
            &mut distances,
            &mut dead,
        );
        assert_eq!(culled, 0);
    }
}
