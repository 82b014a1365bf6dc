//! The `memodiff` binary: parse the command line, install the signal handler (the only
//! process-wide one; the library takes a cancellation flag), run the command and print its
//! error as one line.

use clap::Parser;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first stopping signal that came (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn main() -> std::process::ExitCode {
    quiet_mesa_runtime_dir();
    let cli = memodiff::binary::Cli::parse();
    install_stop_handler();
    let result = memodiff::binary::run(cli);
    let signal = STOP_SIGNAL.load(Ordering::SeqCst);
    match result {
        Ok(()) => {
            if signal != 0 {
                // It came while the outputs were written (after the last step): they were
                // completed rather than left half-written.
                eprintln!(
                    "memodiff: {} came after sampling had ended; the outputs are complete",
                    signal_name(signal)
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e @ memodiff::Error::Interrupted(_)) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(exit_status(signal))
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a run stopped by `signal`: 128 + its number, as a shell reports a
/// process killed by it (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
fn exit_status(signal: i32) -> u8 {
    if signal == 0 {
        130
    } else {
        (128 + signal) as u8
    }
}

/// The first SIGINT, SIGTERM or SIGHUP asks the run to stop at the next step boundary
/// (temporary files are removed; a checkpointed run keeps its last checkpoint for
/// `memodiff resume`); a second one exits at once, saying so.
#[cfg(unix)]
fn install_stop_handler() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if memodiff::binary::INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "error: {} again: exiting at once (temporary files may remain; the next \
                     run into the folder replaces them)",
                    signal_name(signal)
                );
                std::process::exit(i32::from(exit_status(signal)));
            }
            STOP_SIGNAL.store(signal, Ordering::SeqCst);
        }
    });
}

/// Ctrl-C, where there are no POSIX signals.
#[cfg(not(unix))]
fn install_stop_handler() {
    let _ = ctrlc::set_handler(|| {
        if memodiff::binary::INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("error: Ctrl-C again: exiting at once");
            std::process::exit(130);
        }
        STOP_SIGNAL.store(2, Ordering::SeqCst);
    });
}

/// The name of a stopping signal.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT (Ctrl-C)",
        15 => "SIGTERM",
        _ => "a signal",
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
