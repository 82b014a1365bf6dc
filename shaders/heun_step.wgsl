// One half of a Heun step of the probability-flow ODE for every particle (D <= 4):
// dx/dt = beta x / 2 + beta score / 2 in reverse time, i.e. v(x, tau) = a x + b m(x, tau).
// CPU twin: src/engine/cpu/heun_step.rs — keep the arithmetic in the same order.
// Assembled like em_step.wgsl (params, score, a training_* reduction, reduce_chunk).
//
// Predictor (phase 0): x~ = x_coeff x + mean_coeff m replaces the particle, and the
//   corrector's known part partial_x_coeff x + partial_mean_coeff m goes to `partial`.
// Corrector (phase 1, the particle now holds x~): x' = partial + x_coeff x~ + mean_coeff m.
// The last step is a predictor alone (Euler), see HeunParams in src/engine/records.rs.
// No noise: only the initial particles are random (init_noise.wgsl, as for em).

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: HeunParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn heun_step(
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
