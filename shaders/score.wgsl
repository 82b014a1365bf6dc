// The empirical score at query points: score(x, t) = (s sum_i w_i x_i - x) / sigma2.
// CPU twin: src/engine/cpu/score.rs. Used by tests and score-field plots.
// Assembled like em_step.wgsl without philox (params, score, step_bindings, a training_*
// reduction, reduce_chunk); chunked like em_step.wgsl.

@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(1) @binding(0) var<uniform> step: StepParams;

fn finish_chunk(i: u32, base: u32, x: vec4<f32>, m: vec4<f32>) {
    let value = (step.mean_scale * m - x) * step.inv_sigma2;
    for (var d = 0u; d < run.dim; d++) {
        scores[base + d] = value[d];
    }
}
