//! A sampling run: the driver that feeds batches of particles through an engine, the run
//! folder it writes, and the checkpoints that let it resume.

pub mod checkpoint;
pub mod driver;
pub mod folder;
