//! CPU twin of `shaders/heatmap/deposit.wgsl`, in f32 like the shader: the specification
//! the GPU deposit is tested against (the production CPU path is the f64 deposit of
//! `heatmap.rs`, whose rounding differs slightly).

use crate::engine::gpu::raster::DepositParams;

const STENCIL: u32 = 8;
const SCALE: f32 = 4294967296.0; // 2^32

/// The 8 Lagrange weights at t in [0, 1): Horner's rule in tau = t - 1/2.
fn lagrange_weights(lagrange: &[[f32; 4]; 16], t: f32) -> [f32; 8] {
    let tau = t - 0.5;
    let mut a = lagrange[14];
    let mut b = lagrange[15];
    for n in (0..=6).rev() {
        for q in 0..4 {
            a[q] = a[q] * tau + lagrange[2 * n][q];
            b[q] = b[q] * tau + lagrange[2 * n + 1][q];
        }
    }
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// Add v rounded to an integer to node `node` (two u32 words, lo then hi, with carry).
fn add_fixed(grid: &mut [u32], node: u32, v: f32) {
    let q = v.round_ties_even();
    let (mut add_lo, mut add_hi) = (0u32, 0u32);
    if q >= 0.0 {
        if q >= SCALE {
            add_hi = 1;
        } else {
            add_lo = q as u32;
        }
    } else {
        let m = -q;
        add_hi = 0xffff_ffff;
        if m < SCALE {
            add_lo = 0u32.wrapping_sub(m as u32);
        }
    }
    if add_lo == 0 && add_hi == 0 {
        return;
    }
    let i = 2 * node as usize;
    let old = grid[i];
    grid[i] = old.wrapping_add(add_lo);
    let carry = u32::from(old.wrapping_add(add_lo) < old);
    grid[i + 1] = grid[i + 1].wrapping_add(add_hi.wrapping_add(carry));
}

/// The shader's `deposit` for every invocation `0..params.count`.
pub fn deposit(
    params: &DepositParams,
    lagrange: &[[f32; 4]; 16],
    points: &[f32],
    grid: &mut [u32],
) {
    for i in 0..params.count {
        let k = (params.first + i) as usize;
        let dim = params.dim as usize;
        let p = [points[dim * k], points[dim * k + 1]];
        let inside = p[0] >= params.lo[0]
            && p[1] >= params.lo[1]
            && p[0] <= params.hi[0]
            && p[1] <= params.hi[1];
        if !inside {
            continue;
        }
        let uv = [
            (p[0] - params.origin[0]) * params.inv_d,
            (p[1] - params.origin[1]) * params.inv_d,
        ];
        let cell = [uv[0].floor(), uv[1].floor()];
        let t = [uv[0] - cell[0], uv[1] - cell[1]];
        let wx = lagrange_weights(lagrange, t[0]);
        let wy = lagrange_weights(lagrange, t[1]);
        let col = (cell[0] as u32).wrapping_sub(STENCIL / 2 - 1);
        let row = (cell[1] as u32).wrapping_sub(STENCIL / 2 - 1);
        // Stencils wholly outside this tile's sub-rows add nothing here.
        let end = params.row0 + params.rows;
        if row + STENCIL <= params.row0 || row >= end {
            continue;
        }
        for r in 0..STENCIL {
            let sub_row = row + r;
            if sub_row < params.row0 || sub_row >= end {
                continue;
            }
            let ly = wy[r as usize] * SCALE;
            let base = (sub_row - params.row0) * params.stride + col;
            for c in 0..STENCIL {
                add_fixed(grid, base + c, ly * wx[c as usize]);
            }
        }
    }
}
