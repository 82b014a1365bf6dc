//! One module per subcommand whose work is its own (the sweeps, the merge of shards, the
//! benchmark matrix, the score field).

pub mod bench;
pub mod collapse;
pub mod merge;
pub mod score_field;
pub mod sweep;
