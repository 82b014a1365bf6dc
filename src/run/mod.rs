//! A sampling run: its one definition ([`spec::RunSpec`]), the driver that feeds batches
//! of particles through an engine, the run folder it writes, its run.json
//! ([`report::RunReport`]) and the checkpoints that let it resume.

pub mod checkpoint;
pub mod config;
pub mod driver;
pub mod figures;
pub mod folder;
pub mod measure;
pub mod report;
pub mod sampler;
pub mod spec;
pub mod speciation;
pub mod to_folder;
