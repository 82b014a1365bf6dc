// Parameter blocks. Keep in sync with src/engine/records.rs (same fields, order and types).

const MAX_DIM: u32 = 4u;

struct RunParams {
    seed_lo: u32,
    seed_hi: u32,
    first_particle_lo: u32,
    first_particle_hi: u32,
    batch_len: u32,
    dim: u32,
    n_train: u32,
    threads_per_row: u32,
    initial_std: f32,
    // Rows whose posterior a tapped stage writes (common/tap_on.wgsl).
    tap_rows: u32,
    _pad1: u32,
    _pad2: u32,
}

struct StepParams {
    step_index: u32,
    mean_scale: f32,
    sigma2: f32,
    inv_two_sigma2: f32,
    keep_coeff: f32,
    mean_coeff: f32,
    noise_coeff: f32,
    inv_sigma2: f32,
    t: f32,
    dt: f32,
    beta: f32,
    _pad: u32,
}

// One half of a Heun step of the probability-flow ODE (heun_step.wgsl). Same size as
// StepParams: both are records of the step-parameter buffer.
struct HeunParams {
    // 0: predictor, 1: corrector.
    phase: u32,
    mean_scale: f32,
    inv_two_sigma2: f32,
    x_coeff: f32,
    mean_coeff: f32,
    partial_x_coeff: f32,
    partial_mean_coeff: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

// Global particle index (lo, hi) of batch-local index `i`: a 64-bit add with carry.
fn global_particle_index(run: RunParams, i: u32) -> vec2<u32> {
    let lo = run.first_particle_lo + i;
    let carry = select(0u, 1u, lo < i);
    return vec2<u32>(lo, run.first_particle_hi + carry);
}

// Batch-local index of this invocation in a 2-D dispatch (x fastest).
fn linear_invocation_index(run: RunParams, gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * run.threads_per_row;
}

// The range of training points one dispatch reduces over. Large training sets are split
// into chunks reduced by successive dispatches, the online-softmax state carried in a
// storage buffer between them: it bounds the work of one invocation (software
// rasterizers such as lavapipe stop any loop after 65535 iterations in total).
// Keep in sync with ChunkParams in src/engine/records.rs.
struct ChunkParams {
    start: u32,
    count: u32,
    // 1 if this is the first chunk (start a fresh state), else 0.
    first: u32,
    // 1 if this is the last chunk (finish the step), else 0.
    last: u32,
}
