// Initial particles x_1 = sqrt(sigma2(1)) z, z ~ N(0, I) from the INITIAL_NOISE_STEP stream,
// any D (one invocation per particle).
// CPU twin: src/engine/cpu/init_noise.rs.
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
    let base = i * run.dim;
    // Coordinates 4b..4b+3 from lane block b (the random-number contract, docs/architecture.md §2): one block for D <= 4.
    for (var block = 0u; 4u * block < run.dim; block++) {
        let z = particle_normals(seed, particle, INITIAL_NOISE_STEP, block);
        for (var k = 0u; k < 4u && 4u * block + k < run.dim; k++) {
            particles[base + 4u * block + k] = run.initial_std * z[k];
        }
    }
}
