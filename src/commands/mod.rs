//! One module per subcommand: its options (clap) and its body. Shared option groups,
//! parsers and printing are in `crate::cli`.

pub mod bench;
pub mod collapse;
pub mod devices;
pub mod merge;
pub mod render;
pub mod sample;
pub mod score_field;
pub mod sweep;
