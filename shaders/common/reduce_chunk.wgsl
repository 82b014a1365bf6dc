// The part of em_step.wgsl, heun_step.wgsl and score.wgsl that is the same: load a pair
// of particles, reduce this dispatch's chunk of training points into their
// online-softmax states, and either carry the states to the next chunk's dispatch or hand
// them over when this was the last chunk.
// The stage's entry point is here too, named by `Stage::source` (src/engine/gpu/shaders.rs)
// after the stage. Needs the bindings of common/step_bindings.wgsl and an
// `accumulate_training` (common/training_simple.wgsl or common/training_tiled.wgsl); the
// stage file declares `step` (with mean_scale and inv_two_sigma2) and
// `fn finish_chunk(i: u32, base: u32, x: vec4<f32>, m: vec4<f32>)`: what it does with
// particle i (its row at `base`, its position x, its softmax mean m) at its last chunk.

// The host chooses the workgroup size (the stage's results do not depend on it).
override WORKGROUP_SIZE: u32 = 64u;

// Particles per invocation: each training point loaded serves this many particles.
// A workgroup owns WORKGROUP_SIZE * PARTICLES_PER_INVOCATION consecutive particles;
// invocation l has particles l and l + WORKGROUP_SIZE of them (particle_pair), so a
// particle's arithmetic does not depend on the batch or workgroup size.
const PARTICLES_PER_INVOCATION: u32 = 2u;

struct ChunkReduction {
    x: vec4<f32>,
    state: OnlineSoftmax,
    // True only for a particle of the batch whose last chunk this was.
    finished: bool,
}

struct PairReduction {
    first: ChunkReduction,
    second: ChunkReduction,
}

// Index of the first particle of workgroup `wid` (a 2-D grid of `num_workgroups`).
fn workgroup_first_particle(wid: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return (wid.x + wid.y * num_workgroups.x) * (WORKGROUP_SIZE * PARTICLES_PER_INVOCATION);
}

fn load_particle(i: u32) -> ChunkReduction {
    var x = vec4<f32>(0.0);
    var state = online_softmax_new();
    if (i < run.batch_len) {
        let base = i * run.dim;
        for (var d = 0u; d < run.dim; d++) {
            x[d] = particles[base + d];
        }
        if (chunk.first == 0u) {
            state = load_softmax_state(i);
        }
    }
    return ChunkReduction(x, state, false);
}

fn finish_particle(i: u32, x: vec4<f32>, state: OnlineSoftmax) -> ChunkReduction {
    let in_batch = i < run.batch_len;
    if (in_batch && chunk.last == 0u) {
        store_softmax_state(i, state);
    }
    if (TAP && in_batch && chunk.last != 0u) {
        store_tap(i, online_softmax_max_weight(state), state.best_index);
    }
    return ChunkReduction(x, state, in_batch && chunk.last != 0u);
}

// Particles i0 and i1 (either may be past the batch). Every invocation of the workgroup
// must call this (the tiled reduction has barriers).
fn reduce_chunk_pair(
    i0: u32,
    i1: u32,
    local_index: u32,
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> PairReduction {
    let p0 = load_particle(i0);
    let p1 = load_particle(i1);
    var state0 = p0.state;
    var state1 = p1.state;
    let log2_factor = potential_scale(inv_two_sigma2);
    accumulate_training(&state0, &state1, p0.x, p1.x, local_index, mean_scale, log2_factor);
    return PairReduction(finish_particle(i0, p0.x, state0), finish_particle(i1, p1.x, state1));
}

// The entry point's built-ins (all stages dispatch a 2-D grid of workgroups).
struct ChunkInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
}

// The entry point: reduce this chunk for the invocation's pair of particles, then
// `finish_chunk` each whose last chunk this was.
@compute @workgroup_size(WORKGROUP_SIZE)
fn STAGE_ENTRY_POINT(invocation: ChunkInvocation) {
    let first = workgroup_first_particle(invocation.wid, invocation.num_workgroups);
    // A workgroup wholly past the batch (the last row of a 2-D grid) has nothing to
    // reduce: the same condition for all its invocations, so returning keeps the tiled
    // reduction's barriers valid.
    if (first >= run.batch_len) {
        return;
    }
    // No other early return before this: the tiled reduction needs every invocation.
    let local_index = invocation.local_index;
    let i0 = first + local_index;
    let i1 = i0 + WORKGROUP_SIZE;
    let pair = reduce_chunk_pair(i0, i1, local_index, step.mean_scale, step.inv_two_sigma2);
    finish_if_last(i0, pair.first);
    finish_if_last(i1, pair.second);
}

fn finish_if_last(i: u32, reduced: ChunkReduction) {
    if (reduced.finished) {
        finish_chunk(i, i * run.dim, reduced.x, online_softmax_mean(reduced.state));
    }
}
