// The posterior tap is on in this module (it replaces common/tap_off.wgsl): the
// reductions also track each particle's largest potential and its first training index,
// and the last chunk's dispatch writes (largest softmax weight, argmax) of the first
// `run.tap_rows` particles. The engine binds group 3 at a dynamic offset: one region of
// the tap buffer per tapped step, so the host reads the buffer once per batch segment.
// Keep TapEntry in sync with TapEntry in src/engine/gpu/engine.rs.
const TAP: bool = true;

struct TapEntry {
    max_weight: f32,
    argmax: u32,
}

@group(3) @binding(0) var<storage, read_write> tap_out: array<TapEntry>;

fn store_tap(i: u32, max_weight: f32, argmax: u32) {
    if (i < run.tap_rows) {
        tap_out[i] = TapEntry(max_weight, argmax);
    }
}
