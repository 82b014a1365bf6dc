//! The WGSL modules against the host, with naga and no GPU: every module the engines
//! assemble parses and validates; every struct the host writes into or reads from a
//! uniform or storage buffer has the same layout, field by field, on both sides; every
//! `const` of the WGSL has the value of its Rust twin; and each stage's declared workgroup
//! size is the one its entry point has.
//!
//! The tables below are the contract. A struct bound in any module without a Rust twin
//! here, a twin bound nowhere, a constant without a twin (or a reason to be WGSL-only), or
//! a twin no module declares fails a test: nothing is skipped because it is unknown.

use memodiff::testing::engine::gpu::shaders::{Stage, Workgroup, ALL_STAGES};
use memodiff::testing::engine::records::MAX_DIMENSION;
use naga::proc::Layouter;
use naga::{AddressSpace, Expression, Handle, Literal, Module, ScalarKind, Type, TypeInner};
use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};

// ---------------------------------------------------------------------------------------
// The modules

/// Dimensions the engines specialise modules for (`Stage::source_for_dim`): every D <= 4
/// and general-D sizes whose `OWNED` differs.
const DIMS: [usize; 9] = [1, 2, 3, 4, 5, 64, 784, 3072, MAX_DIMENSION];

/// One module an engine may build: a stage as assembled (`dim` None) or specialised for
/// `dim`, with the posterior tap on or off and the subgroup path or not.
struct Variant {
    stage: Stage,
    dim: Option<usize>,
    tapped: bool,
    subgroups: bool,
    source: String,
}

impl Variant {
    fn label(&self) -> String {
        let dim = self
            .dim
            .map_or("unspecialised".into(), |d| format!("D = {d}"));
        let tap = if self.tapped { ", tapped" } else { "" };
        let subgroups = if self.subgroups { ", subgroups" } else { "" };
        format!("{} ({dim}{tap}{subgroups})", self.stage.entry_point)
    }

    fn parse(&self) -> Module {
        naga::front::wgsl::parse_str(&self.source)
            .unwrap_or_else(|e| panic!("{}: {}", self.label(), e.emit_to_string(&self.source)))
    }
}

/// Every variant of every stage.
fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for &stage in ALL_STAGES {
        out.push(Variant {
            stage,
            dim: None,
            tapped: false,
            subgroups: false,
            source: stage.source(),
        });
        if stage.entry_point == "patch_denoise" {
            // A specialised patch size and channel count (LANES = the channels).
            out.push(Variant {
                stage,
                dim: Some(3),
                tapped: false,
                subgroups: false,
                source: stage.source_for_patch(5, 3),
            });
        }
        for dim in DIMS {
            for tapped in [false, true] {
                for subgroups in [false, true] {
                    if (tapped && !stage.can_tap()) || (subgroups && !stage.can_use_subgroups()) {
                        continue;
                    }
                    out.push(Variant {
                        stage,
                        dim: Some(dim),
                        tapped,
                        subgroups,
                        source: stage.source_variant(dim, tapped, subgroups),
                    });
                }
            }
        }
    }
    out
}

fn validate(source: &str, subgroups: bool) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut validator = if subgroups {
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SUBGROUP,
        );
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        v
    } else {
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
    };
    validator
        .validate(&module)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(source))
}

#[test]
fn every_assembled_module_validates() {
    assert!(ALL_STAGES.len() >= 4);
    for variant in variants() {
        if let Err(e) = validate(&variant.source, variant.subgroups) {
            panic!("{}: {e}", variant.label());
        }
        assert!(
            variant
                .parse()
                .entry_points
                .iter()
                .any(|ep| ep.name == variant.stage.entry_point),
            "{} has no entry point of that name",
            variant.label()
        );
    }
}

/// The subgroup variants really are different modules (the general-D stages), and the
/// other stages have none.
#[test]
fn subgroup_variants_use_subgroups() {
    let mut variants = 0;
    for stage in ALL_STAGES {
        if !stage.can_use_subgroups() {
            assert_eq!(
                stage.source_variant(64, false, true),
                stage.source_for_dim(64)
            );
            continue;
        }
        for dim in [5, 64, 784] {
            for tapped in [false, true] {
                let source = stage.source_variant(dim, tapped, true);
                assert!(
                    source.contains("subgroupBroadcast"),
                    "{}",
                    stage.entry_point
                );
                variants += 1;
            }
        }
    }
    assert_eq!(variants, 3 * 3 * 2, "three general-D stages");
}

// ---------------------------------------------------------------------------------------
// Structs

/// What a field holds as the shader sees it: scalars of one kind, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    U32,
    I32,
}

/// A Rust field type a shader can read: a 4-byte scalar or an array of them (an array
/// stands for a WGSL vector, matrix or array of the same scalars).
trait HostValue {
    const KIND: Kind;
    const COMPONENTS: usize;
}

impl HostValue for f32 {
    const KIND: Kind = Kind::F32;
    const COMPONENTS: usize = 1;
}

impl HostValue for u32 {
    const KIND: Kind = Kind::U32;
    const COMPONENTS: usize = 1;
}

impl HostValue for i32 {
    const KIND: Kind = Kind::I32;
    const COMPONENTS: usize = 1;
}

impl<T: HostValue, const N: usize> HostValue for [T; N] {
    const KIND: Kind = T::KIND;
    const COMPONENTS: usize = N * T::COMPONENTS;
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    offset: usize,
    size: usize,
    kind: Kind,
    components: usize,
}

impl Field {
    /// Padding: named `_pad…` or `pad…` on either side. Rust pads with one array
    /// (`_pad: [u32; 2]`), WGSL with scalars (`_pad1`, `_pad2`: an array in a uniform
    /// buffer would have a 16-byte stride), so padding is matched by the bytes it covers,
    /// not by name.
    fn is_padding(&self) -> bool {
        self.name.starts_with("_pad") || self.name.starts_with("pad")
    }
}

/// The field `name` of `S` at `offset`; `_access` (`|s| &s.field`) gives its type.
fn host_field<S, F: HostValue>(name: &str, offset: usize, _access: fn(&S) -> &F) -> Field {
    Field {
        name: name.into(),
        offset,
        size: size_of::<F>(),
        kind: F::KIND,
        components: F::COMPONENTS,
    }
}

/// A Rust struct whose bytes a shader reads or writes, and the name of its WGSL twin.
struct HostStruct {
    wgsl_name: &'static str,
    rust_path: String,
    size: usize,
    fields: Vec<Field>,
}

/// `host_struct!("WgslName" = path::RustType { field, ... })`: every field of the Rust
/// struct must be listed (the check requires the listed fields to cover every byte).
macro_rules! host_struct {
    ($wgsl:literal = $($ty:ident)::+ { $($field:ident),* $(,)? }) => {{
        type T = $($ty)::+;
        HostStruct {
            wgsl_name: $wgsl,
            rust_path: stringify!($($ty)::+).replace(" :: ", "::"),
            size: size_of::<T>(),
            fields: vec![$(host_field(stringify!($field), offset_of!(T, $field), |s: &T| &s.$field)),*],
        }
    }};
}

/// Every struct shared with the shaders. WGSL and Rust names are the same, struct and
/// field, except padding (see `Field::is_padding`).
#[rustfmt::skip]
fn host_structs() -> Vec<HostStruct> {
    use memodiff::testing::engine::{gpu, records};
    vec![
        host_struct!("RunParams" = records::RunParams {
            seed_lo, seed_hi, first_particle_lo, first_particle_hi, batch_len, dim, n_train,
            threads_per_row, initial_std, tap_rows, _pad,
        }),
        host_struct!("StepParams" = records::StepParams {
            step_index, mean_scale, sigma2, inv_two_sigma2, keep_coeff, mean_coeff, noise_coeff,
            inv_sigma2, t, dt, beta, _pad,
        }),
        host_struct!("HeunParams" = records::HeunParams {
            phase, mean_scale, inv_two_sigma2, x_coeff, mean_coeff, partial_x_coeff,
            partial_mean_coeff, _pad,
        }),
        host_struct!("ChunkParams" = records::ChunkParams { start, count, first, last }),
        host_struct!("TapEntry" = gpu::engine::TapEntry { max_weight, argmax }),
        host_struct!("DepositParams" = gpu::raster::DepositParams {
            origin, inv_d, stride, lo, hi, count, first, n_sub, dim, row0, rows, pad,
        }),
        host_struct!("NearestParams" = gpu::nearest::NearestParams {
            n_samples, dim, threads_per_row, chunk_start, chunk_count, first, _pad,
        }),
        host_struct!("Best" = memodiff::testing::engine::nearest::Best { d, i }),
        host_struct!("PatchParams" = gpu::patch::PatchParams {
            height, width, circular, particle_blocks,
        }),
        host_struct!("PatchScoreParams" = gpu::patch::PatchScoreParams {
            mean_scale, inv_two_sigma2, _pad,
        }),
        host_struct!("PhiloxCase" = gpu::diagnostics::PhiloxCase { counter, key, _pad }),
    ]
}

/// Scalar kind and component count of a WGSL type made of 4-byte scalars.
fn wgsl_value(module: &Module, ty: Handle<Type>) -> (Kind, usize) {
    let kind = |scalar: naga::Scalar| match (scalar.kind, scalar.width) {
        (ScalarKind::Float, 4) => Kind::F32,
        (ScalarKind::Uint, 4) => Kind::U32,
        (ScalarKind::Sint, 4) => Kind::I32,
        other => panic!("{other:?}: no host twin for this scalar"),
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) | TypeInner::Atomic(s) => (kind(*s), 1),
        TypeInner::Vector { size, scalar } => (kind(*scalar), *size as usize),
        TypeInner::Matrix {
            columns,
            rows,
            scalar,
        } => (kind(*scalar), *columns as usize * *rows as usize),
        TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => {
            let (k, c) = wgsl_value(module, *base);
            (k, c * n.get() as usize)
        }
        other => panic!("{other:?}: not a type the host writes"),
    }
}

/// Size and fields of the WGSL struct `ty`.
fn wgsl_struct(module: &Module, layouter: &Layouter, ty: Handle<Type>) -> (usize, Vec<Field>) {
    let TypeInner::Struct { members, .. } = &module.types[ty].inner else {
        panic!("not a struct");
    };
    let fields = members
        .iter()
        .map(|m| {
            let (kind, components) = wgsl_value(module, m.ty);
            Field {
                name: m.name.clone().unwrap_or_default(),
                offset: m.offset as usize,
                size: layouter[m.ty].size as usize,
                kind,
                components,
            }
        })
        .collect();
    (layouter[ty].size as usize, fields)
}

/// The first byte range of `0..size` that `fields` leave uncovered or cover twice.
fn tiling_fault(fields: &[Field], size: usize) -> Option<String> {
    let mut sorted: Vec<&Field> = fields.iter().collect();
    sorted.sort_by_key(|f| f.offset);
    let mut end = 0;
    for f in sorted {
        if f.offset != end {
            return Some(if f.offset > end {
                format!("bytes {end}..{} are in no field", f.offset)
            } else {
                format!(
                    "{} at byte {} overlaps the field before it",
                    f.name, f.offset
                )
            });
        }
        end = f.offset + f.size;
    }
    (end != size).then(|| format!("bytes {end}..{size} are in no field"))
}

/// Why `host` and the WGSL struct (`size`, `fields`) differ, if they do: the same size,
/// both covered by their fields without a gap (Rust: no field missing from the table;
/// WGSL: no implicit padding the host would have to know about), and the same non-padding
/// fields by name, each at the same offset with the same size and scalars. With the
/// sizes equal and both sides tiled, the padding covers the same bytes on both.
fn struct_mismatch(host: &HostStruct, size: usize, fields: &[Field]) -> Option<String> {
    if host.size != size {
        return Some(format!("{} bytes in Rust, {size} in WGSL", host.size));
    }
    if let Some(fault) = tiling_fault(&host.fields, host.size) {
        return Some(format!("Rust {}: {fault}", host.rust_path));
    }
    if let Some(fault) = tiling_fault(fields, size) {
        return Some(format!("WGSL: {fault}"));
    }
    let named = |fields: &[Field]| -> BTreeMap<String, Field> {
        fields
            .iter()
            .filter(|f| !f.is_padding())
            .map(|f| (f.name.clone(), f.clone()))
            .collect()
    };
    let (rust, wgsl) = (named(&host.fields), named(fields));
    for (name, r) in &rust {
        match wgsl.get(name) {
            None => return Some(format!("field {name} is not in the WGSL struct")),
            Some(w) if w != r => return Some(format!("field {name}: Rust {r:?}, WGSL {w:?}")),
            Some(_) => {}
        }
    }
    if let Some(name) = wgsl.keys().find(|n| !rust.contains_key(*n)) {
        return Some(format!("WGSL field {name} is not in the Rust struct"));
    }
    None
}

/// Struct types reachable from the module's uniform and storage bindings, with the array
/// stride where the binding (or a member) is an array of them.
fn bound_structs(module: &Module) -> Vec<(Handle<Type>, Option<u32>)> {
    fn walk(
        module: &Module,
        ty: Handle<Type>,
        stride: Option<u32>,
        out: &mut Vec<(Handle<Type>, Option<u32>)>,
    ) {
        match &module.types[ty].inner {
            TypeInner::Struct { members, .. } => {
                out.push((ty, stride));
                for m in members {
                    walk(module, m.ty, None, out);
                }
            }
            TypeInner::Array { base, stride, .. } => walk(module, *base, Some(*stride), out),
            TypeInner::BindingArray { base, .. } => walk(module, *base, None, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, var) in module.global_variables.iter() {
        if matches!(
            var.space,
            AddressSpace::Uniform | AddressSpace::Storage { .. }
        ) {
            walk(module, var.ty, None, &mut out);
        }
    }
    out
}

/// Every struct a shader binds has a Rust twin with the same layout, field by field;
/// every twin is bound somewhere; an array of them has the Rust size as its stride.
#[test]
fn every_struct_shared_with_the_host_matches_field_by_field() {
    let host = host_structs();
    let mut names = BTreeSet::new();
    for h in &host {
        assert!(
            names.insert(h.wgsl_name),
            "{} twice in the table",
            h.wgsl_name
        );
    }
    let mut bound = BTreeSet::new();
    for variant in variants() {
        let module = variant.parse();
        let mut layouter = Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        for (ty, stride) in bound_structs(&module) {
            let name = module.types[ty].name.clone().unwrap_or_default();
            let twin = host
                .iter()
                .find(|h| h.wgsl_name == name)
                .unwrap_or_else(|| {
                    panic!(
                    "{}: struct {name} is bound to a buffer but has no Rust twin in host_structs()",
                    variant.label()
                )
                });
            let (size, fields) = wgsl_struct(&module, &layouter, ty);
            if let Some(why) = struct_mismatch(twin, size, &fields) {
                panic!(
                    "{}: {name} differs from {}: {why}",
                    variant.label(),
                    twin.rust_path
                );
            }
            if let Some(stride) = stride {
                assert_eq!(
                    stride as usize,
                    twin.size,
                    "{}: array<{name}> has another stride than Rust's size",
                    variant.label()
                );
            }
            bound.insert(twin.wgsl_name);
        }
    }
    let unbound: Vec<_> = names.difference(&bound).collect();
    assert!(
        unbound.is_empty(),
        "in host_structs() but bound by no module: {unbound:?}"
    );
}

/// The comparison itself finds a field moved, resized, retyped, renamed, missing from the
/// table, or implicit padding in the WGSL.
#[test]
fn the_struct_comparison_finds_every_kind_of_difference() {
    let host = host_structs();
    let run = host.iter().find(|h| h.wgsl_name == "RunParams").unwrap();
    assert_eq!(struct_mismatch(run, run.size, &run.fields), None);
    let with = |edit: &dyn Fn(&mut Vec<Field>)| {
        let mut fields = run.fields.clone();
        edit(&mut fields);
        struct_mismatch(run, run.size, &fields)
    };
    let field = |fields: &mut Vec<Field>, name: &str| -> usize {
        fields.iter().position(|f| f.name == name).unwrap()
    };
    // Two fields swapped: each at the other's offset.
    assert!(with(&|f| {
        let (a, b) = (field(f, "dim"), field(f, "n_train"));
        let offset = f[a].offset;
        f[a].offset = f[b].offset;
        f[b].offset = offset;
    })
    .is_some());
    // An f32 where the host writes a u32.
    assert!(with(&|f| {
        let i = field(f, "batch_len");
        f[i].kind = Kind::F32;
    })
    .is_some());
    // Renamed.
    assert!(with(&|f| {
        let i = field(f, "tap_rows");
        f[i].name = "tap_count".into();
    })
    .is_some());
    // A gap (implicit padding) before the last field, and the struct one word longer.
    assert!(with(&|f| {
        let i = field(f, "_pad");
        f[i].offset += 4;
    })
    .is_some());
    assert!(struct_mismatch(run, run.size + 16, &run.fields).is_some());
    // A Rust field left out of the table.
    let mut partial = HostStruct {
        wgsl_name: run.wgsl_name,
        rust_path: run.rust_path.clone(),
        size: run.size,
        fields: run.fields.clone(),
    };
    partial.fields.retain(|f| f.name != "initial_std");
    assert!(struct_mismatch(&partial, run.size, &run.fields).is_some());
    // Padding split differently (one array against scalars) is no difference.
    let mut split = run.fields.clone();
    let i = field(&mut split, "_pad");
    let pad = split.remove(i);
    for k in 0..2 {
        split.push(Field {
            name: format!("_pad{}", k + 1),
            offset: pad.offset + 4 * k,
            size: 4,
            kind: Kind::U32,
            components: 1,
        });
    }
    assert_eq!(struct_mismatch(run, run.size, &split), None);
}

// ---------------------------------------------------------------------------------------
// Constants

/// A constant's value; f32 compared bit for bit.
#[derive(Debug, Clone, Copy)]
enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::U32(a), Value::U32(b)) => a == b,
            (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        }
    }
}

trait IntoValue {
    fn value(self) -> Value;
}

impl IntoValue for u32 {
    fn value(self) -> Value {
        Value::U32(self)
    }
}

impl IntoValue for usize {
    fn value(self) -> Value {
        Value::U32(u32::try_from(self).expect("a u32 in WGSL"))
    }
}

impl IntoValue for f32 {
    fn value(self) -> Value {
        Value::F32(self)
    }
}

impl IntoValue for bool {
    fn value(self) -> Value {
        Value::Bool(self)
    }
}

/// A WGSL `const` and the Rust value it must equal.
struct SharedConstant {
    wgsl_name: &'static str,
    value: Value,
    rust: &'static str,
}

macro_rules! shared {
    ($wgsl:literal = $rust:expr) => {
        SharedConstant {
            wgsl_name: $wgsl,
            value: IntoValue::value($rust),
            rust: stringify!($rust),
        }
    };
}

/// Every WGSL `const` and its Rust twin, for `variant` (the specialisations `LANES`,
/// `OWNED` and `TAP` depend on it). Names are the same on both sides unless written here.
fn shared_constants(variant: &Variant) -> Vec<SharedConstant> {
    use memodiff::testing::density::heatmap::{LAGRANGE_COEFFICIENTS, QUANTUM_BITS};
    use memodiff::testing::engine::cpu::score;
    use memodiff::testing::engine::gpu::engine::PARTICLES_PER_INVOCATION;
    use memodiff::testing::engine::gpu::shaders::general_owned_columns;
    use memodiff::testing::engine::records::{self, MAX_DIM};
    use memodiff::testing::model::philox;
    vec![
        // common/params.wgsl
        shared!("MAX_DIM" = MAX_DIM),
        // common/philox.wgsl and src/model/philox.rs
        shared!("PHILOX_M0" = philox::PHILOX_M0),
        shared!("PHILOX_M1" = philox::PHILOX_M1),
        shared!("PHILOX_W0" = philox::PHILOX_W0),
        shared!("PHILOX_W1" = philox::PHILOX_W1),
        shared!("INITIAL_NOISE_STEP" = philox::INITIAL_NOISE_STEP),
        // philox::box_muller_angle multiplies by std's TAU.
        shared!("TAU" = std::f32::consts::TAU),
        shared!("PI_BELOW" = philox::PI_BELOW),
        // common/score.wgsl and src/engine/cpu/score.rs (whose private FLT_MAX and
        // LOG2_E are these two).
        shared!("FLT_MAX" = f32::MAX),
        shared!("LOG2_E" = std::f32::consts::LOG2_E),
        shared!("RESCALE_SLACK" = score::RESCALE_SLACK),
        // The lanes a D <= 4 module reduces over: Stage::source_for_dim sets the run's D.
        shared!("LANES" = variant.dim.map_or(MAX_DIM, |d| d.clamp(1, MAX_DIM))),
        // common/training_simple.wgsl's blocks and common/training_tiled.wgsl's tiles are
        // both merged like the CPU twin's blocks: the three give the same bits only while
        // all are cpu::score::BLOCK points.
        shared!("BLOCK" = score::BLOCK),
        shared!("TILE" = score::BLOCK),
        // common/reduce_chunk.wgsl
        shared!("PARTICLES_PER_INVOCATION" = PARTICLES_PER_INVOCATION),
        // common/tap_off.wgsl / common/tap_on.wgsl: Stage::source_tapped.
        shared!("TAP" = variant.tapped),
        // common/reduce_general.wgsl
        shared!("GENERAL_WG" = records::GENERAL_WG),
        shared!("GENERAL_TILE" = records::GENERAL_TILE),
        shared!("GENERAL_PARTICLES" = records::GENERAL_PARTICLES),
        shared!("GENERAL_X_COLUMNS" = records::GENERAL_X_COLUMNS),
        shared!("MAX_COLUMNS" = MAX_DIMENSION / 4),
        // Stage::source_for_dim bounds it for the run's D; unspecialised, for any D.
        shared!("OWNED" = general_owned_columns(variant.dim.unwrap_or(MAX_DIMENSION))),
        // nearest.wgsl and src/engine/nearest.rs (Best::empty: f32::MAX, NO_INDEX).
        shared!("NEAREST_FLT_MAX" = f32::MAX),
        shared!("NO_INDEX" = memodiff::testing::engine::nearest::NO_INDEX),
        // heatmap/deposit.wgsl and src/density/heatmap.rs: the stencil is the Lagrange
        // table's order, one fixed-point unit 2^-QUANTUM_BITS of a peak.
        shared!("STENCIL" = LAGRANGE_COEFFICIENTS.len()),
        shared!("SCALE" = (1u64 << QUANTUM_BITS) as f32),
        // patch_denoise.wgsl and src/engine/gpu/patch.rs: its dispatch grid and the
        // shared-memory tile that holds at least 16 patches of MAX_PATCH_VALUES.
        shared!("PATCH_WG" = memodiff::testing::engine::gpu::patch::WORKGROUP),
        shared!("TILE_VALUES" = memodiff::testing::engine::gpu::patch::TILE_VALUES),
    ]
}

/// WGSL constants without a Rust twin, each with the reason.
const WGSL_ONLY: &[(&str, &str)] = &[
    // patch/params.wgsl: placeholders that Stage::source_for_patch replaces with the run's
    // patch size and channels, and what the shader derives from them.
    ("PATCH_K", "set per pipeline by Stage::source_for_patch"),
    (
        "PATCH_CHANNELS",
        "set per pipeline by Stage::source_for_patch",
    ),
    ("PATCH_RADIUS", "PATCH_K / 2"),
    ("PATCH_LEN", "k² C, PatchGeometry::patch_len"),
    ("TILE_PATCHES", "TILE_VALUES / PATCH_LEN"),
];

/// The value of WGSL constant `init` (a literal after naga's constant evaluation).
fn wgsl_constant(module: &Module, init: Handle<Expression>) -> Value {
    match module.global_expressions[init] {
        Expression::Literal(Literal::U32(v)) => Value::U32(v),
        Expression::Literal(Literal::F32(v)) => Value::F32(v),
        Expression::Literal(Literal::Bool(v)) => Value::Bool(v),
        ref other => panic!("{other:?}: a constant of a type the table does not hold"),
    }
}

/// Every `const` of every module is in the table with its Rust twin's value (or listed as
/// WGSL-only), and every table entry is declared by some module.
#[test]
fn every_constant_shared_with_the_host_has_its_value() {
    let mut declared = BTreeSet::new();
    let mut table_names = BTreeSet::new();
    for variant in variants() {
        let module = variant.parse();
        let table = shared_constants(&variant);
        if table_names.is_empty() {
            for c in &table {
                assert!(table_names.insert(c.wgsl_name), "{} twice", c.wgsl_name);
            }
        }
        for (_, constant) in module.constants.iter() {
            let Some(name) = constant.name.as_deref() else {
                continue;
            };
            if WGSL_ONLY.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let twin = table.iter().find(|c| c.wgsl_name == name).unwrap_or_else(|| {
                panic!(
                    "{}: const {name} has no Rust twin in shared_constants() (or reason in WGSL_ONLY)",
                    variant.label()
                )
            });
            let value = wgsl_constant(&module, constant.init);
            assert_eq!(
                value,
                twin.value,
                "{}: const {name} differs from {}",
                variant.label(),
                twin.rust
            );
            declared.insert(twin.wgsl_name);
        }
    }
    let unused: Vec<_> = table_names.difference(&declared).collect();
    assert!(
        unused.is_empty(),
        "in the table but in no module: {unused:?}"
    );
    for (name, _) in WGSL_ONLY {
        assert!(!table_names.contains(name), "{name}: WGSL-only and shared");
    }
}

// ---------------------------------------------------------------------------------------
// Workgroup sizes

/// Each stage's `workgroup` declaration is its entry point's: an override of that name
/// (the only override of the module: the host sets no other), or that fixed size.
#[test]
fn each_stage_declares_its_workgroup_size() {
    for variant in variants() {
        let module = variant.parse();
        let label = variant.label();
        let entry = module
            .entry_points
            .iter()
            .find(|ep| ep.name == variant.stage.entry_point)
            .unwrap_or_else(|| panic!("{label}: no entry point"));
        let overrides: Vec<_> = module
            .overrides
            .iter()
            .map(|(_, o)| o.name.clone().unwrap_or_default())
            .collect();
        match variant.stage.workgroup {
            Workgroup::Override(name) => {
                assert_eq!(overrides, [name], "{label}: the module's overrides");
                let Some([Some(x), None, None]) = entry.workgroup_size_overrides else {
                    panic!(
                        "{label}: workgroup size {:?} / {:?} is not @workgroup_size({name})",
                        entry.workgroup_size, entry.workgroup_size_overrides
                    );
                };
                let Expression::Override(o) = module.global_expressions[x] else {
                    panic!("{label}: the workgroup size is an expression, not {name}");
                };
                assert_eq!(module.overrides[o].name.as_deref(), Some(name), "{label}");
                assert_eq!(entry.workgroup_size[1..], [1, 1], "{label}");
            }
            Workgroup::Fixed(size) => {
                assert!(
                    overrides.is_empty(),
                    "{label}: overrides {overrides:?} the host would not set"
                );
                assert_eq!(
                    (entry.workgroup_size, entry.workgroup_size_overrides),
                    ([size, 1, 1], None),
                    "{label}: declared Workgroup::Fixed({size})"
                );
            }
        }
    }
}
