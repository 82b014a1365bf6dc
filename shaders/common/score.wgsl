// The empirical score's reduction: the softmax-weighted mean of the training points.
// CPU twin: src/cpu/score.rs (weighted_training_mean) — keep the arithmetic order in sync.
//
// Needs in the assembled module: `training: array<vec4<f32>>` (points padded to vec4 with
// zeros) and `run: RunParams`.

// Largest finite f32: potentials are clamped to -FLT_MAX so that the running max is
// always finite and `pot - max` never forms inf - inf.
const FLT_MAX: f32 = 3.40282347e+38;

// sum_i w_i x_i with w = softmax_i(-|x - s x_i|^2 / (2 sigma2)), in one pass with a
// running max (online softmax): one exp per training point.
fn weighted_training_mean(x: vec4<f32>, mean_scale: f32, inv_two_sigma2: f32) -> vec4<f32> {
    let first = training[0];
    let d0 = x - mean_scale * first;
    var running_max = max(-dot(d0, d0) * inv_two_sigma2, -FLT_MAX);
    var weight_sum = 1.0;
    var weighted = first;
    for (var i = 1u; i < run.n_train; i++) {
        let xi = training[i];
        let d = x - mean_scale * xi;
        let pot = max(-dot(d, d) * inv_two_sigma2, -FLT_MAX);
        if (pot > running_max) {
            // New maximum: rescale what was accumulated so far.
            let rescale = exp(running_max - pot);
            weight_sum = weight_sum * rescale + 1.0;
            weighted = weighted * rescale + xi;
            running_max = pot;
        } else {
            let w = exp(pot - running_max);
            weight_sum = weight_sum + w;
            weighted = weighted + w * xi;
        }
    }
    return weighted / weight_sum;
}
