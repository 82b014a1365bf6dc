//! Files: atomic writes, the `.npy` format, the `--out` policy and the staging area
//! through which a folder's results arrive as one set.

pub mod atomic;
pub mod npy;
pub mod out_dir;
pub mod staging;

pub use atomic::*;
