//! The compiled pipelines kept on disk between runs (wgpu's `PipelineCache`, Vulkan only).
//!
//! A run creates its pipelines lazily, once per stage, dimension and variant, and a driver
//! compiles each one from SPIR-V at that moment (lavapipe through LLVM: tenths of a second
//! per general-D stage). Most desktop drivers keep their own on-disk caches (NVIDIA's,
//! Mesa's), but not all do, and those caches can be off (`MESA_SHADER_CACHE_DISABLE`, a
//! read-only home in a container). This cache makes the second run's set-up cheap on any
//! Vulkan driver that fills `VkPipelineCache`.
//!
//! Where: `$MEMODIFF_PIPELINE_CACHE` names the folder (`0` or `off` turns the cache off);
//! otherwise `$XDG_CACHE_HOME/memodiff`, else `~/.cache/memodiff`. One file per adapter,
//! named after wgpu's `pipeline_cache_key` (vendor and device id): wgpu and the driver
//! reject data from another driver version themselves and start empty.
//!
//! The cache is an optimisation and never a reason for a run to fail: a missing,
//! unreadable, corrupt or unwritable file is treated as no cache. The file wraps wgpu's
//! data in a header with its length and a 64-bit FNV-1a hash, so that only data this code
//! wrote from `PipelineCache::get_data` reaches the driver (the safety condition of
//! `Device::create_pipeline_cache`), not a truncated or damaged file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable naming the cache folder, or `0` / `off`.
pub const CACHE_ENV: &str = "MEMODIFF_PIPELINE_CACHE";

/// The file's first bytes; the version changes with the header layout.
const MAGIC: &[u8; 16] = b"memodiff-pcache1";

/// A pipeline cache backed by a file: created from the file's data when it is valid,
/// written back (atomically, by rename) when new pipelines were added to it.
#[derive(Debug)]
pub struct PipelineCacheFile {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Set when a pipeline was created through the cache since it was loaded or saved.
    grown: AtomicBool,
}

impl PipelineCacheFile {
    /// The cache for this device, or `None` when the device has no pipeline cache (not
    /// Vulkan, or the feature was not requested), or no cache folder is configured.
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<Self> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(info)?;
        let path = cache_folder()?.join(format!("{key}.bin"));
        let data = std::fs::read(&path)
            .ok()
            .and_then(|bytes| unwrap_data(&bytes));
        // SAFETY: `data` is what `PipelineCache::get_data` returned in an earlier run:
        // `unwrap_data` accepts only a file whose header (magic, length and hash of the
        // data) this module wrote around such data. wgpu checks that it came from an
        // adapter with the same key and driver, and `fallback` makes data it rejects
        // start an empty cache instead of an error.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("memodiff pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(Self {
            cache,
            path,
            grown: AtomicBool::new(false),
        })
    }

    /// The cache, for `ComputePipelineDescriptor::cache`. The caller creates a pipeline
    /// with it right after, so the cache counts as grown.
    pub fn for_new_pipeline(&self) -> &wgpu::PipelineCache {
        self.grown.store(true, Ordering::Relaxed);
        &self.cache
    }

    /// The file the cache is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the cache to its file if pipelines were added since it was read or last
    /// written. Errors are returned for tests; the context ignores them (see the module).
    pub fn save(&self) -> std::io::Result<()> {
        if !self.grown.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(());
        };
        let folder = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder)?;
        // A name of this save's own (process and a counter: contexts of one process may
        // save at once): concurrent saves each rename a whole file into place, and the
        // last one wins.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let temp = folder.join(format!(
            ".{}.tmp-{}-{}",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&temp, wrap_data(&data))
            .and_then(|()| std::fs::rename(&temp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

impl Drop for PipelineCacheFile {
    fn drop(&mut self) {
        // Best effort (see the module): a cache that cannot be written only costs the
        // next run its compile time.
        let _ = self.save();
    }
}

/// The configured cache folder, or `None` when the cache is off or no folder is known.
fn cache_folder() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(value) = non_empty(CACHE_ENV) {
        return match value.to_str() {
            Some("0") | Some("off") => None,
            _ => Some(PathBuf::from(value)),
        };
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("memodiff"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("memodiff"))
}

/// 64-bit FNV-1a: enough to tell a damaged file from an intact one (not an adversary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The file's contents: magic, data length and hash (little-endian), data.
fn wrap_data(data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 16 + data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&fnv1a(data).to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// The data of a file `wrap_data` wrote, or `None` for anything else.
fn unwrap_data(bytes: &[u8]) -> Option<Vec<u8>> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let (hash, data) = rest.split_first_chunk::<8>()?;
    let whole = u64::from_le_bytes(*len) == data.len() as u64;
    (whole && u64::from_le_bytes(*hash) == fnv1a(data)).then(|| data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_intact_file_yields_its_data() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = wrap_data(&data);
        assert_eq!(unwrap_data(&file).as_deref(), Some(data.as_slice()));
        // Truncated, extended, one bit flipped in the data, another magic.
        assert_eq!(unwrap_data(&file[..file.len() - 1]), None);
        assert_eq!(unwrap_data(&[file.as_slice(), &[0]].concat()), None);
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(unwrap_data(&flipped), None);
        let mut other = file;
        other[0] ^= 1;
        assert_eq!(unwrap_data(&other), None);
        assert_eq!(unwrap_data(&[]), None);
    }

    #[test]
    fn fnv1a_matches_its_published_values() {
        // The reference values of the FNV specification's test suite.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
