//! WGSL has no `#include`: each stage is assembled from the shared snippets in
//! `shaders/common/` and its own file, at compile time via `include_str!`.

const PARAMS: &str = include_str!("../../../shaders/common/params.wgsl");
const PHILOX: &str = include_str!("../../../shaders/common/philox.wgsl");
const SCORE_COMMON: &str = include_str!("../../../shaders/common/score.wgsl");
const STEP_BINDINGS: &str = include_str!("../../../shaders/common/step_bindings.wgsl");
const TRAINING_SIMPLE: &str = include_str!("../../../shaders/common/training_simple.wgsl");
const TRAINING_TILED: &str = include_str!("../../../shaders/common/training_tiled.wgsl");
const REDUCE_CHUNK: &str = include_str!("../../../shaders/common/reduce_chunk.wgsl");
const REDUCE_GENERAL: &str = include_str!("../../../shaders/common/reduce_general.wgsl");
const TAP_OFF: &str = include_str!("../../../shaders/common/tap_off.wgsl");
const TAP_ON: &str = include_str!("../../../shaders/common/tap_on.wgsl");
const GENERAL_LANES_SHARED: &str =
    include_str!("../../../shaders/common/general_lanes_shared.wgsl");
const GENERAL_LANES_SUBGROUP: &str =
    include_str!("../../../shaders/common/general_lanes_subgroup.wgsl");

const INIT_NOISE: &str = include_str!("../../../shaders/init_noise.wgsl");
const EM_STEP: &str = include_str!("../../../shaders/em_step.wgsl");
const SCORE: &str = include_str!("../../../shaders/score.wgsl");
const EM_STEP_GENERAL: &str = include_str!("../../../shaders/em_step_general.wgsl");
const HEUN_STEP: &str = include_str!("../../../shaders/heun_step.wgsl");
const HEUN_STEP_GENERAL: &str = include_str!("../../../shaders/heun_step_general.wgsl");
const SCORE_GENERAL: &str = include_str!("../../../shaders/score_general.wgsl");
const PHILOX_KAT: &str = include_str!("../../../shaders/philox_kat.wgsl");
const HEATMAP_DEPOSIT: &str = include_str!("../../../shaders/heatmap/deposit.wgsl");
const NEAREST: &str = include_str!("../../../shaders/nearest.wgsl");
const PATCH_PARAMS: &str = include_str!("../../../shaders/patch/params.wgsl");
const PATCH_DENOISE: &str = include_str!("../../../shaders/patch_denoise.wgsl");
const PATCH_EM_STEP: &str = include_str!("../../../shaders/patch_em_step.wgsl");
const PATCH_HEUN_STEP: &str = include_str!("../../../shaders/patch_heun_step.wgsl");

/// One GPU stage: its name (= entry point), the pieces it is assembled from and how its
/// workgroup size is set.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// The WGSL entry point.
    pub entry_point: &'static str,
    parts: &'static [&'static str],
    /// Declared here rather than found in the WGSL text, so that pipeline creation and
    /// dispatch arithmetic follow one declaration; tests/shaders.rs checks it against the
    /// entry point naga parses, so a mismatch fails a test, not a run.
    pub workgroup: Workgroup,
}

/// How a stage's workgroup size is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workgroup {
    /// `@workgroup_size(NAME)` with `override NAME: u32`: the host chooses the size when it
    /// makes the pipeline (the stage's results do not depend on it).
    Override(&'static str),
    /// A size the WGSL fixes (`@workgroup_size(64)`, or a `const`): the host dispatches
    /// workgroups of this many invocations.
    Fixed(u32),
}

impl Workgroup {
    /// The fixed size (for host constants; an override has none, a compile-time error
    /// where this is evaluated in a `const`).
    pub const fn fixed_size(self) -> u32 {
        match self {
            Workgroup::Override(_) => panic!("the workgroup size is an override"),
            Workgroup::Fixed(size) => size,
        }
    }
}

/// The override the D <= 4 stages, the initial noise and the nearest-neighbour stage
/// declare (`override WORKGROUP_SIZE: u32`).
const WORKGROUP_SIZE_OVERRIDE: Workgroup = Workgroup::Override("WORKGROUP_SIZE");

/// The general-D stages: `@workgroup_size(GENERAL_WG)` (common/reduce_general.wgsl).
const GENERAL_WORKGROUP: Workgroup = Workgroup::Fixed(crate::engine::records::GENERAL_WG as u32);

impl Stage {
    /// The complete WGSL module for this stage. The step and score stages take their
    /// entry point from a shared snippet (common/reduce_chunk.wgsl,
    /// common/reduce_general.wgsl), where it is a placeholder named here after the stage.
    pub fn source(&self) -> String {
        self.parts.join("\n").replace(
            ENTRY_POINT_PLACEHOLDER,
            &format!("fn {}(", self.entry_point),
        )
    }

    /// The module of this stage specialised for dimension `dim`. D <= 4 stages reduce
    /// over `LANES = dim` coordinates instead of all 4 padded ones (common/score.wgsl).
    /// General-D stages (D > 4) get `OWNED`, the columns of 4 coordinates each invocation
    /// accumulates (of every particle of its tile), bounded for dimension `dim` instead of
    /// for `MAX_DIMENSION`: hardware then keeps the accumulators in registers rather than
    /// spilling a 256-entry array. Rounded up to a power of two so that few pipelines
    /// cover all dimensions. Other stages are returned unchanged.
    pub fn source_for_dim(&self, dim: usize) -> String {
        let source = self.source();
        let owned = general_owned_columns(dim);
        let lanes = dim.clamp(1, 4);
        source
            .replace(
                GENERAL_OWNED_DECLARATION,
                &format!("const OWNED: u32 = {owned}u;"),
            )
            .replace(LANES_DECLARATION, &format!("const LANES: u32 = {lanes}u;"))
    }

    /// The module of a patch-score stage for patches of side `k` with `channels` (1..=4)
    /// channels a pixel: the constants of patch/params.wgsl, and the reduction's `LANES`
    /// (the channels of a patch's centre pixel, accumulated as a vec4).
    pub fn source_for_patch(&self, k: usize, channels: usize) -> String {
        self.source()
            .replace(PATCH_K_DECLARATION, &format!("const PATCH_K: u32 = {k}u;"))
            .replace(
                PATCH_CHANNELS_DECLARATION,
                &format!("const PATCH_CHANNELS: u32 = {channels}u;"),
            )
            .replace(
                LANES_DECLARATION,
                &format!("const LANES: u32 = {}u;", channels.clamp(1, 4)),
            )
    }

    /// Whether this stage has a posterior-tap variant ([`source_tapped`](Self::source_tapped)).
    pub fn can_tap(&self) -> bool {
        self.parts.contains(&TAP_OFF)
    }

    /// [`source_for_dim`](Self::source_for_dim) with the posterior tap on
    /// (common/tap_on.wgsl instead of common/tap_off.wgsl): the reduction also tracks each
    /// particle's largest potential and its index and writes them to group 3 at the last
    /// chunk. Panics for a stage without a reduction.
    pub fn source_tapped(&self, dim: usize) -> String {
        assert!(self.can_tap(), "{} has no posterior tap", self.entry_point);
        self.source_for_dim(dim).replace(TAP_OFF, TAP_ON)
    }

    /// Whether this stage has a subgroup variant (the general-D stages).
    pub fn can_use_subgroups(&self) -> bool {
        self.parts.contains(&GENERAL_LANES_SHARED)
    }

    /// The module for dimension `dim`, with the posterior tap on or off (see
    /// [`source_tapped`](Self::source_tapped)), and for the general-D stages with
    /// `subgroups` the logits reading the particle tile by subgroup broadcasts
    /// (common/general_lanes_subgroup.wgsl; needs `wgpu::Features::SUBGROUP` and subgroups
    /// of 8 to 64 invocations) instead of workgroup loads. Same results either way.
    pub fn source_variant(&self, dim: usize, tapped: bool, subgroups: bool) -> String {
        let source = if tapped {
            self.source_tapped(dim)
        } else {
            self.source_for_dim(dim)
        };
        if subgroups && self.can_use_subgroups() {
            // No `enable subgroups;`: naga (wgpu 30) takes the subgroup built-ins without
            // it and rejects the directive as not yet implemented; wgpu checks the feature.
            source.replace(GENERAL_LANES_SHARED, GENERAL_LANES_SUBGROUP)
        } else {
            source
        }
    }
}

/// The shared entry point's name in common/reduce_chunk.wgsl and common/reduce_general.wgsl.
const ENTRY_POINT_PLACEHOLDER: &str = "fn STAGE_ENTRY_POINT(";

/// The declaration of the D <= 4 reductions' lane count (in common/score.wgsl).
const LANES_DECLARATION: &str = "const LANES: u32 = 4u;";

/// The declarations `Stage::source_for_patch` specialises (in patch/params.wgsl).
const PATCH_K_DECLARATION: &str = "const PATCH_K: u32 = 3u;";
const PATCH_CHANNELS_DECLARATION: &str = "const PATCH_CHANNELS: u32 = 1u;";

/// The declaration `Stage::source_for_dim` specialises (in common/reduce_general.wgsl).
const GENERAL_OWNED_DECLARATION: &str = "const OWNED: u32 = 16u;";

/// `OWNED` of the general-D stages for dimension `dim`: columns per invocation, rounded
/// up to a power of two (at least 1, at most 16 = MAX_COLUMNS / GENERAL_WG).
pub fn general_owned_columns(dim: usize) -> usize {
    dim.div_ceil(4)
        .div_ceil(crate::engine::records::GENERAL_WG)
        .next_power_of_two()
        .clamp(1, 16)
}

pub const INIT_NOISE_STAGE: Stage = Stage {
    entry_point: "init_noise",
    parts: &[PARAMS, PHILOX, INIT_NOISE],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
/// The Euler–Maruyama step with the simple reduction (small training sets).
pub const EM_STEP_STAGE: Stage = Stage {
    entry_point: "em_step",
    parts: &[
        PARAMS,
        PHILOX,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_SIMPLE,
        REDUCE_CHUNK,
        EM_STEP,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
/// The Euler–Maruyama step with training points tiled through shared memory.
pub const EM_STEP_TILED_STAGE: Stage = Stage {
    entry_point: "em_step",
    parts: &[
        PARAMS,
        PHILOX,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_TILED,
        REDUCE_CHUNK,
        EM_STEP,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
pub const SCORE_STAGE: Stage = Stage {
    entry_point: "score",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_SIMPLE,
        REDUCE_CHUNK,
        SCORE,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
pub const SCORE_TILED_STAGE: Stage = Stage {
    entry_point: "score",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_TILED,
        REDUCE_CHUNK,
        SCORE,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
/// The Euler–Maruyama step for D > 4: one workgroup per particle.
pub const EM_STEP_GENERAL_STAGE: Stage = Stage {
    entry_point: "em_step_general",
    parts: &[
        PARAMS,
        PHILOX,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        GENERAL_LANES_SHARED,
        REDUCE_GENERAL,
        EM_STEP_GENERAL,
    ],
    workgroup: GENERAL_WORKGROUP,
};
/// The score for D > 4: one workgroup per query point.
pub const SCORE_GENERAL_STAGE: Stage = Stage {
    entry_point: "score_general",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        GENERAL_LANES_SHARED,
        REDUCE_GENERAL,
        SCORE_GENERAL,
    ],
    workgroup: GENERAL_WORKGROUP,
};
/// Half a Heun step of the probability-flow ODE, simple reduction (D <= 4).
pub const HEUN_STEP_STAGE: Stage = Stage {
    entry_point: "heun_step",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_SIMPLE,
        REDUCE_CHUNK,
        HEUN_STEP,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
/// Half a Heun step, training points tiled through shared memory (D <= 4).
pub const HEUN_STEP_TILED_STAGE: Stage = Stage {
    entry_point: "heun_step",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        TRAINING_TILED,
        REDUCE_CHUNK,
        HEUN_STEP,
    ],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};
/// Half a Heun step for D > 4: one workgroup per particle.
pub const HEUN_STEP_GENERAL_STAGE: Stage = Stage {
    entry_point: "heun_step_general",
    parts: &[
        PARAMS,
        TAP_OFF,
        SCORE_COMMON,
        STEP_BINDINGS,
        GENERAL_LANES_SHARED,
        REDUCE_GENERAL,
        HEUN_STEP_GENERAL,
    ],
    workgroup: GENERAL_WORKGROUP,
};
pub const PHILOX_KAT_STAGE: Stage = Stage {
    entry_point: "philox_kat",
    parts: &[PHILOX, PHILOX_KAT],
    workgroup: Workgroup::Fixed(64),
};

/// Density grids: particles deposited on the sub-grid (src/engine/gpu/raster.rs).
pub const DEPOSIT_STAGE: Stage = Stage {
    entry_point: "deposit",
    parts: &[HEATMAP_DEPOSIT],
    workgroup: Workgroup::Fixed(64),
};

/// The three nearest training points per sample (memorization metrics); any dimension.
pub const NEAREST_STAGE: Stage = Stage {
    entry_point: "nearest",
    parts: &[NEAREST],
    workgroup: WORKGROUP_SIZE_OVERRIDE,
};

/// The denoised image of a patch-local score: a workgroup per pixel and block of
/// particles (src/engine/gpu/patch.rs).
pub const PATCH_DENOISE_STAGE: Stage = Stage {
    entry_point: "patch_denoise",
    parts: &[PARAMS, TAP_OFF, SCORE_COMMON, PATCH_PARAMS, PATCH_DENOISE],
    workgroup: Workgroup::Fixed(64),
};
/// The Euler–Maruyama (and DDIM) update of a patch-score step from the denoised image.
pub const PATCH_EM_STEP_STAGE: Stage = Stage {
    entry_point: "patch_em_step",
    parts: &[PARAMS, PHILOX, PATCH_PARAMS, PATCH_EM_STEP],
    workgroup: Workgroup::Fixed(64),
};
/// Half a Heun step of a patch score from the denoised image.
pub const PATCH_HEUN_STEP_STAGE: Stage = Stage {
    entry_point: "patch_heun_step",
    parts: &[PARAMS, PATCH_PARAMS, PATCH_HEUN_STEP],
    workgroup: Workgroup::Fixed(64),
};

/// Every stage, for validation in tests (naga) and for pipeline creation.
pub const ALL_STAGES: &[Stage] = &[
    INIT_NOISE_STAGE,
    EM_STEP_STAGE,
    EM_STEP_TILED_STAGE,
    SCORE_STAGE,
    SCORE_TILED_STAGE,
    EM_STEP_GENERAL_STAGE,
    SCORE_GENERAL_STAGE,
    HEUN_STEP_STAGE,
    HEUN_STEP_TILED_STAGE,
    HEUN_STEP_GENERAL_STAGE,
    PHILOX_KAT_STAGE,
    DEPOSIT_STAGE,
    NEAREST_STAGE,
    PATCH_DENOISE_STAGE,
    PATCH_EM_STEP_STAGE,
    PATCH_HEUN_STEP_STAGE,
];
