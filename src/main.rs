use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = memodiff::cli::Cli::parse();
    match memodiff::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
