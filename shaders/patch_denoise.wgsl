// The denoised image of a patch-local score (--score local:k, els:k, bbels:k): for every
// pixel p of every particle x, the softmax over p's dictionary of training patches phi_j
// of -|x_Omega(p) - s phi_j|^2 / (2 sigma2), and m(p) = sum_j w_j phi_j(centre), all
// channels. The same online softmax as the empirical score (common/score.wgsl), over
// patches instead of whole points.
// CPU twin: src/engine/cpu/patch.rs (PatchDictionaries::denoise); f64 reference:
// src/model/patch_score.rs (PatchReference::denoised).
// Assembled after common/params.wgsl, common/tap_off.wgsl, common/score.wgsl (LANES =
// PATCH_CHANNELS) and patch/params.wgsl.
//
// A workgroup serves PATCH_WG particles at one pixel: every invocation reads the same
// dictionary, staged a tile of patches at a time through shared memory, against its own
// particle's patch, held in registers. Large dictionaries are split into chunks reduced
// by successive dispatches (the group-2 ChunkParams), the state carried in
// `softmax_state` per (particle, pixel).

// The dictionaries of all pixels, patch after patch (PATCH_LEN values each).
@group(0) @binding(4) var<storage, read> dictionary: array<f32>;
// Per pixel: (its dictionary's first patch, its patch count).
@group(0) @binding(5) var<storage, read> pixel_dictionaries: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> geometry: PatchParams;
@group(1) @binding(0) var<uniform> score: PatchScoreParams;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;

const PATCH_WG: u32 = 64u;
// Shared memory for one tile of dictionary patches: 16 KiB, the least WebGPU guarantees.
const TILE_VALUES: u32 = 4096u;
const TILE_PATCHES: u32 = TILE_VALUES / PATCH_LEN;

var<workgroup> tile: array<f32, TILE_VALUES>;

// Value of `particle`'s image at (y, x), channel c, as the score reads the noisy image:
// wrapped around for els, zero outside otherwise.
fn noisy_value(base: u32, y: i32, x: i32, c: u32) -> f32 {
    let h = i32(geometry.height);
    let w = i32(geometry.width);
    var yy = y;
    var xx = x;
    if (geometry.circular != 0u) {
        // y >= -r > -h (els patches fit the image), so y + h >= 0: an unsigned
        // remainder, which every backend defines (GLSL leaves % of negatives undefined).
        yy = i32(u32(y + h) % u32(h));
        xx = i32(u32(x + w) % u32(w));
    } else if (y < 0 || y >= h || x < 0 || x >= w) {
        return 0.0;
    }
    return particles[base + (u32(yy) * geometry.width + u32(xx)) * PATCH_CHANNELS + c];
}

@compute @workgroup_size(PATCH_WG)
fn patch_denoise(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // One pixel per workgroup: the return below, and every loop bound before the
    // barriers, are the same for all its invocations.
    let w = wid.x + wid.y * groups.x;
    let pixels = geometry.height * geometry.width;
    let pixel = w / geometry.particle_blocks;
    if (pixel >= pixels) {
        return;
    }
    let i = (w % geometry.particle_blocks) * PATCH_WG + lid;
    let live = i < run.batch_len;
    let base = i * run.dim;
    let row = i32(pixel / geometry.width);
    let col = i32(pixel % geometry.width);
    let r = i32(PATCH_RADIUS);
    var query: array<f32, PATCH_LEN>;
    if (live) {
        for (var dy = 0u; dy < PATCH_K; dy++) {
            for (var dx = 0u; dx < PATCH_K; dx++) {
                for (var c = 0u; c < PATCH_CHANNELS; c++) {
                    query[(dy * PATCH_K + dx) * PATCH_CHANNELS + c] =
                        noisy_value(base, row + i32(dy) - r, col + i32(dx) - r, c);
                }
            }
        }
    }
    let q = i * pixels + pixel;
    var state = online_softmax_new();
    if (live && chunk.first == 0u) {
        state = load_softmax_state(q);
    }
    let own = pixel_dictionaries[pixel];
    let end = min(chunk.start + chunk.count, own.y);
    let log2_factor = potential_scale(score.inv_two_sigma2);
    let centre = (PATCH_RADIUS * PATCH_K + PATCH_RADIUS) * PATCH_CHANNELS;
    for (var first = chunk.start; first < end; first += TILE_PATCHES) {
        let patches = min(TILE_PATCHES, end - first);
        let values = patches * PATCH_LEN;
        let tile_start = (own.x + first) * PATCH_LEN;
        workgroupBarrier();
        for (var v = lid; v < values; v += PATCH_WG) {
            tile[v] = dictionary[tile_start + v];
        }
        workgroupBarrier();
        for (var j = 0u; j < patches; j++) {
            let at = j * PATCH_LEN;
            var d2 = 0.0;
            for (var e = 0u; e < PATCH_LEN; e++) {
                let d = query[e] - score.mean_scale * tile[at + e];
                d2 += d * d;
            }
            var centre_value = vec4<f32>(0.0);
            for (var c = 0u; c < PATCH_CHANNELS; c++) {
                centre_value[c] = tile[at + centre + c];
            }
            online_softmax_push(&state, max(d2 * log2_factor, -FLT_MAX), centre_value, first + j);
        }
    }
    if (!live) {
        return;
    }
    if (chunk.last == 0u) {
        store_softmax_state(q, state);
        return;
    }
    let m = online_softmax_mean(state);
    for (var c = 0u; c < PATCH_CHANNELS; c++) {
        denoised[base + pixel * PATCH_CHANNELS + c] = m[c];
    }
}
