//! Every assembled WGSL module parses and validates with naga: no GPU needed.

use memodiff::engine::gpu::shaders::ALL_STAGES;

#[test]
fn every_assembled_module_validates() {
    assert!(ALL_STAGES.len() >= 4);
    for stage in ALL_STAGES {
        let source = stage.source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", stage.entry_point, e.emit_to_string(&source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module);
        if let Err(e) = info {
            panic!("{}: {}", stage.entry_point, e.emit_to_string(&source));
        }
        assert!(
            module
                .entry_points
                .iter()
                .any(|ep| ep.name == stage.entry_point),
            "{} has no entry point of that name",
            stage.entry_point
        );
    }
}

#[test]
fn deposit_params_match_the_shader() {
    // Keep-in-sync check for src/engine/gpu/raster.rs <-> shaders/heatmap/deposit.wgsl.
    let source = memodiff::engine::gpu::shaders::DEPOSIT_STAGE.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let found = module.types.iter().any(|(handle, ty)| {
        ty.name.as_deref() == Some("DepositParams")
            && layouter[handle].size as usize
                == std::mem::size_of::<memodiff::engine::gpu::raster::DepositParams>()
    });
    assert!(found, "DepositParams differs between Rust and WGSL");
}

#[test]
fn structs_shared_with_rust_have_the_same_size() {
    // Keep-in-sync check for src/engine/records.rs <-> shaders/common/params.wgsl.
    let source = memodiff::engine::gpu::shaders::EM_STEP_STAGE.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    for (handle, ty) in module.types.iter() {
        let expected = match ty.name.as_deref() {
            Some("RunParams") => std::mem::size_of::<memodiff::engine::records::RunParams>(),
            Some("StepParams") => std::mem::size_of::<memodiff::engine::records::StepParams>(),
            Some("HeunParams") => std::mem::size_of::<memodiff::engine::records::HeunParams>(),
            _ => continue,
        };
        assert_eq!(layouter[handle].size as usize, expected, "{:?}", ty.name);
    }
}

/// The modules specialised per dimension (`LANES` = D for D <= 4, `OWNED` for D > 4)
/// validate too, and each D <= 4 one really is specialised.
#[test]
fn every_module_specialised_per_dimension_validates() {
    for stage in ALL_STAGES {
        for (dim, tapped) in [1, 2, 3, 4, 5, 64, 784]
            .into_iter()
            .flat_map(|d| [(d, false), (d, true)])
        {
            if tapped && !stage.can_tap() {
                continue;
            }
            let source = if tapped {
                stage.source_tapped(dim)
            } else {
                stage.source_for_dim(dim)
            };
            assert_eq!(
                source.contains("const TAP: bool = true;"),
                tapped,
                "{} D = {dim}: the tap switch",
                stage.entry_point
            );
            if dim <= 4 && source.contains("const LANES: u32") {
                assert!(source.contains(&format!("const LANES: u32 = {dim}u;")));
            }
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!(
                    "{} D = {dim}: {}",
                    stage.entry_point,
                    e.emit_to_string(&source)
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::default(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{} D = {dim}: {}",
                    stage.entry_point,
                    e.emit_to_string(&source)
                )
            });
        }
    }
}

#[test]
fn particles_per_invocation_match_the_shader() {
    // Keep-in-sync check for src/engine/gpu/engine.rs <-> shaders/common/reduce_chunk.wgsl.
    let source = memodiff::engine::gpu::shaders::EM_STEP_STAGE.source();
    let declaration = format!(
        "const PARTICLES_PER_INVOCATION: u32 = {}u;",
        memodiff::engine::gpu::engine::PARTICLES_PER_INVOCATION
    );
    assert!(
        source.contains(&declaration),
        "{declaration} not in the shader"
    );
}

/// Field by field (names and byte offsets) for the structs the host writes or reads as
/// bytes: `RunParams` (src/engine/records.rs) and the posterior tap's `TapEntry`
/// (src/engine/gpu/engine.rs) against shaders/common/params.wgsl and common/tap_on.wgsl.
#[test]
fn shared_structs_match_field_by_field() {
    use memodiff::engine::gpu::engine::TapEntry;
    use memodiff::engine::records::RunParams;
    use std::mem::{offset_of, size_of};
    let source = memodiff::engine::gpu::shaders::EM_STEP_STAGE.source_tapped(2);
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let wgsl_fields = |name: &str| -> (Vec<(String, u32)>, usize) {
        let (handle, ty) = module
            .types
            .iter()
            .find(|(_, ty)| ty.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in the shader"));
        let naga::TypeInner::Struct { members, .. } = &ty.inner else {
            panic!("{name} is not a struct");
        };
        let fields = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
            .collect();
        (fields, layouter[handle].size as usize)
    };
    let run = [
        ("seed_lo", offset_of!(RunParams, seed_lo)),
        ("seed_hi", offset_of!(RunParams, seed_hi)),
        (
            "first_particle_lo",
            offset_of!(RunParams, first_particle_lo),
        ),
        (
            "first_particle_hi",
            offset_of!(RunParams, first_particle_hi),
        ),
        ("batch_len", offset_of!(RunParams, batch_len)),
        ("dim", offset_of!(RunParams, dim)),
        ("n_train", offset_of!(RunParams, n_train)),
        ("threads_per_row", offset_of!(RunParams, threads_per_row)),
        ("initial_std", offset_of!(RunParams, initial_std)),
        ("tap_rows", offset_of!(RunParams, tap_rows)),
    ];
    let tap = [
        ("max_weight", offset_of!(TapEntry, max_weight)),
        ("argmax", offset_of!(TapEntry, argmax)),
    ];
    for (name, rust, rust_size) in [
        ("RunParams", &run[..], size_of::<RunParams>()),
        ("TapEntry", &tap[..], size_of::<TapEntry>()),
    ] {
        let (fields, size) = wgsl_fields(name);
        assert_eq!(size, rust_size, "{name}: size");
        for (field, offset) in rust {
            assert!(
                fields.contains(&(field.to_string(), *offset as u32)),
                "{name}.{field}: not at byte {offset} in the shader ({fields:?})"
            );
        }
        // Past the named fields only padding.
        assert!(
            fields
                .iter()
                .all(|(f, _)| f.starts_with("_pad") || rust.iter().any(|(r, _)| r == f)),
            "{name}: a WGSL field the host does not write: {fields:?}"
        );
    }
}

/// The subgroup variants of the general-D stages (common/general_lanes_subgroup.wgsl)
/// validate with naga's subgroup capabilities, tapped or not, for several D; the other
/// stages have none.
#[test]
fn subgroup_variants_validate() {
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
                let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                    panic!(
                        "{} D = {dim}: {}",
                        stage.entry_point,
                        e.emit_to_string(&source)
                    )
                });
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::SUBGROUP,
                )
                .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all())
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!(
                        "{} D = {dim}: {}",
                        stage.entry_point,
                        e.emit_to_string(&source)
                    )
                });
                variants += 1;
            }
        }
    }
    assert_eq!(variants, 3 * 3 * 2, "three general-D stages");
}
