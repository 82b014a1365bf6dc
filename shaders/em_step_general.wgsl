// One Euler–Maruyama step for D > 4: a workgroup per tile of GENERAL_PARTICLES particles, the training points
// reduced by common/reduce_general.wgsl. Same update and random-number contract as
// em_step.wgsl: x' = keep_coeff x + mean_coeff m + noise_coeff z, where the normals of
// coordinates 4b..4b+3 come from lane block b of the particle's Philox stream.
// CPU twin: src/engine/cpu/em_step_general.rs — keep the arithmetic in the same order.
// Assembled after common/params.wgsl, common/philox.wgsl, common/score.wgsl,
// common/step_bindings.wgsl and common/reduce_general.wgsl, whose entry point runs the
// stage; chunked over training points like em_step.wgsl.

@group(1) @binding(0) var<uniform> step: StepParams;

fn finish_column(i: u32, base: u32, c: u32, x: vec4<f32>, m: vec4<f32>) {
    let particle = global_particle_index(run, i);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, particle, step.step_index, c);
    let next = step.keep_coeff * x + step.mean_coeff * m + step.noise_coeff * z;
    let d = 4u * c;
    if (d < run.dim) { particles[base + d] = next.x; }
    if (d + 1u < run.dim) { particles[base + d + 1u] = next.y; }
    if (d + 2u < run.dim) { particles[base + d + 2u] = next.z; }
    if (d + 3u < run.dim) { particles[base + d + 3u] = next.w; }
}
