// The empirical score's reduction: the softmax-weighted mean of the training points,
// accumulated one training point at a time relative to a running reference (online
// softmax, base 2).
// CPU twin: src/engine/cpu/score.rs (OnlineSoftmax) — keep the arithmetic order in sync.

// Largest finite f32: potentials are clamped to -FLT_MAX so that the running max is
// always finite and `pot - max` never forms inf - inf or NaN.
const FLT_MAX: f32 = 3.40282347e+38;

// log2(e): the D <= 4 kernels work with base-2 potentials, so that each weight is one
// exp2 and log2(e) / (2 sigma2) folds into one per-step scale (potential_scale).
const LOG2_E: f32 = 1.442695040888963;

// Coordinates the D <= 4 kernels reduce over: Stage::source_for_dim sets it to the run's
// dimension (1..4), so that D = 2 does no arithmetic on the zero padding lanes. 4 is
// correct for every D <= 4 (the padding lanes are zero), only slower.
const LANES: u32 = 4u;

// How far (base 2) a potential may exceed the reference before the state is rescaled.
// Weights are exp2(pot - reference) <= 2^RESCALE_SLACK, so sums stay far from overflow,
// and the rescale (a second exp2 and a branch that splits SIMD lanes) runs only when the
// maximum grows by more than a factor 256 in weight: rarely after the first points.
const RESCALE_SLACK: f32 = 8.0;

struct OnlineSoftmax {
    // The reference the weights are relative to (base-2 potential): one of the points'
    // potentials (or -FLT_MAX), never more than RESCALE_SLACK below their maximum.
    running_max: f32,
    weight_sum: f32,
    weighted: vec4<f32>,
    // With the posterior tap only (TAP, common/tap_on.wgsl): the largest potential and
    // the training index where it first occurs. Untouched otherwise.
    best: f32,
    best_index: u32,
}

fn online_softmax_new() -> OnlineSoftmax {
    return OnlineSoftmax(-FLT_MAX, 0.0, vec4<f32>(0.0), -FLT_MAX, 0u);
}

// The factor that turns a squared distance into a base-2 potential: -log2(e) / (2 sigma2),
// one f32 product (the CPU twin rounds the same product).
fn potential_scale(inv_two_sigma2: f32) -> f32 {
    return -(inv_two_sigma2 * LOG2_E);
}

// |d|^2 over the first LANES lanes (the others are zero padding).
fn squared_norm(d: vec4<f32>) -> f32 {
    if (LANES == 1u) {
        return d.x * d.x;
    }
    if (LANES == 2u) {
        return dot(d.xy, d.xy);
    }
    if (LANES == 3u) {
        return dot(d.xyz, d.xyz);
    }
    return dot(d, d);
}

// acc * keep + w * xi over the first LANES lanes; the padding lanes stay as they are (0).
fn scaled_add(acc: vec4<f32>, keep: f32, w: f32, xi: vec4<f32>) -> vec4<f32> {
    if (LANES == 1u) {
        return vec4<f32>(acc.x * keep + w * xi.x, acc.yzw);
    }
    if (LANES == 2u) {
        return vec4<f32>(acc.xy * keep + w * xi.xy, acc.zw);
    }
    if (LANES == 3u) {
        return vec4<f32>(acc.xyz * keep + w * xi.xyz, acc.w);
    }
    return acc * keep + w * xi;
}

// acc + w * xi over the first LANES lanes.
fn add_scaled(acc: vec4<f32>, w: f32, xi: vec4<f32>) -> vec4<f32> {
    if (LANES == 1u) {
        return vec4<f32>(acc.x + w * xi.x, acc.yzw);
    }
    if (LANES == 2u) {
        return vec4<f32>(acc.xy + w * xi.xy, acc.zw);
    }
    if (LANES == 3u) {
        return vec4<f32>(acc.xyz + w * xi.xyz, acc.w);
    }
    return acc + w * xi;
}

// Base-2 potential of training point `xi` for particle `x`:
// -log2(e) |x - s xi|^2 / (2 sigma2), `log2_factor` = potential_scale(1 / (2 sigma2)), clamped.
fn potential(x: vec4<f32>, xi: vec4<f32>, mean_scale: f32, log2_factor: f32) -> f32 {
    return max(squared_norm(x - mean_scale * xi) * log2_factor, -FLT_MAX);
}

// Add training point `index`: one exp2, and a rare second one when the reference moves
// up. Points come in index order, so a strict > keeps the lowest index of a tie.
fn online_softmax_push(state: ptr<function, OnlineSoftmax>, pot: f32, xi: vec4<f32>, index: u32) {
    if (TAP && pot > (*state).best) {
        (*state).best = pot;
        (*state).best_index = index;
    }
    if (pot > (*state).running_max + RESCALE_SLACK) {
        // Far above the reference: move the reference to this point.
        let rescale = exp2((*state).running_max - pot);
        (*state).weight_sum = (*state).weight_sum * rescale;
        (*state).weighted = scaled_add((*state).weighted, rescale, 0.0, vec4<f32>(0.0));
        (*state).running_max = pot;
    }
    let w = exp2(pot - (*state).running_max);
    (*state).weight_sum = (*state).weight_sum + w;
    (*state).weighted = add_scaled((*state).weighted, w, xi);
}

// Combine the state of a block of training points into the running state. Summing
// blocks of BLOCK points separately and then merging keeps f32 round-off of the weight
// sums near (BLOCK + N / BLOCK) ulps instead of N ulps for N training points.
fn online_softmax_merge(state: ptr<function, OnlineSoftmax>, block: OnlineSoftmax) {
    // The block's points come after the state's: on a tie the state's index stays.
    if (TAP && block.best > (*state).best) {
        (*state).best = block.best;
        (*state).best_index = block.best_index;
    }
    if (block.running_max > (*state).running_max) {
        let rescale = exp2((*state).running_max - block.running_max);
        (*state).weight_sum = (*state).weight_sum * rescale + block.weight_sum;
        (*state).weighted = scaled_add((*state).weighted, rescale, 1.0, block.weighted);
        (*state).running_max = block.running_max;
    } else {
        let rescale = exp2(block.running_max - (*state).running_max);
        (*state).weight_sum = (*state).weight_sum + block.weight_sum * rescale;
        (*state).weighted = add_scaled((*state).weighted, rescale, block.weighted);
    }
}

fn online_softmax_mean(state: OnlineSoftmax) -> vec4<f32> {
    return state.weighted / state.weight_sum;
}

// The largest softmax weight (TAP only): the best point's weight relative to the
// reference (at most 2^RESCALE_SLACK) over the sum relative to the same reference.
fn online_softmax_max_weight(state: OnlineSoftmax) -> f32 {
    return exp2(state.best - state.running_max) / state.weight_sum;
}

// Carrying the state between chunk dispatches: two vec4 per particle,
// (weighted) and (running_max, weight_sum, best, best_index). The index travels as an
// f32 value, exact below 2^24 (the engine taps no larger training set), not as a
// bitcast: a driver may flush the subnormal floats small integers bitcast to.
// Needs `softmax_state` bound.
fn load_softmax_state(i: u32) -> OnlineSoftmax {
    let extra = softmax_state[2u * i + 1u];
    return OnlineSoftmax(extra.x, extra.y, softmax_state[2u * i], extra.z, u32(extra.w));
}

fn store_softmax_state(i: u32, state: OnlineSoftmax) {
    softmax_state[2u * i] = state.weighted;
    softmax_state[2u * i + 1u] =
        vec4<f32>(state.running_max, state.weight_sum, state.best, f32(state.best_index));
}
