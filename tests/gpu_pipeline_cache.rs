//! The on-disk pipeline cache (src/engine/gpu/pipeline_cache.rs): written where the
//! device has one, read back by the next run, never a reason for a run to fail or to
//! change its results (a damaged file or an unwritable folder is no cache), and off with
//! `MEMODIFF_PIPELINE_CACHE=off`.

mod common;

use common::gpu_engine;
use std::path::Path;
use std::process::Command;

/// `memodiff sample` on the GPU (D = 64: the general kernels and their pipelines) into
/// `out`, with `env` set; its samples.
fn sample(out: &Path, env: &[(&str, &Path)]) -> Vec<u8> {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("memodiff"));
    cmd.args(["sample", "--backend", "gpu", "--dataset", "gaussian:40:64"])
        .args([
            "--particles",
            "24",
            "--steps",
            "20",
            "--posterior-records",
            "0",
        ])
        .args(["--force", "--out"])
        .arg(out)
        .env_remove("MEMODIFF_PIPELINE_CACHE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "sample failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out.join("samples.npy")).unwrap()
}

/// The cache files in `dir`.
fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether `file` is whole: the magic, then a length that matches the data after the
/// header (magic 16 bytes, length 8, hash 8).
fn is_whole_cache_file(file: &Path) -> bool {
    let bytes = std::fs::read(file).unwrap();
    bytes.len() >= 32
        && &bytes[..16] == b"memodiff-pcache1"
        && u64::from_le_bytes(bytes[16..24].try_into().unwrap()) == (bytes.len() - 32) as u64
}

#[test]
fn the_pipeline_cache_is_kept_reused_repaired_and_optional() {
    let test = "the_pipeline_cache_is_kept_reused_repaired_and_optional";
    let Some(gpu) = gpu_engine(test) else {
        return;
    };
    let context = gpu.context();
    let has_cache = context.features.contains(wgpu::Features::PIPELINE_CACHE)
        && wgpu::util::pipeline_cache_key(&context.info).is_some();
    drop(gpu);
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let out = root.path().join("out");

    let fresh = sample(&out, &[("MEMODIFF_PIPELINE_CACHE", &cache)]);
    let files = cache_files(&cache);
    if !has_cache {
        eprintln!("{test}: this adapter has no pipeline cache (not Vulkan): no file expected");
        assert!(
            files.is_empty(),
            "a cache file without a pipeline cache: {files:?}"
        );
        return;
    }
    assert_eq!(files.len(), 1, "one cache file per adapter: {files:?}");
    let file = &files[0];
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("wgpu_pipeline_cache_vulkan_") && name.ends_with(".bin"),
        "{name}"
    );
    assert!(is_whole_cache_file(file));

    // Read back by the next run: same results.
    assert_eq!(sample(&out, &[("MEMODIFF_PIPELINE_CACHE", &cache)]), fresh);

    // A damaged file is no cache: same results, and the run writes a whole file again.
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() / 2 + 1]).unwrap();
    assert!(!is_whole_cache_file(file));
    assert_eq!(sample(&out, &[("MEMODIFF_PIPELINE_CACHE", &cache)]), fresh);
    assert!(
        is_whole_cache_file(file),
        "the damaged cache file was not rewritten"
    );

    // A folder that cannot be created (under a file) costs nothing but the cache.
    let blocker = root.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    assert_eq!(
        sample(&out, &[("MEMODIFF_PIPELINE_CACHE", &blocker.join("cache"))]),
        fresh
    );

    // Off: nothing is written, not even to the default place.
    let home = root.path().join("home");
    let off = Path::new("off");
    let env = [
        ("MEMODIFF_PIPELINE_CACHE", off),
        ("XDG_CACHE_HOME", home.as_path()),
        ("HOME", home.as_path()),
    ];
    assert_eq!(sample(&out, &env), fresh);
    // (Mesa keeps its own shader cache there too: only memodiff's folder is checked.)
    assert!(
        !home.join("memodiff").exists() && !home.join(".cache/memodiff").exists(),
        "the cache was written although it is off"
    );

    // The default place: $XDG_CACHE_HOME/memodiff.
    let xdg = root.path().join("xdg");
    sample(&out, &[("XDG_CACHE_HOME", &xdg)]);
    assert_eq!(cache_files(&xdg.join("memodiff")).len(), 1);
}
