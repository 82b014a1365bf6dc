// The general-D reduction (any D up to MAX_COLUMNS * 4 = 4096), shaped like flash
// attention: a workgroup of GENERAL_WG invocations owns a tile of GENERAL_PARTICLES
// particles (queries) and streams the training points (keys = values) a tile of
// GENERAL_TILE at a time, so each training point is read once per particle tile instead
// of once per particle. Per tile of points:
// - logits: invocation k owns point k of the tile and computes its squared distance to
//   every particle of the tile (a GENERAL_PARTICLES-wide register tile), the particles'
//   coordinates read from workgroup memory (a broadcast) a block of GENERAL_X_COLUMNS
//   columns at a time (loaded once per dispatch when D fits one block);
// - online softmax: invocation (r, lane) = (lid / GENERAL_LANES, lid % GENERAL_LANES)
//   works for particle r: the tile max of r's potentials, r's weights exp(pot - max)
//   (each lane a share, through workgroup memory), the tile's weight sum, every lane of a
//   row in the same order, so they all hold the same numbers;
// - output: lane owns columns c = lane, lane + GENERAL_LANES, ... of particle r and adds
//   the tile's weighted sum of those columns into its running state, merged like
//   online_softmax_merge (common/score.wgsl).
// Per particle the arithmetic (and its order) is exactly that of the previous
// one-workgroup-per-particle kernel: distance lanes of 4 summed in column order then
// ((x + y) + z) + w, tiles of GENERAL_TILE points, max, weights, in-order sums, merge.
// The state is carried between chunk dispatches in `softmax_state` as (D/4 + 1) vec4 per
// particle: (running_max, weight_sum, 0, 0), then the weighted columns.
// CPU twin: src/cpu/reduce_general.rs — keep the arithmetic order in sync.
// Needs `run`, `chunk`, `particles` (array<f32>, rows of D), `training`
// (array<vec4<f32>>, each point padded with zeros to D/4 rounded up vec4) and
// `softmax_state` (array<vec4<f32>>), and FLT_MAX from common/score.wgsl.

// Keep in sync with GENERAL_WG, GENERAL_TILE, GENERAL_PARTICLES, GENERAL_LANES,
// GENERAL_X_COLUMNS and MAX_DIMENSION in src/params.rs.
const GENERAL_WG: u32 = 64u;
const GENERAL_TILE: u32 = 64u;
const GENERAL_PARTICLES: u32 = 16u;
// GENERAL_WG / GENERAL_PARTICLES invocations share one particle's columns.
const GENERAL_LANES: u32 = 4u;
// Columns of the particle tile held in workgroup memory at a time (16 particles x 16
// columns x 16 bytes = 4 KiB; with the potentials and weights 12 KiB, under WebGPU's
// guaranteed 16 KiB of workgroup memory).
const GENERAL_X_COLUMNS: u32 = 16u;
const MAX_COLUMNS: u32 = 1024u;
// Columns one invocation owns at most: MAX_COLUMNS / GENERAL_LANES. The engine replaces
// this line with the bound of the problem's D (`specialise_owned` in src/gpu/shaders.rs)
// so that hardware keeps the accumulators in registers.
const OWNED: u32 = 256u;

var<workgroup> tile_x: array<vec4<f32>, 256>; // GENERAL_PARTICLES * GENERAL_X_COLUMNS
var<workgroup> tile_pot: array<f32, 1024>; // GENERAL_PARTICLES * GENERAL_TILE
var<workgroup> tile_weight: array<f32, 1024>;

struct GeneralState {
    running_max: f32,
    weight_sum: f32,
    // Weighted sums of this invocation's columns: weighted[j] is column lane + j * GENERAL_LANES.
    weighted: array<vec4<f32>, OWNED>,
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

fn general_state_new() -> GeneralState {
    var state: GeneralState;
    state.running_max = -FLT_MAX;
    state.weight_sum = 0.0;
    for (var j = 0u; j < OWNED; j++) {
        state.weighted[j] = vec4<f32>(0.0);
    }
    return state;
}

fn load_general_state(i: u32, lane: u32, columns: u32) -> GeneralState {
    let at = i * (columns + 1u);
    let head = softmax_state[at];
    var state: GeneralState;
    state.running_max = head.x;
    state.weight_sum = head.y;
    for (var j = 0u; j < OWNED; j++) {
        let c = lane + j * GENERAL_LANES;
        if (c >= columns) {
            break;
        }
        state.weighted[j] = softmax_state[at + 1u + c];
    }
    return state;
}

fn store_general_state(i: u32, lane: u32, columns: u32, state: GeneralState) {
    let at = i * (columns + 1u);
    if (lane == 0u) {
        softmax_state[at] = vec4<f32>(state.running_max, state.weight_sum, 0.0, 0.0);
    }
    for (var j = 0u; j < OWNED; j++) {
        let c = lane + j * GENERAL_LANES;
        if (c >= columns) {
            break;
        }
        softmax_state[at + 1u + c] = state.weighted[j];
    }
}

// Columns first_column .. first_column + width of the tile's particles into tile_x
// (zeros for particles past the batch and coordinates past D).
fn load_particle_block(first_particle: u32, lid: u32, first_column: u32, width: u32) {
    for (var e = lid; e < GENERAL_PARTICLES * GENERAL_X_COLUMNS; e += GENERAL_WG) {
        let r = e / GENERAL_X_COLUMNS;
        let c = e % GENERAL_X_COLUMNS;
        var x = vec4<f32>(0.0);
        if (first_particle + r < run.batch_len && c < width) {
            x = particle_column((first_particle + r) * run.dim, first_column + c);
        }
        tile_x[e] = x;
    }
}

// Reduce this dispatch's chunk of training points into the state of particle
// first_particle + lid / GENERAL_LANES (fresh on the first chunk, loaded otherwise);
// store it unless this is the last chunk. Every invocation of the workgroup must call
// this (barriers). Rows past the batch compute on zeros and store nothing.
fn reduce_general(first_particle: u32, lid: u32, mean_scale: f32, inv_two_sigma2: f32) -> GeneralState {
    let columns = columns_of(run.dim);
    let r = lid / GENERAL_LANES;
    let lane = lid % GENERAL_LANES;
    let i = first_particle + r;
    let live = i < run.batch_len;
    var state = general_state_new();
    if (chunk.first == 0u && live) {
        state = load_general_state(i, lane, columns);
    }
    // D within one block: the particle tile is loaded once for the whole dispatch.
    let one_block = columns <= GENERAL_X_COLUMNS;
    if (one_block) {
        load_particle_block(first_particle, lid, 0u, columns);
    }
    for (var offset = 0u; offset < chunk.count; offset += GENERAL_TILE) {
        let count = min(GENERAL_TILE, chunk.count - offset);
        let first_point = chunk.start + offset;
        // Logits: this invocation's point (k = lid) against every particle of the tile.
        let has_point = lid < count;
        let row = (first_point + lid) * columns;
        var acc: array<vec4<f32>, GENERAL_PARTICLES>;
        for (var q = 0u; q < GENERAL_PARTICLES; q++) {
            acc[q] = vec4<f32>(0.0);
        }
        for (var first_column = 0u; first_column < columns; first_column += GENERAL_X_COLUMNS) {
            let width = min(GENERAL_X_COLUMNS, columns - first_column);
            if (!one_block) {
                // Everyone has finished reading the previous block.
                workgroupBarrier();
                load_particle_block(first_particle, lid, first_column, width);
            }
            // The block (and, on the first tile, the one-block load) is in place.
            workgroupBarrier();
            if (has_point) {
                for (var c = 0u; c < width; c++) {
                    let scaled = mean_scale * training[row + first_column + c];
                    for (var q = 0u; q < GENERAL_PARTICLES; q++) {
                        let diff = tile_x[q * GENERAL_X_COLUMNS + c] - scaled;
                        acc[q] = acc[q] + diff * diff;
                    }
                }
            }
        }
        if (has_point) {
            for (var q = 0u; q < GENERAL_PARTICLES; q++) {
                let d2 = ((acc[q].x + acc[q].y) + acc[q].z) + acc[q].w;
                tile_pot[q * GENERAL_TILE + lid] = max(-d2 * inv_two_sigma2, -FLT_MAX);
            }
        }
        workgroupBarrier();
        // Online softmax of particle r over the tile.
        let at = r * GENERAL_TILE;
        var tile_max = -FLT_MAX;
        for (var k = 0u; k < count; k++) {
            tile_max = max(tile_max, tile_pot[at + k]);
        }
        for (var k = lane; k < count; k += GENERAL_LANES) {
            tile_weight[at + k] = exp(tile_pot[at + k] - tile_max);
        }
        workgroupBarrier();
        var tile_sum = 0.0;
        for (var k = 0u; k < count; k++) {
            tile_sum = tile_sum + tile_weight[at + k];
        }
        var keep = 1.0;
        var take = 1.0;
        if (tile_max > state.running_max) {
            keep = exp(state.running_max - tile_max);
        } else {
            take = exp(tile_max - state.running_max);
        }
        // Output: the tile's weighted sums of this lane's columns.
        for (var j = 0u; j < OWNED; j++) {
            let c = lane + j * GENERAL_LANES;
            if (c >= columns) {
                break;
            }
            var sum = vec4<f32>(0.0);
            for (var k = 0u; k < count; k++) {
                sum = sum + tile_weight[at + k] * training[(first_point + k) * columns + c];
            }
            state.weighted[j] = state.weighted[j] * keep + sum * take;
        }
        state.weight_sum = state.weight_sum * keep + tile_sum * take;
        state.running_max = max(state.running_max, tile_max);
    }
    if (chunk.last == 0u && live) {
        store_general_state(i, lane, columns, state);
    }
    return state;
}
