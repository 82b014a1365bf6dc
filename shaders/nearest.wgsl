// The three nearest training points of every sample (squared Euclidean distances, f32),
// for the memorization metrics. CPU twin: src/engine/cpu/nearest.rs — same arithmetic order.
// The host (src/engine/gpu/nearest.rs) recomputes the candidates' distances in f64 and checks
// that the third candidate is far enough to make the f64 top two exact (see there).
//
// Any dimension: samples and training points are plain row-major f32 arrays. The
// training set is reduced in chunks of at most 32,768 coordinates per invocation over
// successive dispatches, the running top three kept in `best` between them: lavapipe
// ends any loop after 65,535 iterations per invocation.

override WORKGROUP_SIZE: u32 = 64u;

// Keep in sync with NearestParams in src/engine/gpu/nearest.rs.
struct NearestParams {
    n_samples: u32,
    dim: u32,
    threads_per_row: u32,
    chunk_start: u32,
    chunk_count: u32,
    // 1 for the first chunk: start from an empty top three.
    first: u32,
    _pad0: u32,
    _pad1: u32,
}

// Distances (d1 <= d2 <= d3, unused ones FLT_MAX) and their training indices
// (0xFFFFFFFF when unused).
struct Best {
    d: vec4<f32>,
    i: vec4<u32>,
}

const NEAREST_FLT_MAX: f32 = 3.40282347e+38;
const NO_INDEX: u32 = 0xFFFFFFFFu;

@group(0) @binding(0) var<storage, read> samples: array<f32>;
@group(0) @binding(1) var<storage, read> training: array<f32>;
@group(0) @binding(2) var<storage, read_write> best: array<Best>;
@group(1) @binding(0) var<uniform> params: NearestParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn nearest(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x + gid.y * params.threads_per_row;
    if (s >= params.n_samples) {
        return;
    }
    var b = Best(vec4<f32>(NEAREST_FLT_MAX), vec4<u32>(NO_INDEX));
    if (params.first == 0u) {
        b = best[s];
    }
    let base = s * params.dim;
    for (var k = 0u; k < params.chunk_count; k++) {
        let j = params.chunk_start + k;
        let tbase = j * params.dim;
        var d2 = 0.0;
        for (var c = 0u; c < params.dim; c++) {
            let diff = samples[base + c] - training[tbase + c];
            d2 = d2 + diff * diff;
        }
        // Strict comparisons: on equal distances the earlier (lower) index stays ahead.
        if (d2 < b.d.x) {
            b.d = vec4<f32>(d2, b.d.x, b.d.y, 0.0);
            b.i = vec4<u32>(j, b.i.x, b.i.y, 0u);
        } else if (d2 < b.d.y) {
            b.d = vec4<f32>(b.d.x, d2, b.d.y, 0.0);
            b.i = vec4<u32>(b.i.x, j, b.i.y, 0u);
        } else if (d2 < b.d.z) {
            b.d.z = d2;
            b.i.z = j;
        }
    }
    best[s] = b;
}
