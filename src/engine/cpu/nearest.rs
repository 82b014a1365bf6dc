//! CPU twin of `shaders/nearest.wgsl`: the f32 top three per sample, same arithmetic and
//! chunk order. The host-side exact step both this twin and the GPU stage feed is in
//! `engine::nearest`.

use crate::engine::nearest::{chunk_points, Best};

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
/// `SCREEN_ROWS` samples and tile of points, the inner loop runs over points (vectorised,
/// as wide as the instruction set `MEMODIFF_CPU_ISA` selects: the same sums lane by lane,
/// so the same results on every one).
pub fn nearest_three_blocked(samples: &[f32], columns: &[f32], dim: usize) -> Vec<Best> {
    nearest_three_blocked_on(crate::isa::Isa::for_exact_kernels(), samples, columns, dim)
}

crate::isa::isa_dispatch! {
    /// [`nearest_three_blocked`] compiled for `isa`. Measured at D = 784, N = 10,000,
    /// P = 1,000 on the AMD EPYC: the run's outputs took 0.69-0.70 s with the baseline
    /// (SSE2) build of this loop, 0.46-0.48 s with AVX-512.
    fn nearest_three_blocked_on(samples: &[f32], columns: &[f32], dim: usize) -> Vec<Best> {
        Avx512 => nearest_three_blocked_generic(samples, columns, dim),
        Avx2 => nearest_three_blocked_generic(samples, columns, dim),
        Portable => nearest_three_blocked_generic(samples, columns, dim),
    }
}

#[inline(always)]
fn nearest_three_blocked_generic(samples: &[f32], columns: &[f32], dim: usize) -> Vec<Best> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nearest::nearest_two;
    use crate::engine::nearest::{exact_neighbours, max_norm};

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
