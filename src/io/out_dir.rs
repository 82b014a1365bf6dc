//! The `--out` policy every command follows: where an output folder may be, and what may
//! already be in it. Both are checked before any work starts.

use crate::error::{Error, Result};
use std::path::Path;

/// The policy in one call: `out` is (or can become) a folder, and it is empty unless
/// `force` (see [`refuse_non_empty_out`]).
pub fn check_out(out: &Path, force: bool) -> Result<()> {
    check_out_location(out)?;
    if !force {
        refuse_non_empty_out(out)?;
    }
    Ok(())
}

/// `out` is a folder, a symbolic link to one, or a path where a folder can be created;
/// anything else is refused naming what it is. Creation is tried (and undone), so a
/// read-only place or a pseudo file system such as /proc is refused here with the
/// system's reason, before any work, rather than later under another name.
pub fn check_out_location(out: &Path) -> Result<()> {
    let bad = |why: String| Error::invalid("out", format!("{} {why}", out.display()));
    match std::fs::symlink_metadata(out) {
        Ok(link) if link.file_type().is_symlink() => match std::fs::metadata(out) {
            Ok(target) if target.is_dir() => Ok(()),
            Ok(target) => Err(bad(format!(
                "is a symbolic link to {}, not to a folder",
                kind_of(&target)
            ))),
            Err(_) => Err(bad(
                "is a symbolic link to something that does not exist (a dangling link); \
                 remove it or choose another folder"
                    .into(),
            )),
        },
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(bad(format!(
            "is {}, not a folder; choose a folder for the outputs",
            kind_of(&meta)
        ))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            probe_create(out).map_err(|e| {
                let inside = out
                    .ancestors()
                    .skip(1)
                    .find(|p| !p.as_os_str().is_empty() && p.exists())
                    .map_or(String::new(), |p| format!(" in {}", p.display()));
                bad(format!("cannot be created{inside}: {e}"))
            })
        }
        Err(e) => Err(Error::io(out, e)),
    }
}

/// Create the missing folders up to `out`, then remove exactly those again.
fn probe_create(out: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = out
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        .collect();
    std::fs::create_dir_all(out)?;
    for dir in missing {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// What a non-folder is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_file() {
        "a file"
    } else {
        "not a folder"
    }
}

/// Refuse an existing non-empty folder `out` (a run would replace files in it): the user
/// must say `--force`. A missing folder or an empty one passes.
pub fn refuse_non_empty_out(out: &Path) -> Result<()> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty {
        return Err(Error::Output(format!(
            "the --out folder {} exists and is not empty; pass --force to write into it \
             (files of the same names are replaced) or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_bad_out_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let message = |p: &Path| check_out_location(p).unwrap_err().to_string();
        assert!(message(&file).contains("is a file, not a folder"));
        assert!(message(Path::new("/dev/null")).contains("is a device"));
        #[cfg(unix)]
        {
            let link = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("missing"), &link).unwrap();
            assert!(message(&link).contains("dangling link"));
        }
        assert!(message(&file.join("below")).contains("cannot be created"));
        // A path that can be made passes, and the probe leaves nothing behind.
        let fresh = dir.path().join("x/y/z");
        check_out_location(&fresh).unwrap();
        assert!(!dir.path().join("x").exists());
        check_out_location(dir.path()).unwrap();
    }
}
