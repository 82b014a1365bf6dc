// The part of em_step.wgsl and score.wgsl that is the same: load a particle, reduce this
// dispatch's chunk of training points into its online-softmax state, and either carry
// the state to the next chunk's dispatch or hand it over when this was the last chunk.
// Needs `run`, `chunk`, `particles`, `training`, `softmax_state` and an
// `accumulate_training` (common/training_simple.wgsl or common/training_tiled.wgsl).

struct ChunkReduction {
    x: vec4<f32>,
    state: OnlineSoftmax,
    // True only for a particle of the batch whose last chunk this was.
    finished: bool,
}

// Every invocation of the workgroup must call this (the tiled reduction has barriers).
fn reduce_chunk(i: u32, local_index: u32, mean_scale: f32, inv_two_sigma2: f32) -> ChunkReduction {
    let in_batch = i < run.batch_len;
    let base = i * run.dim;
    var x = vec4<f32>(0.0);
    var state = online_softmax_new();
    if (in_batch) {
        for (var d = 0u; d < run.dim; d++) {
            x[d] = particles[base + d];
        }
        if (chunk.first == 0u) {
            state = load_softmax_state(i);
        }
    }
    let log2_factor = potential_scale(inv_two_sigma2);
    accumulate_training(&state, x, in_batch, local_index, mean_scale, log2_factor);
    if (in_batch && chunk.last == 0u) {
        store_softmax_state(i, state);
    }
    return ChunkReduction(x, state, in_batch && chunk.last != 0u);
}
