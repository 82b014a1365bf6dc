// The empirical score at query points for D > 4: score = (s m - x) / sigma2, with m from
// common/reduce_general.wgsl (a workgroup per tile of GENERAL_PARTICLES query points, chunked like score.wgsl).
// CPU twin: src/engine/cpu/reduce_general.rs (score_general).
// Assembled after common/params.wgsl, common/score.wgsl and common/reduce_general.wgsl.

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: StepParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

@compute @workgroup_size(GENERAL_WG)
fn score_general(
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
    let columns = columns_of(run.dim);
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
            let x = particle_column(base, c);
            let value = (step.mean_scale * (state.weighted[j * 4u + q / 4u][q % 4u] / tile_weight_sum[q]) - x) * step.inv_sigma2;
            let d = 4u * c;
            if (d < run.dim) { scores[base + d] = value.x; }
            if (d + 1u < run.dim) { scores[base + d + 1u] = value.y; }
            if (d + 2u < run.dim) { scores[base + d + 2u] = value.z; }
            if (d + 3u < run.dim) { scores[base + d + 3u] = value.w; }
        }
    }
}
