// Parameter blocks and bindings of the patch-score stages (patch_denoise, patch_em_step,
// patch_heun_step). Keep in sync with src/engine/gpu/patch.rs (same fields, order and types).
// Assembled after common/params.wgsl.

// The image geometry of a patch score. The patch size and channel count are constants of
// each pipeline (PATCH_K, PATCH_CHANNELS below, set by the host), so the loops over a
// patch have fixed bounds and the query patch stays in registers.
struct PatchParams {
    height: u32,
    width: u32,
    // 1: the noisy image is read circularly (els), 0: zero outside the image.
    circular: u32,
    // Workgroups per pixel: blocks of PATCH_WG particles.
    particle_blocks: u32,
}

// The score's scale and temperature at one record (a sampler's score evaluation).
struct PatchScoreParams {
    mean_scale: f32,
    inv_two_sigma2: f32,
    _pad0: u32,
    _pad1: u32,
}

// Set per pipeline by the host (src/engine/gpu/patch.rs): the patch side k and the
// channels of a pixel (1..4).
const PATCH_K: u32 = 3u;
const PATCH_CHANNELS: u32 = 1u;
const PATCH_RADIUS: u32 = PATCH_K / 2u;
const PATCH_LEN: u32 = PATCH_K * PATCH_K * PATCH_CHANNELS;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
// The denoised image m of every particle (same layout as the particles).
@group(0) @binding(2) var<storage, read_write> denoised: array<f32>;
// Heun's corrector part between the predictor and the corrector.
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
