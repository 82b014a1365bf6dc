// One half of a Heun step of a patch score, after patch_denoise wrote the denoised image
// m: the predictor keeps its corrector part in `partial`, the corrector adds it (the
// halves of heun_step_general.wgsl). One invocation per coordinate.
// CPU twin: src/engine/cpu/attention.rs (heun_update).
// Assembled after common/params.wgsl and patch/params.wgsl.

@group(1) @binding(0) var<uniform> step: HeunParams;

@compute @workgroup_size(64)
fn patch_heun_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = (wid.x + wid.y * groups.x) * 64u + lid;
    if (at >= run.batch_len * run.dim) {
        return;
    }
    let x = particles[at];
    let m = denoised[at];
    let next = step.x_coeff * x + step.mean_coeff * m;
    if (step.phase == 0u) {
        partial[at] = step.partial_x_coeff * x + step.partial_mean_coeff * m;
        particles[at] = next;
    } else {
        particles[at] = partial[at] + next;
    }
}
