// The general-D reduction (any D up to MAX_COLUMNS * 4 = 4096), shaped like flash
// attention: a workgroup of GENERAL_WG invocations owns a tile of GENERAL_PARTICLES
// particles (queries) and streams the training points (keys = values) a tile of
// GENERAL_TILE at a time, so each training point is read once per particle tile instead
// of once per particle. Per tile of points:
// - logits: invocation k owns point k of the tile and computes its squared distance to
//   every particle of the tile (a GENERAL_PARTICLES-wide register tile), the particles'
//   coordinates read from workgroup memory a block of GENERAL_X_COLUMNS columns at a
//   time (loaded once per dispatch when D fits one block);
// - online softmax: invocation r < GENERAL_PARTICLES takes particle r's tile max; every
//   invocation turns its point's potentials into weights exp(pot - max); invocation r
//   sums r's weights in point order and merges the tile into r's running (max, sum),
//   publishing the merge factors (keep, take);
// - output: invocation c owns column c (and c + GENERAL_WG, ...) of every particle of
//   the tile and adds the tile's weighted sums of its columns into its accumulators.
// Every loop that reads memory at addresses that differ between invocations reuses each
// value for the whole particle tile from registers, and the inner loops read workgroup
// memory at addresses common to all invocations, outside divergent branches: a hardware
// GPU broadcasts those, and a software rasterizer (lavapipe) loads them once instead of
// once per invocation. The particle tile is held 4 particles to a vec4 (group g holds
// particles 4g .. 4g + 3) and the register tiles as mat4x4 with written-out group
// accesses, not as arrays indexed in loops: lavapipe keeps those in registers, while
// it turns a loop-indexed local array into memory accesses per invocation.
// Per particle the arithmetic and its order are those of the CPU twin: distance lanes of
// 4 summed in column order then ((x + y) + z) + w, tiles of GENERAL_TILE points, max,
// weights, in-order sums, merge like online_softmax_merge (common/score.wgsl).
// The state is carried between chunk dispatches in `softmax_state` as (D/4 + 1) vec4 per
// particle: (running_max, weight_sum, 0, 0), then the weighted columns.
// CPU twin: src/engine/cpu/reduce_general.rs — keep the arithmetic order in sync.
// Needs the bindings of common/step_bindings.wgsl (`particles` rows of D, `training` each
// point padded with zeros to D/4 rounded up vec4) and FLT_MAX from common/score.wgsl; the
// stage file declares `step` (with mean_scale and inv_two_sigma2) and `fn finish_column(i:
// u32, base: u32, c: u32, x: vec4<f32>, m: vec4<f32>)`, what it does with column c of
// particle i (row at `base`) at the last chunk. The stage's entry point is here, named by
// `Stage::source` (src/engine/gpu/shaders.rs) after the stage.

// Keep in sync with GENERAL_WG, GENERAL_TILE, GENERAL_PARTICLES, GENERAL_X_COLUMNS and
// MAX_DIMENSION in src/engine/records.rs.
const GENERAL_WG: u32 = 64u;
const GENERAL_TILE: u32 = 64u;
const GENERAL_PARTICLES: u32 = 16u;
// Columns of the particle tile held in workgroup memory at a time (16 particles x 16
// columns x 16 bytes = 4 KiB; 12.4 KiB in all, under WebGPU's guaranteed 16 KiB).
const GENERAL_X_COLUMNS: u32 = 16u;
const MAX_COLUMNS: u32 = 1024u;
// Columns one invocation owns at most (of every particle of the tile): MAX_COLUMNS /
// GENERAL_WG. The engine replaces this line with the bound of the problem's D
// (`Stage::source_for_dim` in src/engine/gpu/shaders.rs) so that hardware keeps the
// accumulators in registers.
const OWNED: u32 = 16u;

var<workgroup> tile_x: array<vec4<f32>, 256>; // [(column * 4 + lane) * 4 + group]
var<workgroup> tile_pot: array<vec4<f32>, 256>; // [point * 4 + group]
var<workgroup> tile_weight: array<vec4<f32>, 256>; // [point * 4 + group]
// Per particle of the tile: the tile max and the merge factors, 4 particles to a vec4 (one
// load per group where they are read: llvmpipe loads workgroup memory lane by lane, each
// load a loop), and the running weight sum.
var<workgroup> tile_max: array<vec4<f32>, 4>;
var<workgroup> tile_keep: array<vec4<f32>, 4>;
var<workgroup> tile_take: array<vec4<f32>, 4>;
var<workgroup> tile_weight_sum: array<f32, GENERAL_PARTICLES>;

struct GeneralState {
    // Of particle lid (invocations lid < GENERAL_PARTICLES only).
    running_max: f32,
    weight_sum: f32,
    // With the posterior tap only (TAP): the first training index of the largest
    // potential (running_max is that potential: the max is exact here, not a reference).
    best_index: u32,
    // weighted[j].g<g>[p]: column lid + j * GENERAL_WG of particle 4 g + p. Read and
    // written at a dynamic particle only through column_of / with_column, which index
    // with constants: a dynamic index into a private array makes llvmpipe (lavapipe) keep
    // the whole array in memory, read and written lane by lane in the hot loop.
    weighted: array<DistanceTile, OWNED>,
}

fn columns_of(dim: u32) -> u32 {
    return (dim + 3u) / 4u;
}

// Coordinate d of the particle whose row starts at `base`, 0 beyond D. No loop: every
// loop iteration counts against lavapipe's limit.
fn particle_value(base: u32, d: u32) -> f32 {
    if (d < run.dim) {
        return particles[base + d];
    }
    return 0.0;
}

fn particle_column(base: u32, c: u32) -> vec4<f32> {
    let d = 4u * c;
    return vec4<f32>(
        particle_value(base, d),
        particle_value(base, d + 1u),
        particle_value(base, d + 2u),
        particle_value(base, d + 3u),
    );
}

// Coordinate d of particle first_particle + q, 0 past the batch or past D.
fn tile_particle_value(first_particle: u32, q: u32, d: u32) -> f32 {
    let i = first_particle + q;
    if (i < run.batch_len) {
        return particle_value(i * run.dim, d);
    }
    return 0.0;
}

// Columns first_column .. first_column + width of the tile's particles into tile_x,
// coordinate by coordinate, 4 particles to a vec4 (zeros past the block).
fn load_particle_block(first_particle: u32, lid: u32, first_column: u32, width: u32) {
    for (var e = lid; e < GENERAL_PARTICLES * GENERAL_X_COLUMNS; e += GENERAL_WG) {
        let g = e % 4u;
        let lane = (e / 4u) % 4u;
        let c = e / 16u;
        var x = vec4<f32>(0.0);
        if (c < width) {
            let d = 4u * (first_column + c) + lane;
            x = vec4<f32>(
                tile_particle_value(first_particle, 4u * g, d),
                tile_particle_value(first_particle, 4u * g + 1u, d),
                tile_particle_value(first_particle, 4u * g + 2u, d),
                tile_particle_value(first_particle, 4u * g + 3u, d),
            );
        }
        tile_x[e] = x;
    }
}

// acc[lane] += (x - scaled[lane])^2 for the 4 particles of group g at column c of the
// block: each particle's distance summed in 4 lanes, like the twin.
fn add_distances(acc: mat4x4<f32>, c: u32, g: u32, scaled: vec4<f32>) -> mat4x4<f32> {
    let at = c * 16u + g;
    return add_distances_of(acc, tile_x[at], tile_x[at + 4u], tile_x[at + 8u], tile_x[at + 12u], scaled);
}

// The same from the group's 4 coordinates of the column (x0: coordinate 0 of the 4
// particles, ...), however they were read (common/general_lanes_*.wgsl).
fn add_distances_of(
    acc: mat4x4<f32>,
    x0: vec4<f32>,
    x1: vec4<f32>,
    x2: vec4<f32>,
    x3: vec4<f32>,
    scaled: vec4<f32>,
) -> mat4x4<f32> {
    let d0 = x0 - scaled.x;
    let d1 = x1 - scaled.y;
    let d2 = x2 - scaled.z;
    let d3 = x3 - scaled.w;
    return mat4x4<f32>(acc[0] + d0 * d0, acc[1] + d1 * d1, acc[2] + d2 * d2, acc[3] + d3 * d3);
}

// The distance tile of one training point: the 4 groups of 4 particles, 4 lanes each.
// Also the weighted sums of one column of a tile of points, for the 4 groups.
struct DistanceTile {
    g0: mat4x4<f32>,
    g1: mat4x4<f32>,
    g2: mat4x4<f32>,
    g3: mat4x4<f32>,
}

// The potentials of the 4 particles of a group: lanes added in order, scaled, clamped.
fn group_potentials(acc: mat4x4<f32>, inv_two_sigma2: f32) -> vec4<f32> {
    let d2 = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    return max(-d2 * inv_two_sigma2, vec4<f32>(-FLT_MAX));
}

// sum[p] += w[p] a: point k's column a weighted for the 4 particles of a group.
fn add_weighted(sum: mat4x4<f32>, w: vec4<f32>, a: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(sum[0] + w.x * a, sum[1] + w.y * a, sum[2] + w.z * a, sum[3] + w.w * a);
}

// Column q (particle q of the tile) of a tile of 16 particles, by selects over constant
// indices (see GeneralState).
fn column_of_group(m: mat4x4<f32>, p: u32) -> vec4<f32> {
    return select(select(select(m[0], m[1], p == 1u), m[2], p == 2u), m[3], p == 3u);
}

fn column_of(t: DistanceTile, q: u32) -> vec4<f32> {
    let p = q % 4u;
    let g = q / 4u;
    return select(
        select(select(column_of_group(t.g0, p), column_of_group(t.g1, p), g == 1u), column_of_group(t.g2, p), g == 2u),
        column_of_group(t.g3, p),
        g == 3u,
    );
}

// m with column p replaced by v where `here` (the group holds the particle).
fn with_column_of_group(m: mat4x4<f32>, p: u32, here: bool, v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        select(m[0], v, here && p == 0u),
        select(m[1], v, here && p == 1u),
        select(m[2], v, here && p == 2u),
        select(m[3], v, here && p == 3u),
    );
}

// t with column q replaced by v.
fn with_column(t: DistanceTile, q: u32, v: vec4<f32>) -> DistanceTile {
    let p = q % 4u;
    let g = q / 4u;
    return DistanceTile(
        with_column_of_group(t.g0, p, g == 0u, v),
        with_column_of_group(t.g1, p, g == 1u, v),
        with_column_of_group(t.g2, p, g == 2u, v),
        with_column_of_group(t.g3, p, g == 3u, v),
    );
}

fn max_of_group(g: u32) -> vec4<f32> {
    return tile_max[g];
}

// weighted[p] keep[p] + sum[p] take[p] for the 4 particles of group g.
fn merge_group(weighted: mat4x4<f32>, sum: mat4x4<f32>, g: u32) -> mat4x4<f32> {
    let keep = tile_keep[g];
    let take = tile_take[g];
    return mat4x4<f32>(
        weighted[0] * keep.x + sum[0] * take.x,
        weighted[1] * keep.y + sum[1] * take.y,
        weighted[2] * keep.z + sum[2] * take.z,
        weighted[3] * keep.w + sum[3] * take.w,
    );
}

// Reduce this dispatch's chunk of training points into the states of particles
// first_particle .. first_particle + GENERAL_PARTICLES (fresh on the first chunk, loaded
// otherwise); store them unless this is the last chunk. Every invocation of the
// workgroup must call this (barriers). Particles past the batch compute on zeros and
// store nothing. On return tile_weight_sum holds every particle's weight sum.
fn reduce_general(
    first_particle: u32,
    invocation: GeneralInvocation,
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> GeneralState {
    let lid = invocation.lid;
    let columns = columns_of(run.dim);
    var state: GeneralState;
    state.running_max = -FLT_MAX;
    state.weight_sum = 0.0;
    state.best_index = 0u;
    for (var j = 0u; j < OWNED; j++) {
        state.weighted[j] = DistanceTile(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
    }
    if (chunk.first == 0u) {
        for (var q = 0u; q < GENERAL_PARTICLES; q++) {
            let i = first_particle + q;
            if (i >= run.batch_len) {
                break;
            }
            let at = i * (columns + 1u);
            if (lid == q) {
                let head = softmax_state[at];
                state.running_max = head.x;
                state.weight_sum = head.y;
                // An f32 value, exact below 2^24 (see load_softmax_state, common/score.wgsl).
                state.best_index = u32(head.z);
            }
            for (var j = 0u; j < OWNED; j++) {
                let c = lid + j * GENERAL_WG;
                if (c < columns) {
                    state.weighted[j] = with_column(state.weighted[j], q, softmax_state[at + 1u + c]);
                }
            }
        }
    }
    // D within one block: the particle tile is loaded once for the whole dispatch.
    let one_block = columns <= GENERAL_X_COLUMNS;
    if (one_block) {
        load_particle_block(first_particle, lid, 0u, columns);
    }
    let g_mine = lid / 4u;
    let p_mine = lid % 4u;
    for (var offset = 0u; offset < chunk.count; offset += GENERAL_TILE) {
        let count = min(GENERAL_TILE, chunk.count - offset);
        let first_point = chunk.start + offset;
        // Logits: this invocation's point (k = lid; past the tile, its last point, whose
        // results are never used) against every particle of the tile.
        let row = (first_point + min(lid, count - 1u)) * columns;
        var acc = DistanceTile(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
        for (var first_column = 0u; first_column < columns; first_column += GENERAL_X_COLUMNS) {
            let width = min(GENERAL_X_COLUMNS, columns - first_column);
            if (!one_block) {
                // Everyone has finished reading the previous block.
                workgroupBarrier();
                load_particle_block(first_particle, lid, first_column, width);
            }
            // The block (and, on the first tile, the one-block load) is in place.
            workgroupBarrier();
            // The point's address carried from column to column, not recomputed: in
            // llvmpipe's lane-by-lane loads an address made of several terms costs a
            // spilled vector per term, per lane (5% of this stage at D = 64).
            var at = row + first_column;
            for (var c = 0u; c < width; c++) {
                let scaled = mean_scale * training[at];
                acc = add_column(acc, c, scaled, invocation);
                at += 1u;
            }
        }
        let pot0 = group_potentials(acc.g0, inv_two_sigma2);
        let pot1 = group_potentials(acc.g1, inv_two_sigma2);
        let pot2 = group_potentials(acc.g2, inv_two_sigma2);
        let pot3 = group_potentials(acc.g3, inv_two_sigma2);
        tile_pot[lid * 4u] = pot0;
        tile_pot[lid * 4u + 1u] = pot1;
        tile_pot[lid * 4u + 2u] = pot2;
        tile_pot[lid * 4u + 3u] = pot3;
        workgroupBarrier();
        // Each particle's tile max. Invocations without a particle loop zero times (see
        // the output loop below).
        let own_points = select(0u, count, lid < GENERAL_PARTICLES);
        // The tile's first point of largest potential for particle lid (TAP only).
        var best_in_tile = 0u;
        if (lid < GENERAL_PARTICLES) {
            var best = -FLT_MAX;
            for (var k = 0u; k < own_points; k++) {
                let pot = tile_pot[k * 4u + g_mine][p_mine];
                // Strict: the lowest index of a tie.
                if (TAP && pot > best) {
                    best_in_tile = k;
                }
                best = max(best, pot);
            }
            tile_max[g_mine][p_mine] = best;
        }
        workgroupBarrier();
        // This invocation's point's weights.
        tile_weight[lid * 4u] = exp(pot0 - max_of_group(0u));
        tile_weight[lid * 4u + 1u] = exp(pot1 - max_of_group(1u));
        tile_weight[lid * 4u + 2u] = exp(pot2 - max_of_group(2u));
        tile_weight[lid * 4u + 3u] = exp(pot3 - max_of_group(3u));
        workgroupBarrier();
        // Each particle's weight sum (in point order) and merge factors.
        if (lid < GENERAL_PARTICLES) {
            var sum = 0.0;
            for (var k = 0u; k < own_points; k++) {
                sum = sum + tile_weight[k * 4u + g_mine][p_mine];
            }
            let best = tile_max[g_mine][p_mine];
            var keep = 1.0;
            var take = 1.0;
            // Tiles come in index order: on a tie with an earlier tile its index stays.
            if (TAP && best > state.running_max) {
                state.best_index = first_point + best_in_tile;
            }
            if (best > state.running_max) {
                keep = exp(state.running_max - best);
            } else {
                take = exp(best - state.running_max);
            }
            state.weight_sum = state.weight_sum * keep + sum * take;
            state.running_max = max(state.running_max, best);
            tile_keep[g_mine][p_mine] = keep;
            tile_take[g_mine][p_mine] = take;
            tile_weight_sum[lid] = state.weight_sum;
        }
        workgroupBarrier();
        // Output: the tile's weighted sums of this invocation's columns, every particle.
        for (var j = 0u; j < OWNED; j++) {
            // A uniform bound: the loads below stay at common addresses.
            if (j * GENERAL_WG >= columns) {
                break;
            }
            let column = min(lid + j * GENERAL_WG, columns - 1u);
            let sums = weighted_column_sums(
                first_point,
                count,
                column,
                lid + j * GENERAL_WG < columns,
                invocation,
            );
            let owned = state.weighted[j];
            state.weighted[j] = DistanceTile(
                merge_group(owned.g0, sums.g0, 0u),
                merge_group(owned.g1, sums.g1, 1u),
                merge_group(owned.g2, sums.g2, 2u),
                merge_group(owned.g3, sums.g3, 3u),
            );
        }
    }
    if (chunk.last == 0u) {
        for (var q = 0u; q < GENERAL_PARTICLES; q++) {
            let i = first_particle + q;
            if (i >= run.batch_len) {
                break;
            }
            let at = i * (columns + 1u);
            if (lid == q) {
                softmax_state[at] =
                    vec4<f32>(state.running_max, state.weight_sum, f32(state.best_index), 0.0);
            }
            for (var j = 0u; j < OWNED; j++) {
                let c = lid + j * GENERAL_WG;
                if (c < columns) {
                    softmax_state[at + 1u + c] = column_of(state.weighted[j], q);
                }
            }
        }
    }
    // The tap: weights are relative to the exact max, whose own weight is 1, so the
    // largest weight is 1 / sum. Invocation lid < GENERAL_PARTICLES holds particle lid's.
    if (TAP && chunk.last != 0u && lid < GENERAL_PARTICLES && first_particle + lid < run.batch_len) {
        store_tap(first_particle + lid, 1.0 / state.weight_sum, state.best_index);
    }
    return state;
}

// The entry point: reduce this chunk for the workgroup's tile of particles and, at the
// last chunk, `finish_column` every column of every particle of the tile in the batch with
// its position x and softmax mean m.
@compute @workgroup_size(GENERAL_WG)
fn STAGE_ENTRY_POINT(invocation: GeneralInvocation) {
    let lid = invocation.lid;
    // A tile of GENERAL_PARTICLES particles per workgroup: the same first particle for
    // every invocation, so this return (a workgroup past the batch) is uniform and the
    // barriers of the reduction stay valid.
    let first_particle = (invocation.wid.x + invocation.wid.y * invocation.groups.x) * GENERAL_PARTICLES;
    if (first_particle >= run.batch_len) {
        return;
    }
    let state = reduce_general(first_particle, invocation, step.mean_scale, step.inv_two_sigma2);
    if (chunk.last == 0u) {
        return;
    }
    // The barriers of the last tile ordered every read of the particles into workgroup
    // memory before the stages' writes; each column is read and written by one invocation.
    let columns = columns_of(run.dim);
    // Invocation lid finishes columns lid, lid + GENERAL_WG, ... of every live particle.
    for (var j = 0u; j < OWNED; j++) {
        let c = lid + j * GENERAL_WG;
        if (c >= columns) {
            break;
        }
        for (var q = 0u; q < GENERAL_PARTICLES; q++) {
            let i = first_particle + q;
            if (i >= run.batch_len) {
                break;
            }
            let base = i * run.dim;
            let x = particle_column(base, c);
            let m = column_of(state.weighted[j], q) / tile_weight_sum[q];
            finish_column(i, base, c, x, m);
        }
    }
}
