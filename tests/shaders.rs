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
