//! Kernel weights along one axis: `exp(-(d0 + j step)^2 / (2 h^2))` for runs of evenly
//! spaced nodes, from two `exp` calls and a table of the particle-independent factors,
//! in an order fixed by the grid's shape (shared by the direct path and the fold).

/// `exp(-(j step)^2 inv2h2)` for `j = 0..n`: the part of the kernel weights that does not
/// depend on the particle.
pub(super) fn square_table(n: usize, step: f64, inv2h2: f64) -> Vec<f64> {
    (0..n)
        .map(|j| {
            let d = j as f64 * step;
            (-(d * d) * inv2h2).exp()
        })
        .collect()
}

/// `out[j] = exp(-(nodes[j] - p)^2 inv2h2)` for `nodes[j] = nodes[0] + j step` (a slice of a
/// `linspace`, `step` negative for decreasing nodes), `table` from [`square_table`].
///
/// With `d0 = nodes[0] - p`: `exp(-(d0 + j s)^2 a) = exp(-d0^2 a) * B^j * table[j]`,
/// `B = exp(-2 d0 s a)`. Two `exp` a call; the powers `B^j` come from four independent
/// product chains (`B^(j+4) = B^j B^4`), so the loop is short-latency and vectorizable.
/// Relative error: a few ulps times `j / 4`. Falls back to one `exp` a node where the
/// factors could leave the f64 range (nodes far apart relative to the bandwidth).
#[inline(always)]
pub(super) fn kernel_weights(
    nodes: &[f64],
    p: f64,
    step: f64,
    inv2h2: f64,
    table: &[f64],
    out: &mut Vec<f64>,
) {
    let n = nodes.len();
    out.clear();
    out.resize(n, 0.0);
    let span = n as f64 * step;
    if n < 8 || span * span * inv2h2 > 300.0 || table.len() < n {
        for (o, &t) in out.iter_mut().zip(nodes) {
            let d = t - p;
            *o = (-(d * d) * inv2h2).exp();
        }
        return;
    }
    let d0 = nodes[0] - p;
    let a = (-(d0 * d0) * inv2h2).exp();
    let b = (-2.0 * d0 * step * inv2h2).exp();
    let b2 = b * b;
    let b4 = b2 * b2;
    let mut pw = [a, a * b, a * b2, a * b2 * b];
    let mut out_chunks = out.chunks_exact_mut(4);
    let mut table_chunks = table[..n].chunks_exact(4);
    for (o, t) in (&mut out_chunks).zip(&mut table_chunks) {
        for k in 0..4 {
            o[k] = pw[k] * t[k];
            pw[k] *= b4;
        }
    }
    for ((o, t), pwk) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(table_chunks.remainder())
        .zip(pw)
    {
        *o = pwk * t;
    }
}

/// `out[j] = exp(-(d0 + j step)^2 inv2h2)`, `table` from [`square_table`] (at least as long).
///
/// The split path's version of [`kernel_weights`], eight product chains wide:
/// `exp(-d0^2 a) * B^j * table[j]` with `B = exp(-2 d0 step a)` and `B^(j+8) = B^j B^8`.
/// Relative error: a few ulps times `j / 8`. Falls back to one `exp` a node where the
/// factors could leave the f64 range.
#[inline(always)]
pub(super) fn gauss_into(d0: f64, step: f64, inv2h2: f64, table: &[f64], out: &mut [f64]) {
    let n = out.len();
    let span = n as f64 * step;
    if n < 8 || span * span * inv2h2 > 300.0 || table.len() < n {
        for (j, o) in out.iter_mut().enumerate() {
            let d = d0 + j as f64 * step;
            *o = (-(d * d) * inv2h2).exp();
        }
        return;
    }
    let a = (-(d0 * d0) * inv2h2).exp();
    let b = (-2.0 * d0 * step * inv2h2).exp();
    let mut pw = [a; 8];
    for k in 1..8 {
        pw[k] = pw[k - 1] * b;
    }
    let b2 = b * b;
    let b4 = b2 * b2;
    let b8 = b4 * b4;
    let mut out_chunks = out.chunks_exact_mut(8);
    let mut table_chunks = table[..n].chunks_exact(8);
    for (o, t) in (&mut out_chunks).zip(&mut table_chunks) {
        for k in 0..8 {
            o[k] = pw[k] * t[k];
            pw[k] *= b8;
        }
    }
    for ((o, t), pwk) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(table_chunks.remainder())
        .zip(pw)
    {
        *o = pwk * t;
    }
}
