//! The `memodiff` binary: parse the command line, install the Ctrl-C handler (the only
//! process-wide signal handler; the library takes a cancellation flag), run the command
//! and print its error as one line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = memodiff::binary::Cli::parse();
    // Ctrl-C: the first one asks the run to stop at the next step boundary (temporary
    // files are removed, exit status 130); a second one exits at once.
    let _ = ctrlc::set_handler(|| {
        use std::sync::atomic::Ordering;
        if memodiff::binary::INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    match memodiff::binary::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ memodiff::Error::Interrupted(_)) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
