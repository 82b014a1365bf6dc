//! Every assembled WGSL module parses and validates with naga: no GPU needed.

use memodiff::gpu::shaders::ALL_STAGES;

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
    // Keep-in-sync check for src/gpu/raster.rs <-> shaders/heatmap/deposit.wgsl.
    let source = memodiff::gpu::shaders::DEPOSIT_STAGE.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let found = module.types.iter().any(|(handle, ty)| {
        ty.name.as_deref() == Some("DepositParams")
            && layouter[handle].size as usize
                == std::mem::size_of::<memodiff::gpu::raster::DepositParams>()
    });
    assert!(found, "DepositParams differs between Rust and WGSL");
}

#[test]
fn structs_shared_with_rust_have_the_same_size() {
    // Keep-in-sync check for src/params.rs <-> shaders/common/params.wgsl.
    let source = memodiff::gpu::shaders::EM_STEP_STAGE.source();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    for (handle, ty) in module.types.iter() {
        let expected = match ty.name.as_deref() {
            Some("RunParams") => std::mem::size_of::<memodiff::params::RunParams>(),
            Some("StepParams") => std::mem::size_of::<memodiff::params::StepParams>(),
            Some("HeunParams") => std::mem::size_of::<memodiff::params::HeunParams>(),
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
        for dim in [1, 2, 3, 4, 5, 64, 784] {
            let source = stage.source_for_dim(dim);
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
    // Keep-in-sync check for src/gpu/engine.rs <-> shaders/common/reduce_chunk.wgsl.
    let source = memodiff::gpu::shaders::EM_STEP_STAGE.source();
    let declaration = format!(
        "const PARTICLES_PER_INVOCATION: u32 = {}u;",
        memodiff::gpu::engine::PARTICLES_PER_INVOCATION
    );
    assert!(
        source.contains(&declaration),
        "{declaration} not in the shader"
    );
}
