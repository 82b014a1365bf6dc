// The posterior tap (src/engine/mod.rs, PosteriorTap) is off in this module. The reductions
// test TAP before any work for the tap, so with this constant the compiler drops it:
// the untapped steps cost what they did. `Stage::source_tapped` (src/engine/gpu/shaders.rs)
// replaces this whole snippet with common/tap_on.wgsl for the pipelines of the tapped
// steps only.
const TAP: bool = false;

fn store_tap(i: u32, max_weight: f32, argmax: u32) {}
