// Deposit particles on the density grid's sub-grid: the GPU twin of the split path of
// src/heatmap.rs (CPU twin in f32: src/engine/cpu/deposit.rs). Each particle adds the outer
// product of two 8-point Lagrange weight vectors, in fixed point (one unit = 2^-32 of a
// particle's peak), to the 8x8 sub-grid nodes around it. A node's sum is a 64-bit two's
// complement integer held in two u32 words (lo, hi); the carry out of the low word's
// atomic add goes into the high word, so the sums are exact modular arithmetic and do not
// depend on the order in which invocations run.

// Keep in sync with `DepositParams` in src/engine/gpu/raster.rs.
struct DepositParams {
    // Sub-grid node (s, u) sits at origin + (u, s) d.
    origin: vec2<f32>,
    inv_d: f32,
    // Stored sub-columns per sub-row.
    stride: u32,
    // Particles outside [lo, hi] do not reach the image.
    lo: vec2<f32>,
    hi: vec2<f32>,
    // Particles of this dispatch: points[first .. first + count].
    count: u32,
    first: u32,
    n_sub: u32,
    // Floats per particle row (the engine's buffer holds (P, D) rows; x, y are the first two).
    dim: u32,
    // This dispatch's tile: sub-rows row0 .. row0 + rows of the sub-grid, stored from
    // grid[0] (a sub-grid larger than one storage buffer is deposited tile by tile).
    row0: u32,
    rows: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: DepositParams;
// Row-major rows of `dim` floats, (x, y) first.
@group(0) @binding(1) var<storage, read> points: array<f32>;
// Two words (lo, hi) per sub-grid node of the tile, row-major by sub-row.
@group(0) @binding(2) var<storage, read_write> grid: array<atomic<u32>>;
// LAGRANGE[n][k] of src/heatmap.rs: row n is (k = 0..3, k = 4..7).
@group(0) @binding(3) var<uniform> lagrange: array<vec4<f32>, 16>;

const STENCIL: u32 = 8u;
const SCALE: f32 = 4294967296.0; // 2^32

// The 8 Lagrange weights at t in [0, 1): Horner's rule in tau = t - 1/2.
fn lagrange_weights(t: f32) -> array<f32, 8> {
    let tau = t - 0.5;
    var a = lagrange[14];
    var b = lagrange[15];
    for (var n = 6; n >= 0; n = n - 1) {
        a = a * tau + lagrange[2 * n];
        b = b * tau + lagrange[2 * n + 1];
    }
    return array<f32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
}

// Add v (already scaled to units, |v| <= 2^32) rounded to an integer to node `node`.
fn add_fixed(node: u32, v: f32) {
    let q = round(v);
    var add_lo = 0u;
    var add_hi = 0u;
    if (q >= 0.0) {
        if (q >= SCALE) {
            add_hi = 1u;
        } else {
            add_lo = u32(q);
        }
    } else {
        let m = -q;
        add_hi = 0xffffffffu;
        if (m < SCALE) {
            add_lo = 0u - u32(m);
        }
    }
    if (add_lo == 0u && add_hi == 0u) {
        return;
    }
    let old = atomicAdd(&grid[2u * node], add_lo);
    let carry = select(0u, 1u, old + add_lo < old);
    atomicAdd(&grid[2u * node + 1u], add_hi + carry);
}

@compute @workgroup_size(64)
fn deposit(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.count) {
        return;
    }
    let k = params.first + i;
    let p = vec2<f32>(points[params.dim * k], points[params.dim * k + 1u]);
    // NaN fails every comparison: skipped like far particles.
    if (!(all(p >= params.lo) && all(p <= params.hi))) {
        return;
    }
    let uv = (p - params.origin) * params.inv_d;
    let cell = floor(uv);
    let t = uv - cell;
    // Function-scope copies: indexed by loop counters below.
    var wx = lagrange_weights(t.x);
    var wy = lagrange_weights(t.y);
    // Nodes -3 ..= 4 around the anchor node.
    let col = u32(cell.x) - (STENCIL / 2u - 1u);
    let row = u32(cell.y) - (STENCIL / 2u - 1u);
    // Stencils wholly outside this tile's sub-rows add nothing here.
    let end = params.row0 + params.rows;
    if (row + STENCIL <= params.row0 || row >= end) {
        return;
    }
    for (var r = 0u; r < STENCIL; r = r + 1u) {
        let sub_row = row + r;
        if (sub_row < params.row0 || sub_row >= end) {
            continue;
        }
        let ly = wy[r] * SCALE;
        let base = (sub_row - params.row0) * params.stride + col;
        for (var c = 0u; c < STENCIL; c = c + 1u) {
            add_fixed(base + c, ly * wx[c]);
        }
    }
}
