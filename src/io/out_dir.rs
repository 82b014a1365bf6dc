//! The `--out` policy every command follows: what may already be in an output folder.

use crate::error::Result;

/// Refuse an existing non-empty folder `out` (a run would replace files in it): the user
/// must say `--force`. A missing folder, an empty one or a non-folder (reported later by
/// `prepare_dir`) passes.
pub fn refuse_non_empty_out(out: &std::path::Path) -> Result<()> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty {
        return Err(crate::Error::Output(format!(
            "the --out folder {} exists and is not empty; pass --force to write into it \
             (files of the same names are replaced) or choose another --out",
            out.display()
        )));
    }
    Ok(())
}
