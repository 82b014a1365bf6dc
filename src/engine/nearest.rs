//! What the nearest-neighbour stages share, on the GPU (`gpu::nearest`) and in its CPU
//! twin (`cpu::nearest`): the layout of a sample's f32 top three and the chunking of the
//! training points, and the host-side step after either: recompute the candidates'
//! distances in f64 and prove that they are the exact nearest two, or fall back to brute
//! force in f64.

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
    /// The smallest squared distances, ascending (`inf` when unused).
    pub d: [f32; 4],
    /// Their training indices (`NO_INDEX` when unused).
    pub i: [u32; 4],
}

impl Best {
    /// No neighbour yet.
    pub fn empty() -> Self {
        Best {
            d: [f32::MAX; 4],
            i: [NO_INDEX; 4],
        }
    }
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

/// Nearest and second-nearest training points of one sample and their Euclidean distances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbours {
    pub nearest: u32,
    pub d1: f64,
    /// `None` when there is a single training point (then `d2` is infinite).
    pub second: Option<u32>,
    pub d2: f64,
}

/// Nearest two of row-major `(n, dim)` f64 `training` for `sample` (all finite), squared
/// distances in f64, ties to the lowest index.
pub fn nearest_two(training: &[f64], dim: usize, sample: &[f32]) -> Neighbours {
    let mut best = (u32::MAX, f64::INFINITY);
    let mut second = (u32::MAX, f64::INFINITY);
    for (i, t) in training.chunks_exact(dim).enumerate() {
        let mut d2 = 0.0f64;
        for (&s, &tv) in sample.iter().zip(t) {
            let d = s as f64 - tv;
            d2 += d * d;
        }
        if d2 < best.1 {
            second = best;
            best = (i as u32, d2);
        } else if d2 < second.1 {
            second = (i as u32, d2);
        }
    }
    Neighbours {
        nearest: best.0,
        d1: best.1.sqrt(),
        second: (second.0 != u32::MAX).then_some(second.0),
        d2: second.1.sqrt(),
    }
}
