// The Euler–Maruyama (and DDIM) update of a patch-score step, after patch_denoise wrote
// the denoised image m: x' = keep_coeff x + mean_coeff m + noise_coeff z, the normals of
// coordinates 4b..4b+3 from lane block b of the particle's Philox stream (the contract
// of em_step_general.wgsl). One invocation per 4 coordinates of a particle.
// CPU twin: src/engine/cpu/attention.rs (em_update).
// Assembled after common/params.wgsl, common/philox.wgsl and patch/params.wgsl.

@group(1) @binding(0) var<uniform> step: StepParams;

@compute @workgroup_size(64)
fn patch_em_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let columns = (run.dim + 3u) / 4u;
    let index = (wid.x + wid.y * groups.x) * 64u + lid;
    let i = index / columns;
    if (i >= run.batch_len) {
        return;
    }
    let c = index % columns;
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, global_particle_index(run, i), step.step_index, c);
    for (var k = 0u; k < 4u; k++) {
        let d = 4u * c + k;
        if (d < run.dim) {
            let at = i * run.dim + d;
            particles[at] = step.keep_coeff * particles[at] + step.mean_coeff * denoised[at]
                + step.noise_coeff * z[k];
        }
    }
}
