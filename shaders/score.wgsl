// The empirical score at query points: score(x, t) = (s sum_i w_i x_i - x) / sigma2.
// CPU twin: src/engine/cpu/score.rs. Used by tests and score-field plots.
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
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let first = workgroup_first_particle(wid, num_workgroups);
    // A workgroup wholly past the batch (the last row of a 2-D grid) has nothing to
    // reduce: the same condition for all its invocations, so returning keeps the tiled
    // reduction's barriers valid.
    if (first >= run.batch_len) {
        return;
    }
    // No other early return before this: the tiled reduction needs every invocation.
    let i0 = first + local_index;
    let i1 = i0 + WORKGROUP_SIZE;
    let pair = reduce_chunk_pair(i0, i1, local_index, step.mean_scale, step.inv_two_sigma2);
    write_score(i0, pair.first);
    write_score(i1, pair.second);
}

fn write_score(i: u32, reduced: ChunkReduction) {
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
