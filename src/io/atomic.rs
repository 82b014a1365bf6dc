//! The one way memodiff writes a result file: [`AtomicFile`] writes under a unique temp name
//! in the target's folder, and its [`commit`](AtomicFile::commit) flushes and syncs the
//! file, renames it into place and syncs the folder, so that a reader (or a crash) sees
//! either the old file or the complete new one. [`write_atomically`], [`write_json`] and
//! [`write_png`] are one-shot writes through it; [`rename_synced`] and [`sync_dir`] are its
//! rename step for callers that swap whole folders (checkpoints). Also: free space and byte
//! counts for people. The `.npy` format is in [`crate::io::npy`] (re-exported here, where
//! its callers have always found it).

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

/// Write buffer of an [`AtomicFile`]: large enough that streamed arrays and PNG bands go
/// to the file in few system calls.
const BUFFER_BYTES: usize = 1 << 20;

/// The temp file used while writing `path`: `.{filename}.tmp-{pid}-{k}` in the same folder,
/// so that the final rename stays on one file system and two writes never share a name.
fn temp_path_for(path: &Path) -> Result<PathBuf> {
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

/// A file being written to `path` through a temp file beside it. Nothing appears at `path`
/// until [`commit`](Self::commit); dropped uncommitted (or after a failed write), the temp
/// file is removed, unless [`keep_temp_at`](Self::keep_temp_at) or [`resume`](Self::resume)
/// made it a stable temp file that a checkpointed run comes back to.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    /// `None` once committed or abandoned.
    writer: Option<BufWriter<File>>,
    /// Leave the temp file in place when dropped uncommitted.
    keep_on_drop: bool,
}

impl AtomicFile {
    /// Start writing `path`: creates a temp file with a unique name in its folder.
    pub fn create(path: &Path) -> Result<Self> {
        let temp = temp_path_for(path)?;
        let file = File::create(&temp).map_err(|e| Error::io(path, e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            temp,
            writer: Some(BufWriter::with_capacity(BUFFER_BYTES, file)),
            keep_on_drop: false,
        })
    }

    /// Continue writing `path` into the existing stable temp file `temp`, already opened as
    /// `file` and positioned where writing goes on; kept when dropped uncommitted.
    pub fn resume(path: &Path, temp: &Path, file: File) -> Self {
        AtomicFile {
            path: path.to_path_buf(),
            temp: temp.to_path_buf(),
            writer: Some(BufWriter::with_capacity(BUFFER_BYTES, file)),
            keep_on_drop: true,
        }
    }

    /// Give the temp file the stable name `temp` (what has been written so far is flushed
    /// first) and keep it when dropped uncommitted.
    pub fn keep_temp_at(&mut self, temp: &Path) -> Result<()> {
        self.write(|w| w.flush())?;
        if let Err(e) = fs::rename(&self.temp, temp) {
            self.abandon();
            return Err(Error::io(temp, e));
        }
        self.temp = temp.to_path_buf();
        self.keep_on_drop = true;
        Ok(())
    }

    /// Whether the temp file is kept when dropped uncommitted (a stable temp file).
    pub fn is_kept(&self) -> bool {
        self.keep_on_drop
    }

    /// The file this writes in the end.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp file being written (to read back what was written so far).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The open writer, for encoders that write into it over many calls (their errors are
    /// the caller's to report; dropping `self` then removes the temp file).
    pub fn writer(&mut self) -> Result<&mut BufWriter<File>> {
        let path = &self.path;
        self.writer.as_mut().ok_or_else(|| {
            Error::Output(format!(
                "cannot write {}: the writer has already failed",
                path.display()
            ))
        })
    }

    /// Run `f` on the open writer; on an I/O error, remove the temp file and report the
    /// error against `path` (later writes then fail).
    pub fn write(&mut self, f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(Error::Output(format!(
                "cannot write {}: the writer has already failed",
                self.path.display()
            )));
        };
        if let Err(e) = f(writer) {
            self.abandon();
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Flush the bytes written so far and sync them to disk, without committing (a
    /// checkpoint of a stable temp file).
    pub fn sync_data(&mut self) -> Result<()> {
        self.write(|w| {
            w.flush()?;
            w.get_ref().sync_data()
        })
    }

    /// Flush and sync the file, rename it onto `path`, then sync the folder. On failure
    /// the temp file is removed and `path` is left as it was.
    pub fn commit(mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Err(Error::Output(format!(
                "cannot finish {}: the writer has already failed",
                self.path.display()
            )));
        };
        let result = (|| {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            injected_failure()?;
            file.sync_all()?;
            drop(file);
            rename_synced(&self.temp, &self.path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&self.temp);
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Close and remove the temp file (idempotent).
    pub fn abandon(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Dropping a BufWriter flushes; skip that work by taking the file out unflushed.
            let (file, _) = writer.into_parts();
            drop(file);
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.keep_on_drop {
            // Bytes after the last `sync_data` may be partial; whoever resumes the file
            // cuts them off.
            if let Some(writer) = self.writer.take() {
                let _ = writer.into_parts();
            }
            return;
        }
        self.abandon();
    }
}

/// `MEMODIFF_FAIL_WRITE=k` (a test hook) makes the k-th file this process completes
/// (counted from 1) fail as a full disk would, to show that a failure at any file leaves
/// the folder as it was.
fn injected_failure() -> io::Result<()> {
    static COMPLETED: AtomicU64 = AtomicU64::new(0);
    if test_hook_fires("MEMODIFF_FAIL_WRITE", &COMPLETED) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no space left on device (MEMODIFF_FAIL_WRITE)",
        ));
    }
    Ok(())
}

/// Whether the fault-injection hook `variable` (set to k) fires at this call: counts the
/// calls in `calls` and fires at the k-th (counted from 1). Unset: never (one lookup of the
/// environment, no counting).
pub(crate) fn test_hook_fires(variable: &str, calls: &AtomicU64) -> bool {
    let Some(at) = std::env::var(variable)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return false;
    };
    calls.fetch_add(1, Ordering::SeqCst) + 1 == at
}

/// Rename `from` onto `to`, then sync `to`'s folder so that the rename survives a crash
/// (best effort: the data itself is already synced and in place).
pub fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
    Ok(())
}

/// Sync a folder's entries (renames, removals) to disk where the platform allows it;
/// failures are ignored, as above.
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Write `path` atomically: `f` writes into an [`AtomicFile`], which is then committed.
/// On any error the temporary file is removed, `path` is left as it was, and the error
/// names `path`.
pub fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write(f)?;
    file.commit()
}

/// Write `value` as pretty-printed JSON (with a final newline), atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::from)?;
        w.write_all(b"\n")
    })
}

/// Write an RGB image as a PNG, atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_atomically(path, |w| {
        img.write_to(w, image::ImageFormat::Png)
            .map_err(|e| match e {
                image::ImageError::IoError(e) => e,
                other => io::Error::other(other),
            })
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
    fn concurrent_writes_of_one_path_use_distinct_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let mut first = AtomicFile::create(&path).unwrap();
        let mut second = AtomicFile::create(&path).unwrap();
        assert_ne!(first.temp_path(), second.temp_path());
        assert_eq!(first.temp_path().parent(), Some(dir.path()));
        first.write(|w| w.write_all(b"first")).unwrap();
        second.write(|w| w.write_all(b"second")).unwrap();
        assert!(!path.exists(), "nothing at the path before a commit");
        second.commit().unwrap();
        drop(first);
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            entries(dir.path()),
            vec!["a.bin"],
            "the uncommitted temp is removed"
        );
    }

    #[test]
    fn a_stable_temp_file_survives_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stable) = (dir.path().join("x.npy"), dir.path().join(".x.partial"));
        let mut file = AtomicFile::create(&path).unwrap();
        file.write(|w| w.write_all(b"rows")).unwrap();
        file.keep_temp_at(&stable).unwrap();
        file.sync_data().unwrap();
        drop(file);
        assert_eq!(entries(dir.path()), vec![".x.partial"]);
        assert_eq!(fs::read(&stable).unwrap(), b"rows");
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_json(Path::new("/"), &1).unwrap_err();
        assert!(matches!(err, Error::Output(_)), "{err:?}");
    }
}
