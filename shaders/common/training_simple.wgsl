// The simple reduction: every invocation reads every training point of the chunk from
// the storage buffer (through the cache), once for its pair of particles. Fastest for
// small training sets.
// Needs `training: array<vec4<f32>>` and `chunk: ChunkParams` in the assembled module.

// Points summed into one block state before merging (see online_softmax_merge).
const BLOCK: u32 = 256u;

fn accumulate_training(
    state0: ptr<function, OnlineSoftmax>,
    state1: ptr<function, OnlineSoftmax>,
    x0: vec4<f32>,
    x1: vec4<f32>,
    local_index: u32,
    mean_scale: f32,
    log2_factor: f32,
) {
    for (var offset = 0u; offset < chunk.count; offset += BLOCK) {
        let end = chunk.start + offset + min(BLOCK, chunk.count - offset);
        var block0 = online_softmax_new();
        var block1 = online_softmax_new();
        for (var i = chunk.start + offset; i < end; i++) {
            let xi = training[i];
            online_softmax_push(&block0, potential(x0, xi, mean_scale, log2_factor), xi, i);
            online_softmax_push(&block1, potential(x1, xi, mean_scale, log2_factor), xi, i);
        }
        online_softmax_merge(state0, block0);
        online_softmax_merge(state1, block1);
    }
}
