// The tiled reduction for large training sets: the workgroup stages TILE training points
// at a time in shared memory, so each point is read from device memory once per
// workgroup instead of once per invocation, and from shared memory once per pair of
// particles. Same online softmax, same order of points, for each particle.
// Needs `training: array<vec4<f32>>`, `chunk: ChunkParams` and WORKGROUP_SIZE.
// Every invocation of the workgroup must call this (barriers), in the batch or not.

const TILE: u32 = 256u;
var<workgroup> tile: array<vec4<f32>, TILE>;

fn accumulate_training(
    state0: ptr<function, OnlineSoftmax>,
    state1: ptr<function, OnlineSoftmax>,
    x0: vec4<f32>,
    x1: vec4<f32>,
    local_index: u32,
    mean_scale: f32,
    log2_factor: f32,
) {
    for (var offset = 0u; offset < chunk.count; offset += TILE) {
        let count = min(TILE, chunk.count - offset);
        workgroupBarrier();
        for (var k = local_index; k < count; k += WORKGROUP_SIZE) {
            tile[k] = training[chunk.start + offset + k];
        }
        workgroupBarrier();
        // One block state per tile and particle, merged in (see online_softmax_merge).
        // A particle past the batch (x = 0) is reduced too and its result dropped: no
        // branch in the loop.
        var block0 = online_softmax_new();
        var block1 = online_softmax_new();
        for (var k = 0u; k < count; k++) {
            let xi = tile[k];
            let index = chunk.start + offset + k;
            online_softmax_push(&block0, potential(x0, xi, mean_scale, log2_factor), xi, index);
            online_softmax_push(&block1, potential(x1, xi, mean_scale, log2_factor), xi, index);
        }
        online_softmax_merge(state0, block0);
        online_softmax_merge(state1, block1);
    }
}
