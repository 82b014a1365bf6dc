// Initial particles x_1 = sqrt(sigma2(1)) z, z ~ N(0, I) from the INITIAL_NOISE_STEP stream.
// CPU twin: src/cpu/init_noise.rs.
// Assembled after common/params.wgsl and common/philox.wgsl.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn init_noise(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = linear_invocation_index(run, gid);
    if (i >= run.batch_len) {
        return;
    }
    let particle = global_particle_index(run, i);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, particle, INITIAL_NOISE_STEP, 0u);
    let base = i * run.dim;
    for (var d = 0u; d < run.dim; d++) {
        particles[base + d] = run.initial_std * z[d];
    }
}
