// One Euler–Maruyama step of the reverse SDE for every particle of the batch.
// CPU twin: src/engine/cpu/em_step.rs — keep the arithmetic in the same order.
// Assembled after common/params.wgsl, common/philox.wgsl, common/score.wgsl, one of
// common/training_simple.wgsl / common/training_tiled.wgsl (the reduction strategy) and
// common/reduce_chunk.wgsl.
//
// The update folds drift and diffusion into three host-computed coefficients:
//   x' = x + dt (beta x / 2 + beta score) + sqrt(dt beta) z
//      = keep_coeff x + mean_coeff m + noise_coeff z,   m = sum_i w_i x_i.
// With a training set larger than one chunk, a step is several dispatches: each reduces
// one chunk into `softmax_state`, and the last one also moves the particle.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: StepParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn em_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local_index: u32,
) {
    let first = workgroup_first_particle(wid, num_workgroups);
    // A workgroup wholly past the batch (the last row of a 2-D grid) has nothing to
    // reduce: the same condition for all its invocations, so returning keeps the tiled
    // reduction's barriers valid.
    if (first >= run.batch_len) {
        return;
    }
    // No other early return before this: the tiled reduction needs every invocation.
    let i0 = first + local_index;
    let i1 = i0 + WORKGROUP_SIZE;
    let pair = reduce_chunk_pair(i0, i1, local_index, step.mean_scale, step.inv_two_sigma2);
    move_particle(i0, pair.first);
    move_particle(i1, pair.second);
}

fn move_particle(i: u32, reduced: ChunkReduction) {
    if (!reduced.finished) {
        return;
    }
    let x = reduced.x;
    let base = i * run.dim;
    let m = online_softmax_mean(reduced.state);
    let particle = global_particle_index(run, i);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, particle, step.step_index, 0u);
    let next = step.keep_coeff * x + step.mean_coeff * m + step.noise_coeff * z;
    for (var d = 0u; d < run.dim; d++) {
        particles[base + d] = next[d];
    }
}
