// Philox4x32-10 and Box–Muller normals.
// CPU twin: src/model/philox.rs — keep in sync (bit-exact integers, same float order).
//
// WGSL has no 64-bit multiply, so mulhilo builds the 64-bit product from 16-bit halves.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const INITIAL_NOISE_STEP: u32 = 0xFFFFFFFFu;
const TAU: f32 = 6.28318530717958647692;

// (hi, lo) of the 64-bit product a * b.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    // Middle column: the carries out of the low 32 bits.
    let cross = (lo_lo >> 16u) + (hi_lo & 0xFFFFu) + (lo_hi & 0xFFFFu);
    let hi = hi_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (cross >> 16u);
    let lo = a * b;
    return vec2<u32>(hi, lo);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var ctr = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, ctr.x);
        let p1 = mulhilo(PHILOX_M1, ctr.z);
        ctr = vec4<u32>(p1.x ^ ctr.y ^ k.x, p1.y, p0.x ^ ctr.w ^ k.y, p0.y);
    }
    return ctr;
}

// Uniform in (0, 1) from the top 24 bits, centred in its cell.
fn uniform_from_bits(x: u32) -> f32 {
    return (f32(x >> 8u) + 0.5) * 5.9604644775390625e-8;
}

// u or u - 1, whichever lies in [-1/2, 1/2] (u - 1 is exact in f32 for u in (1/2, 1)): the
// same angle in turns, but 2π times it lies in [-π, π], the only range on which WGSL bounds
// the error of cos and sin (2^-11 absolute). CPU twin: philox::reduced_turns.
fn reduced_turns(u: f32) -> f32 {
    return select(u, u - 1.0, u > 0.5);
}

// The largest f32 not above π: TAU / 2 (u = 1/2 occurs, the upper half's uniforms being
// rounded) lies 8.7e-8 above π, so the angle is clamped. CPU twin: philox::box_muller_angle.
const PI_BELOW: f32 = 3.1415925;

fn box_muller_angle(u: f32) -> f32 {
    return clamp(TAU * reduced_turns(u), -PI_BELOW, PI_BELOW);
}

// The radius sqrt(-2 ln u). WGSL lets log(u) err by 2^-21 near u = 1, where -2 ln u is
// only ~2^-24: max(., 0) keeps an over-estimate from turning into sqrt(negative) = NaN.
fn box_muller_radius(u: f32) -> f32 {
    return sqrt(max(-2.0 * log(u), 0.0));
}

fn normals_from_bits(bits: vec4<u32>) -> vec4<f32> {
    let u0 = uniform_from_bits(bits.x);
    let u1 = uniform_from_bits(bits.y);
    let u2 = uniform_from_bits(bits.z);
    let u3 = uniform_from_bits(bits.w);
    let r0 = box_muller_radius(u0);
    let r1 = box_muller_radius(u2);
    let a0 = box_muller_angle(u1);
    let a1 = box_muller_angle(u3);
    return vec4<f32>(r0 * cos(a0), r0 * sin(a0), r1 * cos(a1), r1 * sin(a1));
}

// Four normals of `particle` (lo, hi) at `step`, lanes 4*block .. 4*block+3.
fn particle_normals(seed: vec2<u32>, particle: vec2<u32>, step: u32, block: u32) -> vec4<f32> {
    return normals_from_bits(philox4x32_10(vec4<u32>(particle.x, particle.y, step, block), seed));
}
