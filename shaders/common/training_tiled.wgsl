// The tiled reduction for large training sets: the workgroup stages TILE training points
// at a time in shared memory, so each point is read from device memory once per
// workgroup instead of once per invocation. Same online softmax, same order of points.
// Needs `training: array<vec4<f32>>`, `chunk: ChunkParams` and WORKGROUP_SIZE.
// Every invocation of the workgroup must call this (barriers), in the batch or not.

const TILE: u32 = 256u;
var<workgroup> tile: array<vec4<f32>, TILE>;

fn accumulate_training(
    state: ptr<function, OnlineSoftmax>,
    x: vec4<f32>,
    in_batch: bool,
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
        if (in_batch) {
            // One block state per tile, merged in (see online_softmax_merge).
            var block = online_softmax_new();
            for (var k = 0u; k < count; k++) {
                let xi = tile[k];
                online_softmax_push(&block, potential(x, xi, mean_scale, log2_factor), xi);
            }
            online_softmax_merge(state, block);
        }
    }
}
