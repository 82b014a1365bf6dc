//! What the subcommands share on the command line: option groups, number parsers, the
//! progress bar, the printed summaries, the mapping of library parameters to flags, and the
//! flag the binary's Ctrl-C handler sets. The command line itself (`Cli`) and the dispatch
//! are in `crate::commands`, one file per subcommand.

pub mod flags;
pub mod options;
pub mod parse;
pub mod print;
pub mod progress;

/// Set by the binary's signal handler (SIGINT, SIGTERM, SIGHUP): `sample` stops at the next
/// step boundary.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The command line as run.json records it. Paths need not be UTF-8 (`--out` of any
/// name is accepted), so the arguments are read as the system gives them and only this
/// record is made readable (a non-UTF-8 byte becomes U+FFFD).
pub fn command_line() -> Vec<String> {
    std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect()
}
