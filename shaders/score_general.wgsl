// The empirical score at query points for D > 4: score = (s m - x) / sigma2, with m from
// common/reduce_general.wgsl (a workgroup per tile of GENERAL_PARTICLES query points, chunked like score.wgsl).
// CPU twin: src/engine/cpu/reduce_general.rs (score_general).
// Assembled like em_step_general.wgsl (params, score, step_bindings, reduce_general).

@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(1) @binding(0) var<uniform> step: StepParams;

fn finish_column(i: u32, base: u32, c: u32, x: vec4<f32>, m: vec4<f32>) {
    let value = (step.mean_scale * m - x) * step.inv_sigma2;
    let d = 4u * c;
    if (d < run.dim) { scores[base + d] = value.x; }
    if (d + 1u < run.dim) { scores[base + d + 1u] = value.y; }
    if (d + 2u < run.dim) { scores[base + d + 2u] = value.z; }
    if (d + 3u < run.dim) { scores[base + d + 3u] = value.w; }
}
