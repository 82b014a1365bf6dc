//! CPU twin of `shaders/nearest.wgsl` (the f32 top three per sample, same arithmetic and
//! chunk order), and the host-side step both share: recompute the candidates' distances in
//! f64 and prove that they are the exact nearest two, or fall back to brute force in f64.

use crate::metrics::{nearest_two, Neighbours};

/// No training point (an unused slot of the top three).
pub const NO_INDEX: u32 = u32::MAX;

/// Coordinates (`dim` × points) one dispatch reduces over at most: lavapipe ends any loop
/// after 65,535 iterations per invocation, and the inner loop runs `dim` times per point.
pub const CHUNK_COORDINATES: usize = 32_768;

/// Training points per chunk for dimension `dim`.
pub fn chunk_points(dim: usize) -> usize {
    (CHUNK_COORDINATES / dim.max(1)).max(1)
}

/// The top three of one sample: squared f32 distances `d[0] <= d[1] <= d[2]` (f32::MAX
/// when unused) and their indices. Same layout as `Best` in the shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Best {
    pub d: [f32; 4],
    pub i: [u32; 4],
}

impl Best {
    pub fn empty() -> Self {
        Best {
            d: [f32::MAX; 4],
            i: [NO_INDEX; 4],
        }
    }
}

/// Reduce training points `start .. start + count` (row-major f32) into `best`, as one
/// dispatch of the shader does for one sample.
pub fn nearest_chunk(
    best: &mut Best,
    sample: &[f32],
    training: &[f32],
    dim: usize,
    start: usize,
    count: usize,
) {
    for j in start..start + count {
        let t = &training[j * dim..(j + 1) * dim];
        let mut d2 = 0.0f32;
        for c in 0..dim {
            let diff = sample[c] - t[c];
            d2 += diff * diff;
        }
        let j = j as u32;
        if d2 < best.d[0] {
            best.d = [d2, best.d[0], best.d[1], 0.0];
            best.i = [j, best.i[0], best.i[1], 0];
        } else if d2 < best.d[1] {
            best.d = [best.d[0], d2, best.d[1], 0.0];
            best.i = [best.i[0], j, best.i[1], 0];
        } else if d2 < best.d[2] {
            best.d[2] = d2;
            best.i[2] = j;
        }
    }
}

/// The top three of one sample over all training points, chunk by chunk like the GPU.
pub fn nearest_three(sample: &[f32], training: &[f32], dim: usize) -> Best {
    let n = training.len() / dim;
    let mut best = Best::empty();
    let chunk = chunk_points(dim);
    let mut start = 0;
    while start < n {
        let count = chunk.min(n - start);
        nearest_chunk(&mut best, sample, training, dim, start, count);
        start += count;
    }
    best
}

/// Samples per block of [`nearest_three_blocked`]: each column of training coordinates
/// loaded serves this many samples.
const SCREEN_ROWS: usize = 8;
/// Training points per tile of [`nearest_three_blocked`]: a block's partial squared
/// distances (`SCREEN_ROWS` x `SCREEN_TILE` f32, 16 KiB) stay in L1.
const SCREEN_TILE: usize = 512;

/// Row-major f64 training points as f32 columns (`columns[c * n + i]`), the layout
/// [`nearest_three_blocked`] streams.
pub fn columns_f32(training: &[f64], dim: usize) -> Vec<f32> {
    let n = training.len() / dim;
    let mut out = vec![0f32; n * dim];
    for (i, t) in training.chunks_exact(dim).enumerate() {
        for (c, &v) in t.iter().enumerate() {
            out[c * n + i] = v as f32;
        }
    }
    out
}

/// [`nearest_three`] of each row of `samples` (row-major, `dim` wide), the same f32
/// distances (each summed over coordinates from the first) and the same updates in point
/// order, so the same [`Best`]; organised as a blocked sample x point reduction: the
/// training coordinates (`columns`, see [`columns_f32`]) stream once per block of
/// `SCREEN_ROWS` samples and tile of points, the inner loop runs over points (vectorised).
pub fn nearest_three_blocked(samples: &[f32], columns: &[f32], dim: usize) -> Vec<Best> {
    let n = columns.len() / dim;
    let mut out = Vec::with_capacity(samples.len() / dim);
    let mut d2 = vec![[0f32; SCREEN_TILE]; SCREEN_ROWS];
    for block in samples.chunks(SCREEN_ROWS * dim) {
        let rows = block.len() / dim;
        let mut best = [Best::empty(); SCREEN_ROWS];
        for start in (0..n).step_by(SCREEN_TILE) {
            let len = SCREEN_TILE.min(n - start);
            for acc in &mut d2[..rows] {
                acc[..len].fill(0.0);
            }
            for c in 0..dim {
                let column = &columns[c * n + start..c * n + start + len];
                for (acc, x) in d2.iter_mut().zip(block.chunks_exact(dim)) {
                    let xc = x[c];
                    for (a, &t) in acc[..len].iter_mut().zip(column) {
                        let diff = xc - t;
                        *a += diff * diff;
                    }
                }
            }
            for (best, acc) in best.iter_mut().zip(&d2[..rows]) {
                for (k, &d) in acc[..len].iter().enumerate() {
                    if d < best.d[2] {
                        let j = (start + k) as u32;
                        if d < best.d[0] {
                            best.d = [d, best.d[0], best.d[1], 0.0];
                            best.i = [j, best.i[0], best.i[1], 0];
                        } else if d < best.d[1] {
                            best.d = [best.d[0], d, best.d[1], 0.0];
                            best.i = [best.i[0], j, best.i[1], 0];
                        } else {
                            best.d[2] = d;
                            best.i[2] = j;
                        }
                    }
                }
            }
        }
        out.extend_from_slice(&best[..rows]);
    }
    out
}

/// Largest Euclidean norm of the training points (for [`f32_error_bounds`]).
pub fn max_norm(training: &[f64], dim: usize) -> f64 {
    training
        .chunks(dim)
        .map(|t| t.iter().map(|v| v * v).sum::<f64>().sqrt())
        .fold(0.0, f64::max)
}

/// Error bounds relating the shader's (or twin's) f32 squared distance `d2_f32` to the
/// exact f64 distance `d` to a training point, for a sample `x` and training points of
/// norm at most `R`: `d >= sqrt(d2_f32 / (1 + gamma)) - e`. Per coordinate the f32
/// difference carries the rounding of the training point to f32 and of the subtraction,
/// `2^-24 (|t_c| + |x_c - t_c|)`, so the difference vector is off by at most
/// `e = 2^-24 (2 R + |x|)`; squaring and summing `dim` terms in f32 is off by a factor of at
/// most `1 + (dim + 2) 2^-24`. Both are taken 4 times larger (a GPU may fuse or reorder;
/// denormals may be flushed). Returns `(gamma, e)`.
pub fn f32_error_bounds(sample: &[f32], dim: usize, training_max_norm: f64) -> (f64, f64) {
    let norm = sample
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    let gamma = 4.0 * (dim as f64 + 2.0) * 2f64.powi(-24);
    let e = 4.0 * 2f64.powi(-24) * (2.0 * training_max_norm + norm) + 1e-18;
    (gamma, e)
}

/// The exact nearest two of `sample` from its f32 top three: the three candidates'
/// distances are recomputed in f64; every other training point has an f32 distance at
/// least the third candidate's, so an exact distance at least the bound of
/// [`f32_error_bounds`] applied to it.
/// When the second-best f64 candidate is strictly below that, the candidates' top two is
/// the exact top two (ties between candidates go to the lowest index, as in brute force);
/// otherwise (near-ties with a fourth point, overflow) the sample is done by brute force in
/// f64. The second value says whether brute force was needed.
pub fn exact_neighbours(
    training: &[f64],
    dim: usize,
    training_max_norm: f64,
    sample: &[f32],
    best: &Best,
) -> (Neighbours, bool) {
    let n = training.len() / dim;
    let d2 = |j: u32| -> f64 {
        let t = &training[j as usize * dim..(j as usize + 1) * dim];
        t.iter()
            .zip(sample)
            .map(|(&a, &b)| (b as f64 - a).powi(2))
            .sum()
    };
    let mut cands: Vec<(f64, u32)> = best.i[..3]
        .iter()
        .filter(|&&j| j != NO_INDEX && (j as usize) < n)
        .map(|&j| (d2(j), j))
        .collect();
    let expected = n.min(3);
    if cands.len() < expected {
        return (nearest_two(training, dim, sample), true);
    }
    cands.sort_by(|a, b| a.partial_cmp(b).expect("finite distances"));
    let proven = n <= 3 || {
        let (gamma, e) = f32_error_bounds(sample, dim, training_max_norm);
        let floor = (best.d[2] as f64 / (1.0 + gamma)).sqrt() - e;
        cands[1].0.sqrt() < floor
    };
    if !proven {
        return (nearest_two(training, dim, sample), true);
    }
    let second = cands.get(1).copied();
    (
        Neighbours {
            nearest: cands[0].1,
            d1: cands[0].0.sqrt(),
            second: second.map(|c| c.1),
            d2: second.map_or(f64::INFINITY, |c| c.0.sqrt()),
        },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_then_exact_equals_brute_force() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for (n, dim) in [(1usize, 2usize), (2, 3), (3, 1), (40_000, 1), (500, 5)] {
            let mut training: Vec<f64> = (0..n * dim).map(|_| next()).collect();
            if n > 10 {
                // Exact duplicates and a near-duplicate: ties and near-ties.
                let p: Vec<f64> = training[..dim].to_vec();
                training[dim..2 * dim].copy_from_slice(&p);
                training[2 * dim] = p[0] + 1e-9;
            }
            let t32: Vec<f32> = training.iter().map(|&v| v as f32).collect();
            let norm = max_norm(&training, dim);
            let mut samples: Vec<f32> = (0..300 * dim).map(|_| next() as f32).collect();
            samples[..dim].copy_from_slice(&t32[..dim]);
            let mut fallbacks = 0;
            let blocked = nearest_three_blocked(&samples, &columns_f32(&training, dim), dim);
            for (x, screened) in samples.chunks(dim).zip(&blocked) {
                let best = nearest_three(x, &t32, dim);
                assert_eq!(*screened, best, "blocked screening, n {n} dim {dim}");
                let (nb, fell) = exact_neighbours(&training, dim, norm, x, &best);
                fallbacks += fell as usize;
                assert_eq!(nb, nearest_two(&training, dim, x), "n {n} dim {dim}");
            }
            assert!(fallbacks < 30, "{fallbacks} fallbacks");
        }
    }
}
