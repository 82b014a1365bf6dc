//! What the subcommands share on the command line: option groups, number parsers, the
//! progress bar, the printed summaries, the mapping of library parameters to flags, and the
//! flag the binary's Ctrl-C handler sets. The command line itself (`Cli`) and the dispatch
//! are in `crate::commands`, one file per subcommand.

pub mod flags;
pub mod options;
pub mod parse;
pub mod print;
pub mod progress;

/// Set by the binary's Ctrl-C handler: `sample` stops at the next step boundary.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
