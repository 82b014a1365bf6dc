// The general-D reduction (any D up to MAX_COLUMNS * 4 = 4096): one workgroup of
// GENERAL_WG invocations per particle. Particles and training points do not fit a
// register here, so the work is split the other way round:
// - per tile of GENERAL_TILE training points, invocation k computes the whole squared
//   distance of point k of the tile (a loop over the D/4 columns of 4 coordinates);
// - the tile's potentials go through shared memory: every invocation takes the tile's
//   max, its own point's weight exp(pot - max), then the tile's weight sum, in the same
//   order (so every invocation holds the same numbers);
// - invocation k owns the columns c = k, k + GENERAL_WG, ... (coordinates 4c..4c+3) and
//   accumulates the tile's weighted sum of those columns, merged into its running
//   online-softmax state like online_softmax_merge (common/score.wgsl).
// The state is carried between chunk dispatches in `softmax_state` as (D/4 + 1) vec4 per
// particle: (running_max, weight_sum, 0, 0), then the weighted columns.
// CPU twin: src/cpu/reduce_general.rs — keep the arithmetic order in sync.
// Needs `run`, `chunk`, `particles` (array<f32>, rows of D), `training`
// (array<vec4<f32>>, each point padded with zeros to D/4 rounded up vec4) and
// `softmax_state` (array<vec4<f32>>), and FLT_MAX from common/score.wgsl.

// Keep in sync with GENERAL_WG, GENERAL_TILE and MAX_DIMENSION in src/params.rs.
const GENERAL_WG: u32 = 64u;
const GENERAL_TILE: u32 = 64u;
const MAX_COLUMNS: u32 = 1024u;
// Columns one invocation owns at most: MAX_COLUMNS / GENERAL_WG.
const OWNED: u32 = 16u;

var<workgroup> tile_pot: array<f32, GENERAL_TILE>;
var<workgroup> tile_weight: array<f32, GENERAL_TILE>;

struct GeneralState {
    running_max: f32,
    weight_sum: f32,
    // Weighted sums of this invocation's columns: weighted[j] is column lid + j * GENERAL_WG.
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

// Potential of training point p: -|x - s x_p|^2 / (2 sigma2), clamped like `potential`.
// The squared distance is summed in 4 lanes (one per coordinate of a column), then the
// lanes are added in order.
fn general_potential(base: u32, p: u32, columns: u32, mean_scale: f32, inv_two_sigma2: f32) -> f32 {
    var acc = vec4<f32>(0.0);
    let row = p * columns;
    for (var c = 0u; c < columns; c++) {
        let diff = particle_column(base, c) - mean_scale * training[row + c];
        acc = acc + diff * diff;
    }
    let d2 = ((acc.x + acc.y) + acc.z) + acc.w;
    return max(-d2 * inv_two_sigma2, -FLT_MAX);
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

fn load_general_state(i: u32, lid: u32, columns: u32) -> GeneralState {
    let at = i * (columns + 1u);
    let head = softmax_state[at];
    var state: GeneralState;
    state.running_max = head.x;
    state.weight_sum = head.y;
    for (var j = 0u; j < OWNED; j++) {
        let c = lid + j * GENERAL_WG;
        if (c >= columns) {
            break;
        }
        state.weighted[j] = softmax_state[at + 1u + c];
    }
    return state;
}

fn store_general_state(i: u32, lid: u32, columns: u32, state: GeneralState) {
    let at = i * (columns + 1u);
    if (lid == 0u) {
        softmax_state[at] = vec4<f32>(state.running_max, state.weight_sum, 0.0, 0.0);
    }
    for (var j = 0u; j < OWNED; j++) {
        let c = lid + j * GENERAL_WG;
        if (c >= columns) {
            break;
        }
        softmax_state[at + 1u + c] = state.weighted[j];
    }
}

// Reduce this dispatch's chunk of training points into particle i's state (fresh on the
// first chunk, loaded otherwise); store it unless this is the last chunk. Every
// invocation of the workgroup must call this (barriers); i is the same for all of them.
fn reduce_general(i: u32, lid: u32, mean_scale: f32, inv_two_sigma2: f32) -> GeneralState {
    let columns = columns_of(run.dim);
    let base = i * run.dim;
    var state = general_state_new();
    if (chunk.first == 0u) {
        state = load_general_state(i, lid, columns);
    }
    for (var offset = 0u; offset < chunk.count; offset += GENERAL_TILE) {
        let count = min(GENERAL_TILE, chunk.count - offset);
        let first_point = chunk.start + offset;
        var pot = -FLT_MAX;
        if (lid < count) {
            pot = general_potential(base, first_point + lid, columns, mean_scale, inv_two_sigma2);
        }
        // Everyone has finished reading the previous tile's shared values.
        workgroupBarrier();
        tile_pot[lid] = pot;
        workgroupBarrier();
        var tile_max = -FLT_MAX;
        for (var k = 0u; k < count; k++) {
            tile_max = max(tile_max, tile_pot[k]);
        }
        tile_weight[lid] = exp(pot - tile_max);
        workgroupBarrier();
        var tile_sum = 0.0;
        for (var k = 0u; k < count; k++) {
            tile_sum = tile_sum + tile_weight[k];
        }
        // Merge the tile into the running state (online_softmax_merge, column by column).
        var keep = 1.0;
        var take = 1.0;
        if (tile_max > state.running_max) {
            keep = exp(state.running_max - tile_max);
        } else {
            take = exp(tile_max - state.running_max);
        }
        for (var j = 0u; j < OWNED; j++) {
            let c = lid + j * GENERAL_WG;
            if (c >= columns) {
                break;
            }
            var sum = vec4<f32>(0.0);
            for (var k = 0u; k < count; k++) {
                sum = sum + tile_weight[k] * training[(first_point + k) * columns + c];
            }
            state.weighted[j] = state.weighted[j] * keep + sum * take;
        }
        state.weight_sum = state.weight_sum * keep + tile_sum * take;
        state.running_max = max(state.running_max, tile_max);
    }
    if (chunk.last == 0u) {
        store_general_state(i, lid, columns, state);
    }
    return state;
}
