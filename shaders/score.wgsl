// The empirical score at query points: score(x, t) = (s sum_i w_i x_i - x) / sigma2.
// CPU twin: src/cpu/score.rs. Used by tests and score-field plots.
// Assembled after common/params.wgsl and common/score.wgsl.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(1) @binding(0) var<uniform> step: StepParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn score(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = linear_invocation_index(run, gid);
    if (i >= run.batch_len) {
        return;
    }
    let base = i * run.dim;
    var x = vec4<f32>(0.0);
    for (var d = 0u; d < run.dim; d++) {
        x[d] = particles[base + d];
    }
    let m = weighted_training_mean(x, step.mean_scale, step.inv_two_sigma2);
    let value = (step.mean_scale * m - x) * step.inv_sigma2;
    for (var d = 0u; d < run.dim; d++) {
        scores[base + d] = value[d];
    }
}
