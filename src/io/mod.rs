//! Files: atomic writes and the `.npy` format.

pub mod atomic;
pub mod npy;
pub mod out_dir;

pub use atomic::*;
