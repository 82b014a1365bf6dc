//! A folder of results written as one set: every command that fills an `--out` folder
//! writes its files into a staging area inside it, `OUT/.memodiff-staging/`, and only
//! when all of them are complete moves them into place, its marker file (`run.json` for a
//! run) last. A failure before that leaves the folder's previous contents as they were;
//! the staging area is removed.
//!
//! The move itself is a journal and a series of renames. The journal
//! (`.memodiff-staging/commit.json`, synced before anything in the folder changes) lists
//! them: first the old marker goes (from then on the folder says it is incomplete), then
//! the files the previous contents listed that the new set does not have, then the new
//! files come in, the checkpoint goes, and the marker comes last. A process killed
//! between two of those steps leaves the journal behind, and the next command into the
//! folder finishes the move before it does anything else ([`Staging::begin`], or
//! [`repair`] alone). A staging area without a journal is a run that never reached its
//! commit: it is removed. The checkpoint and the `.partial` arrays a checkpointed run
//! streams into are never touched by either: `resume` needs them.
//!
//! Two processes cannot write into one folder at once: the staging area is locked while
//! it exists (Unix).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The staging area's name inside the `--out` folder.
pub const STAGING_DIR: &str = ".memodiff-staging";
/// The journal of a commit in progress, inside the staging area.
const JOURNAL: &str = "commit.json";
/// The journal's format tag.
const JOURNAL_FORMAT: &str = "memodiff-commit-1";

/// What a commit does, in order; paths relative to the `--out` folder.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    format: String,
    /// The marker file: removed first, moved into place last.
    marker: String,
    /// Files of the previous contents that the new set does not have.
    remove: Vec<String>,
    /// (from, to) of every new file but the marker.
    moves: Vec<(String, String)>,
    /// Folders removed after the new files are in place (a finished run's checkpoint).
    remove_dirs: Vec<String>,
    /// Where the new marker comes from.
    marker_from: String,
}

/// A staging area in an `--out` folder, removed when dropped uncommitted.
#[derive(Debug)]
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    /// Files written outside the staging area that the commit moves into place
    /// (a checkpointed run's `.partial` arrays): (their path, their name in `out`).
    adopted: Vec<(PathBuf, String)>,
    /// Folders the commit removes once the new files are in place.
    remove_dirs: Vec<String>,
    /// Held while the staging area exists, so a second process is refused.
    _lock: Option<fs::File>,
    committed: bool,
}

impl Staging {
    /// Create `out` if needed, finish or clear what a killed command left in it (the
    /// returned note says which), and open a fresh staging area there.
    pub fn begin(out: &Path) -> Result<(Staging, Option<String>)> {
        fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let note = repair(out)?;
        let dir = out.join(STAGING_DIR);
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = lock(&dir)?;
        Ok((
            Staging {
                out: out.to_path_buf(),
                dir,
                adopted: Vec::new(),
                remove_dirs: Vec::new(),
                _lock: lock,
                committed: false,
            },
            note,
        ))
    }

    /// Where the file `name` (relative to `out`, e.g. `snapshots/frame_000.png`) is
    /// written until the commit.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The staging area itself: written files keep their names relative to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `--out` folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Where the file `name` of the new set is now: adopted from outside, or staged.
    pub fn current_path(&self, name: &str) -> PathBuf {
        self.adopted
            .iter()
            .find(|(_, n)| n == name)
            .map_or_else(|| self.path(name), |(from, _)| from.clone())
    }

    /// Move `from` (a complete file outside the staging area, in `out`) to `name` at the
    /// commit.
    pub fn adopt(&mut self, from: &Path, name: &str) {
        self.adopted.push((from.to_path_buf(), name.to_string()));
    }

    /// Remove the folder `name` of `out` at the commit, once the new files are in place
    /// and before the marker comes (a finished run's checkpoint).
    pub fn remove_dir_at_commit(&mut self, name: &str) {
        self.remove_dirs.push(name.to_string());
    }

    /// Move the staged files into place, `marker` last. `previous` lists the files that
    /// the folder's previous contents consist of (those `out` holds of them and the new
    /// set lacks are removed, so the folder never mixes two sets). The marker and every
    /// adopted file must exist.
    pub fn commit(mut self, marker: &str, previous: &[String]) -> Result<()> {
        let staged = files_under(&self.dir)?;
        if !staged.contains(marker) {
            return Err(Error::Output(format!(
                "cannot finish {}: its {marker} was not written",
                self.out.display()
            )));
        }
        let relative = |p: &Path| -> Result<String> {
            p.strip_prefix(&self.out)
                .ok()
                .and_then(|r| r.to_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Output(format!(
                        "{} is not a file of {}",
                        p.display(),
                        self.out.display()
                    ))
                })
        };
        let mut moves = Vec::new();
        let mut new_names = BTreeSet::new();
        for name in staged.iter().filter(|n| *n != marker) {
            moves.push((format!("{STAGING_DIR}/{name}"), name.clone()));
            new_names.insert(name.clone());
        }
        for (from, name) in &self.adopted {
            if !from.is_file() {
                return Err(Error::Output(format!(
                    "cannot finish {}: {} is missing",
                    self.out.display(),
                    from.display()
                )));
            }
            moves.push((relative(from)?, name.clone()));
            new_names.insert(name.clone());
        }
        new_names.insert(marker.to_string());
        let remove = previous
            .iter()
            .filter(|name| is_plain_relative(name) && !new_names.contains(*name))
            .filter(|name| self.out.join(name).is_file())
            .cloned()
            .collect();
        let journal = Journal {
            format: JOURNAL_FORMAT.into(),
            marker: marker.into(),
            remove,
            moves,
            remove_dirs: std::mem::take(&mut self.remove_dirs),
            marker_from: format!("{STAGING_DIR}/{marker}"),
        };
        crate::io::write_json(&self.dir.join(JOURNAL), &journal)?;
        // From here on the folder changes; a failure leaves the journal for the next
        // command into it, which finishes the move.
        self.committed = true;
        roll_forward(&self.out, &journal)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Finish the commit a killed command left in `out`, or remove the staging area of one
/// that never reached its commit. Returns what it did, in words, or `None` when there
/// was nothing to do. Refuses a staging area another process holds.
pub fn repair(out: &Path) -> Result<Option<String>> {
    let dir = out.join(STAGING_DIR);
    if !dir.exists() {
        return Ok(None);
    }
    let _lock = lock(&dir)?;
    let journal_path = dir.join(JOURNAL);
    let journal: Option<Journal> = fs::read_to_string(&journal_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .filter(|j: &Journal| j.format == JOURNAL_FORMAT);
    Ok(Some(match journal {
        Some(journal) => {
            roll_forward(out, &journal)?;
            format!(
                "{} held a command's results that were being moved into place when it \
                 stopped: finished the move ({} is complete again)",
                out.display(),
                journal.marker
            )
        }
        None => {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            format!(
                "{} held the unfinished files of a command that stopped before its results \
                 were complete: removed them ({STAGING_DIR})",
                out.display()
            )
        }
    }))
}

/// The `files` a marker file (JSON, like run.json) lists: what the folder's current set
/// consists of. Nothing when it is missing or unreadable (an incomplete folder).
pub fn listed_files(marker: &Path) -> Vec<String> {
    fs::read_to_string(marker)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|value| {
            value.get("files")?.as_array().map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Carry out `journal` in `out`, skipping the steps already done: it runs after a
/// commit's journal is written, and again for a commit that was killed part-way.
fn roll_forward(out: &Path, journal: &Journal) -> Result<()> {
    let marker_from = out.join(&journal.marker_from);
    let marker = out.join(&journal.marker);
    // The marker has not come yet: the old one goes first.
    if marker_from.exists() {
        step()?;
        remove_if_present(&marker)?;
    }
    for name in &journal.remove {
        step()?;
        let path = out.join(name);
        remove_if_present(&path)?;
        // A folder of the previous set that is now empty goes too (the snapshot frames'
        // `snapshots/`); one that still holds anything stays.
        for dir in path.ancestors().skip(1).take_while(|d| *d != out) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
    for (from, to) in &journal.moves {
        let (from, to) = (out.join(from), out.join(to));
        if from.exists() {
            step()?;
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    for name in &journal.remove_dirs {
        let dir = out.join(name);
        if dir.exists() {
            step()?;
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    crate::io::sync_dir(out);
    if marker_from.exists() {
        step()?;
        crate::io::rename_synced(&marker_from, &marker).map_err(|e| Error::io(&marker, e))?;
    }
    let staging = out.join(STAGING_DIR);
    fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    crate::io::sync_dir(out);
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// A name of a file inside the folder: relative, without `..` (a previous marker's list
/// is read from disk and may have been edited).
fn is_plain_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The files under `dir`, as paths relative to it with `/` between folders.
fn files_under(dir: &Path) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, prefix: &str, into: &mut BTreeSet<String>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let name = format!("{prefix}{name}");
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &format!("{name}/"), into)?;
            } else {
                into.insert(name);
            }
        }
        Ok(())
    }
    let mut files = BTreeSet::new();
    walk(dir, "", &mut files).map_err(|e| Error::io(dir, e))?;
    files.remove(JOURNAL);
    Ok(files)
}

/// Lock the staging area `dir` for this process, refusing one that another holds.
#[cfg(unix)]
fn lock(dir: &Path) -> Result<Option<fs::File>> {
    use std::os::unix::io::AsRawFd;
    let file = fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    // A file system without flock (some network mounts) cannot say: go on unlocked.
    if rc != 0 && std::io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
        return Ok(None);
    }
    if rc != 0 {
        let out = dir.parent().unwrap_or(dir);
        return Err(Error::Output(format!(
            "another memodiff process is writing into {}; wait for it to finish or choose \
             another --out",
            out.display()
        )));
    }
    Ok(Some(file))
}

#[cfg(not(unix))]
fn lock(_dir: &Path) -> Result<Option<fs::File>> {
    Ok(None)
}

/// One step of a commit. `MEMODIFF_KILL_AT_COMMIT_STEP=k` (a test hook) kills the
/// process with SIGKILL before its k-th step (counted from 1), as a crash would.
fn step() -> Result<()> {
    static STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if crate::io::atomic::test_hook_fires("MEMODIFF_KILL_AT_COMMIT_STEP", &STEPS) {
        #[cfg(unix)]
        // SAFETY: sends a signal to this process; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> BTreeSet<String> {
        files_under(dir).unwrap()
    }

    #[test]
    fn a_commit_replaces_the_previous_set_with_the_marker_last() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        for name in ["old.txt", "shared.txt", "run.json", "mine.txt"] {
            fs::write(out.join(name), b"old").unwrap();
        }
        fs::create_dir_all(out.join("frames")).unwrap();
        fs::write(out.join("frames/f0.png"), b"old").unwrap();
        let (staging, note) = Staging::begin(&out).unwrap();
        assert!(note.is_none());
        for name in ["shared.txt", "sub/new.txt", "run.json"] {
            let path = staging.path(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"new").unwrap();
        }
        let previous = [
            "old.txt",
            "shared.txt",
            "run.json",
            "../escape",
            "frames/f0.png",
        ]
        .map(String::from);
        staging.commit("run.json", &previous).unwrap();
        // old.txt was the previous set's and is gone; mine.txt was never listed: kept.
        let expected: BTreeSet<String> = ["mine.txt", "run.json", "shared.txt", "sub/new.txt"]
            .map(String::from)
            .into();
        assert_eq!(listing(&out), expected);
        assert_eq!(fs::read(out.join("shared.txt")).unwrap(), b"new");
        assert_eq!(fs::read(out.join("mine.txt")).unwrap(), b"old");
        // The previous set's folder, emptied, went with its files.
        assert!(!out.join("frames").exists());
    }

    #[test]
    fn an_uncommitted_staging_area_leaves_the_folder_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_path_buf();
        fs::write(out.join("run.json"), b"old").unwrap();
        {
            let (staging, _) = Staging::begin(&out).unwrap();
            fs::write(staging.path("run.json"), b"new").unwrap();
        }
        assert_eq!(listing(&out), BTreeSet::from(["run.json".to_string()]));
        assert_eq!(fs::read(out.join("run.json")).unwrap(), b"old");
    }

    #[test]
    fn a_left_staging_area_is_removed_or_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_path_buf();
        // No journal: a command that never reached its commit.
        fs::create_dir_all(out.join(STAGING_DIR)).unwrap();
        fs::write(out.join(STAGING_DIR).join("run.json"), b"half").unwrap();
        let note = repair(&out).unwrap().unwrap();
        assert!(note.contains("removed"), "{note}");
        assert!(listing(&out).is_empty());
        // A journal whose first moves were done: the rest are carried out.
        fs::write(out.join("a.txt"), b"new a").unwrap();
        fs::create_dir_all(out.join(STAGING_DIR)).unwrap();
        fs::write(out.join(STAGING_DIR).join("b.txt"), b"new b").unwrap();
        fs::write(out.join(STAGING_DIR).join("run.json"), b"new").unwrap();
        fs::write(out.join(".a.partial"), b"adopted").unwrap();
        fs::create_dir_all(out.join("checkpoint")).unwrap();
        let journal = Journal {
            format: JOURNAL_FORMAT.into(),
            marker: "run.json".into(),
            remove: vec!["gone.txt".into()],
            moves: vec![
                (format!("{STAGING_DIR}/a.txt"), "a.txt".into()),
                (format!("{STAGING_DIR}/b.txt"), "b.txt".into()),
                (".a.partial".into(), "c.npy".into()),
            ],
            remove_dirs: vec!["checkpoint".into()],
            marker_from: format!("{STAGING_DIR}/run.json"),
        };
        crate::io::write_json(&out.join(STAGING_DIR).join(JOURNAL), &journal).unwrap();
        let note = repair(&out).unwrap().unwrap();
        assert!(note.contains("finished the move"), "{note}");
        let expected: BTreeSet<String> = ["a.txt", "b.txt", "c.npy", "run.json"]
            .map(String::from)
            .into();
        assert_eq!(listing(&out), expected);
        assert_eq!(fs::read(out.join("c.npy")).unwrap(), b"adopted");
        assert_eq!(repair(&out).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_second_process_is_refused_while_a_staging_area_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (_held, _) = Staging::begin(dir.path()).unwrap();
        let message = repair(dir.path()).unwrap_err().to_string();
        assert!(message.contains("another memodiff process"), "{message}");
    }
}
