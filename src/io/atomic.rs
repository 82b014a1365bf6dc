//! Writing results safely: a temp file in the same folder, sync, rename, sync of the
//! folder; JSON through it; free space. The `.npy` format is in [`crate::io::npy`] (re-exported
//! here, where its callers have always found it).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------------------

/// A distinct temp-file name for each write made by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temp file used while writing `path`: `.{filename}.tmp-{pid}-{k}` in the same folder,
/// so that the final rename stays on one file system.
pub(crate) fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::Output(format!(
            "cannot write to {}: the path does not name a file",
            path.display()
        ))
    })?;
    let k = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}.tmp-{}-{k}",
        file_name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}

/// Flush, sync and close `writer`, then rename `temp` onto `path` (and sync the folder,
/// best effort). Does not remove `temp` on failure; callers do.
pub(crate) fn commit(writer: BufWriter<File>, temp: &Path, path: &Path) -> io::Result<()> {
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)?;
    sync_parent(path);
    Ok(())
}

/// Make the rename durable where the platform allows it; failures are ignored because the
/// data itself is already synced and in place.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Write `path` atomically: `f` writes into a temporary file in the same folder, which is
/// then flushed, synced and renamed into place. On any error the temporary file is removed,
/// `path` is left as it was, and the error names `path`.
pub fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let temp = temp_path_for(path)?;
    let file = File::create(&temp).map_err(|e| Error::io(path, e))?;
    let mut writer = BufWriter::new(file);
    let result = f(&mut writer).and_then(|()| commit(writer, &temp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Write `value` as pretty-printed JSON (with a final newline), atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::from)?;
        w.write_all(b"\n")
    })
}

/// Bytes free to an unprivileged user on the file system that holds `path`, or would hold
/// it: the nearest existing ancestor is asked when `path` does not exist yet. `None` where
/// it cannot be known (non-Unix platforms, a failing `statvfs`).
pub fn available_space(path: &Path) -> Option<u64> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let existing = absolute.ancestors().find(|p| p.exists())?;
    statvfs_available(existing)
}

#[cfg(unix)]
fn statvfs_available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string and `stat` points to writable memory of
    // the right type; statvfs only writes into it, and we read it only when it succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), stat.f_frsize as u64);
    Some(blocks.saturating_mul(size))
}

#[cfg(not(unix))]
fn statvfs_available(_path: &Path) -> Option<u64> {
    None
}

/// A byte count for people: `16.0 PB`, `512.0 MB`, `12 bytes` (powers of 1000).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["kB", "MB", "GB", "TB", "PB", "EB", "ZB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub use crate::io::npy::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn failing_closure_removes_temp_and_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, b"old").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("r.json") && err.to_string().contains("boom"));
        assert_eq!(entries(dir.path()), vec!["r.json"]);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn json_is_pretty_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let value = serde_json::json!({"steps": 100, "name": "circle:8"});
        write_json(&path, &value).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n  \"steps\": 100"), "{text}");
        assert!(text.ends_with("}\n"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert_eq!(entries(dir.path()), vec!["run.json"]);
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_json(Path::new("/"), &1).unwrap_err();
        assert!(matches!(err, Error::Output(_)), "{err:?}");
    }
}
