// One half of a Heun step of the probability-flow ODE for every particle (D <= 4):
// dx/dt = beta x / 2 + beta score / 2 in reverse time, i.e. v(x, tau) = a x + b m(x, tau).
// CPU twin: src/engine/cpu/heun_step.rs — keep the arithmetic in the same order.
// Assembled like em_step.wgsl (params, score, step_bindings, a training_* reduction,
// reduce_chunk).
//
// Predictor (phase 0): x~ = x_coeff x + mean_coeff m replaces the particle, and the
//   corrector's known part partial_x_coeff x + partial_mean_coeff m goes to `partial`.
// Corrector (phase 1, the particle now holds x~): x' = partial + x_coeff x~ + mean_coeff m.
// The last step is a predictor alone (Euler), see HeunParams in src/engine/records.rs.
// No noise: only the initial particles are random (init_noise.wgsl, as for em).

@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(1) @binding(0) var<uniform> step: HeunParams;

fn finish_chunk(i: u32, base: u32, x: vec4<f32>, m: vec4<f32>) {
    var next = step.x_coeff * x + step.mean_coeff * m;
    if (step.phase == 0u) {
        let known = step.partial_x_coeff * x + step.partial_mean_coeff * m;
        for (var d = 0u; d < run.dim; d++) {
            partial[base + d] = known[d];
        }
    } else {
        for (var d = 0u; d < run.dim; d++) {
            next[d] = partial[base + d] + next[d];
        }
    }
    for (var d = 0u; d < run.dim; d++) {
        particles[base + d] = next[d];
    }
}
