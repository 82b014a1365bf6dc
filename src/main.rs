//! The `memodiff` binary: parse the command line, install the Ctrl-C handler (the only
//! process-wide signal handler; the library takes a cancellation flag), run the command
//! and print its error as one line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    quiet_mesa_runtime_dir();
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

/// Mesa's window-system layer prints "error: XDG_RUNTIME_DIR is invalid or not set" on every
/// adapter probe when the variable is unset (headless servers, containers, CI), although
/// compute needs no display. Point it at a private folder of ours first, so the user's
/// stderr holds only memodiff's own lines. Done before any thread starts (set_var is not
/// thread-safe); a variable the user set is left alone.
fn quiet_mesa_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // One folder per user: the name carries the uid.
        let dir = std::env::temp_dir().join(format!("memodiff-runtime-{}", whoami_uid()));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Mesa wants a folder owned by us with mode 0700; anything else and we stay out.
        if let Ok(meta) = std::fs::metadata(&dir) {
            if meta.is_dir() && meta.mode() & 0o777 == 0o700 && meta.uid() == whoami_uid() {
                std::env::set_var("XDG_RUNTIME_DIR", &dir);
            }
        }
    }
}

/// The user id of this process (the owner of /proc/self; Linux, where Mesa runs), or
/// `u32::MAX` where there is no /proc.
#[cfg(unix)]
fn whoami_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}
