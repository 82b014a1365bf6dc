// The empirical score at query points: score(x, t) = (s sum_i w_i x_i - x) / sigma2.
// CPU twin: src/cpu/score.rs. Used by tests and score-field plots.
// Assembled after common/params.wgsl, common/score.wgsl, a training_* reduction and
// common/reduce_chunk.wgsl; chunked like em_step.wgsl.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: StepParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn score(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    // A workgroup wholly past the batch (the last row of a 2-D grid) has nothing to
    // reduce: the same condition for all its invocations, so returning keeps the tiled
    // reduction's barriers valid.
    if (wid.x * WORKGROUP_SIZE + wid.y * run.threads_per_row >= run.batch_len) {
        return;
    }
    let i = linear_invocation_index(run, gid);
    let reduced = reduce_chunk(i, local_index, step.mean_scale, step.inv_two_sigma2);
    if (!reduced.finished) {
        return;
    }
    let x = reduced.x;
    let base = i * run.dim;
    let value = (step.mean_scale * online_softmax_mean(reduced.state) - x) * step.inv_sigma2;
    for (var d = 0u; d < run.dim; d++) {
        scores[base + d] = value[d];
    }
}
