//! Every assembled shader, compiled to SPIR-V by naga as wgpu's Vulkan backend compiles it
//! (overrides at their defaults), passes `spirv-val` (Khronos SPIRV-Tools; Debian package
//! spirv-tools, which .ci/run installs): a second opinion on what naga emits, catching
//! what one driver forgives.

use memodiff::testing::engine::gpu::shaders::ALL_STAGES;
use std::process::Command;

/// Lets a machine without spirv-tools skip this test explicitly; without it, a missing
/// `spirv-val` is a failure (a check that silently does nothing is no check).
const SKIP_VAR: &str = "MEMODIFF_SKIP_SPIRV_VAL";

#[test]
fn every_shader_passes_spirv_val() {
    match Command::new("spirv-val").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ if std::env::var(SKIP_VAR).as_deref() == Ok("1") => {
            eprintln!("SKIPPED: spirv-val not found and {SKIP_VAR}=1");
            return;
        }
        _ => panic!(
            "spirv-val not found: install spirv-tools (apt-get install spirv-tools) or set \
             {SKIP_VAR}=1 to skip this check explicitly"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    // Every stage as assembled, and the posterior-tap variants (common/tap_on.wgsl) of
    // those that have one, for a D <= 4 and a general-D specialisation.
    let mut modules: Vec<(String, &str, String)> = ALL_STAGES
        .iter()
        .map(|s| (s.entry_point.to_string(), s.entry_point, s.source()))
        .collect();
    for stage in ALL_STAGES.iter().filter(|s| s.can_tap()) {
        for dim in [2, 64] {
            modules.push((
                format!("{}_tapped_d{dim}", stage.entry_point),
                stage.entry_point,
                stage.source_tapped(dim),
            ));
        }
    }
    // And the subgroup variants of the general-D stages, tapped or not.
    for stage in ALL_STAGES.iter().filter(|s| s.can_use_subgroups()) {
        for tapped in [false, true] {
            modules.push((
                format!("{}_subgroups_{tapped}", stage.entry_point),
                stage.entry_point,
                stage.source_variant(64, tapped, true),
            ));
        }
    }
    let expected = modules.len();
    assert!(expected > ALL_STAGES.len(), "no tapped stage");
    for (name, entry_point, source) in &modules {
        let stage = Named { name, entry_point };
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{}: {}", stage.entry_point, e.emit_to_string(source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", stage.entry_point, e.emit_to_string(source)));
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, stage.entry_point)),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{}: overrides: {e}", stage.entry_point));
        let words = naga::back::spv::write_vec(
            &module,
            &info,
            // SPIR-V 1.3 for the subgroup variants, as wgpu's Vulkan backend emits them
            // (group operations need it); 1.0 otherwise.
            &naga::back::spv::Options {
                lang_version: if name.contains("_subgroups_") {
                    (1, 3)
                } else {
                    (1, 0)
                },
                ..Default::default()
            },
            Some(&naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: stage.entry_point.to_string(),
            }),
        )
        .unwrap_or_else(|e| panic!("{}: SPIR-V output: {e}", stage.entry_point));
        let path = dir.path().join(format!("{}.spv", stage.name));
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new("spirv-val")
            .arg("--target-env")
            .arg("vulkan1.1")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: spirv-val rejects naga's SPIR-V:\n{}{}",
            stage.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    eprintln!("spirv-val: {checked} shader modules valid");
    assert_eq!(checked, expected);
}

/// A module's file name and entry point.
struct Named<'a> {
    name: &'a str,
    entry_point: &'a str,
}
