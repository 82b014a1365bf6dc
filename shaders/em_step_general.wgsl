// One Euler–Maruyama step for D > 4: a workgroup per tile of GENERAL_PARTICLES particles, the training points
// reduced by common/reduce_general.wgsl. Same update and random-number contract as
// em_step.wgsl: x' = keep_coeff x + mean_coeff m + noise_coeff z, where the normals of
// coordinates 4b..4b+3 come from lane block b of the particle's Philox stream.
// CPU twin: src/engine/cpu/em_step_general.rs — keep the arithmetic in the same order.
// Assembled after common/params.wgsl, common/philox.wgsl, common/score.wgsl and
// common/reduce_general.wgsl; chunked over training points like em_step.wgsl.

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: StepParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

@compute @workgroup_size(GENERAL_WG)
fn em_step_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    invocation: GeneralInvocation,
) {
    let lid = invocation.lid;
    // A tile of GENERAL_PARTICLES particles per workgroup: the same first particle for
    // every invocation, so this return (a workgroup past the batch) is uniform and the
    // barriers of the reduction stay valid.
    let first_particle = (wid.x + wid.y * groups.x) * GENERAL_PARTICLES;
    if (first_particle >= run.batch_len) {
        return;
    }
    let state = reduce_general(first_particle, invocation, step.mean_scale, step.inv_two_sigma2);
    if (chunk.last == 0u) {
        return;
    }
    // The barriers of the last tile ordered every read of the particles into workgroup
    // memory before these writes; each column is read and written by one invocation.
    let columns = columns_of(run.dim);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    // Invocation lid writes columns lid, lid + GENERAL_WG, ... of every live particle.
    for (var j = 0u; j < OWNED; j++) {
        let c = lid + j * GENERAL_WG;
        if (c >= columns) {
            break;
        }
        for (var q = 0u; q < GENERAL_PARTICLES; q++) {
            let i = first_particle + q;
            if (i >= run.batch_len) {
                break;
            }
            let base = i * run.dim;
            let particle = global_particle_index(run, i);
            let x = particle_column(base, c);
            let m = state.weighted[j * 4u + q / 4u][q % 4u] / tile_weight_sum[q];
            let z = particle_normals(seed, particle, step.step_index, c);
            let next = step.keep_coeff * x + step.mean_coeff * m + step.noise_coeff * z;
            let d = 4u * c;
            if (d < run.dim) { particles[base + d] = next.x; }
            if (d + 1u < run.dim) { particles[base + d + 1u] = next.y; }
            if (d + 2u < run.dim) { particles[base + d + 2u] = next.z; }
            if (d + 3u < run.dim) { particles[base + d + 3u] = next.w; }
        }
    }
}
