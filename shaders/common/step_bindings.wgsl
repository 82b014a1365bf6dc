// The bindings every step and score stage shares (em_step, heun_step, score and their
// `_general` variants): the run, the particles, the training set and the online-softmax
// state carried between chunk dispatches (group 0), and the dispatch's chunk of training
// points (group 2). Each stage file declares what is its own: its group 1 `step`
// parameters and, where it has one, group 0 binding 3 (scores, or Heun's partial sums).
// Assembled after common/params.wgsl.

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> softmax_state: array<vec4<f32>>;
@group(2) @binding(0) var<uniform> chunk: ChunkParams;
