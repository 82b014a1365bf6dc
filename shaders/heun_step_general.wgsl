// One half of a Heun step of the probability-flow ODE for D > 4: a workgroup per tile of
// GENERAL_PARTICLES particles, the training points reduced by common/reduce_general.wgsl. Same halves and
// coefficients as heun_step.wgsl.
// CPU twin: src/engine/cpu/heun_step.rs (heun_half_step_general).
// Assembled like em_step_general.wgsl (params, score, step_bindings, reduce_general).

@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(1) @binding(0) var<uniform> step: HeunParams;

fn finish_column(i: u32, base: u32, c: u32, x: vec4<f32>, m: vec4<f32>) {
    var next = step.x_coeff * x + step.mean_coeff * m;
    let d = 4u * c;
    if (step.phase == 0u) {
        let known = step.partial_x_coeff * x + step.partial_mean_coeff * m;
        if (d < run.dim) { partial[base + d] = known.x; }
        if (d + 1u < run.dim) { partial[base + d + 1u] = known.y; }
        if (d + 2u < run.dim) { partial[base + d + 2u] = known.z; }
        if (d + 3u < run.dim) { partial[base + d + 3u] = known.w; }
    } else {
        if (d < run.dim) { next.x = partial[base + d] + next.x; }
        if (d + 1u < run.dim) { next.y = partial[base + d + 1u] + next.y; }
        if (d + 2u < run.dim) { next.z = partial[base + d + 2u] + next.z; }
        if (d + 3u < run.dim) { next.w = partial[base + d + 3u] + next.w; }
    }
    if (d < run.dim) { particles[base + d] = next.x; }
    if (d + 1u < run.dim) { particles[base + d + 1u] = next.y; }
    if (d + 2u < run.dim) { particles[base + d + 2u] = next.z; }
    if (d + 3u < run.dim) { particles[base + d + 3u] = next.w; }
}
