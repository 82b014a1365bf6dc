// Test stage: raw Philox4x32-10 words and Box–Muller normals for given (counter, key)
// pairs, so the CPU twin (src/model/philox.rs) can be checked bit for bit on the GPU.
// Assembled after common/philox.wgsl.

struct PhiloxCase {
    counter: vec4<u32>,
    key: vec2<u32>,
    _pad: vec2<u32>,
}

@group(0) @binding(0) var<storage, read> cases: array<PhiloxCase>;
@group(0) @binding(1) var<storage, read_write> words: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> normals: array<vec4<f32>>;

@compute @workgroup_size(64)
fn philox_kat(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= arrayLength(&cases)) {
        return;
    }
    let bits = philox4x32_10(cases[i].counter, cases[i].key);
    words[i] = bits;
    normals[i] = normals_from_bits(bits);
}
