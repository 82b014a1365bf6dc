//! Files: atomic writes and the `.npy` format.

pub mod atomic;
pub mod npy;

pub use atomic::*;
