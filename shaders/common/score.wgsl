// The empirical score's reduction: the softmax-weighted mean of the training points,
// accumulated one training point at a time with a running max (online softmax).
// CPU twin: src/cpu/score.rs (OnlineSoftmax) — keep the arithmetic order in sync.

// Largest finite f32: potentials are clamped to -FLT_MAX so that the running max is
// always finite and `pot - max` never forms inf - inf or NaN.
const FLT_MAX: f32 = 3.40282347e+38;

struct OnlineSoftmax {
    running_max: f32,
    weight_sum: f32,
    weighted: vec4<f32>,
}

fn online_softmax_new() -> OnlineSoftmax {
    return OnlineSoftmax(-FLT_MAX, 0.0, vec4<f32>(0.0));
}

// Potential of training point `xi` for particle `x`: -|x - s xi|^2 / (2 sigma2), clamped.
fn potential(x: vec4<f32>, xi: vec4<f32>, mean_scale: f32, inv_two_sigma2: f32) -> f32 {
    let d = x - mean_scale * xi;
    return max(-dot(d, d) * inv_two_sigma2, -FLT_MAX);
}

// Add one training point: one exp, whichever branch runs.
fn online_softmax_push(state: ptr<function, OnlineSoftmax>, pot: f32, xi: vec4<f32>) {
    if (pot > (*state).running_max) {
        // New maximum: rescale what was accumulated so far.
        let rescale = exp((*state).running_max - pot);
        (*state).weight_sum = (*state).weight_sum * rescale + 1.0;
        (*state).weighted = (*state).weighted * rescale + xi;
        (*state).running_max = pot;
    } else {
        let w = exp(pot - (*state).running_max);
        (*state).weight_sum = (*state).weight_sum + w;
        (*state).weighted = (*state).weighted + w * xi;
    }
}

// Combine the state of a block of training points into the running state. Summing
// blocks of BLOCK points separately and then merging keeps f32 round-off of the weight
// sums near (BLOCK + N / BLOCK) ulps instead of N ulps for N training points.
fn online_softmax_merge(state: ptr<function, OnlineSoftmax>, block: OnlineSoftmax) {
    if (block.running_max > (*state).running_max) {
        let rescale = exp((*state).running_max - block.running_max);
        (*state).weight_sum = (*state).weight_sum * rescale + block.weight_sum;
        (*state).weighted = (*state).weighted * rescale + block.weighted;
        (*state).running_max = block.running_max;
    } else {
        let rescale = exp(block.running_max - (*state).running_max);
        (*state).weight_sum = (*state).weight_sum + block.weight_sum * rescale;
        (*state).weighted = (*state).weighted + block.weighted * rescale;
    }
}

fn online_softmax_mean(state: OnlineSoftmax) -> vec4<f32> {
    return state.weighted / state.weight_sum;
}

// Carrying the state between chunk dispatches: two vec4 per particle,
// (weighted) and (running_max, weight_sum, 0, 0). Needs `softmax_state` bound.
fn load_softmax_state(i: u32) -> OnlineSoftmax {
    let extra = softmax_state[2u * i + 1u];
    return OnlineSoftmax(extra.x, extra.y, softmax_state[2u * i]);
}

fn store_softmax_state(i: u32, state: OnlineSoftmax) {
    softmax_state[2u * i] = state.weighted;
    softmax_state[2u * i + 1u] = vec4<f32>(state.running_max, state.weight_sum, 0.0, 0.0);
}
