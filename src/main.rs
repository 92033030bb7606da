//! The `safetally` command: parses flags, runs one subcommand, maps the
//! outcome to an exit code (0 done, 1 data refused, 2 usage or
//! configuration error). A closed output pipe exits quietly with 0.

mod cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let code = err
                .downcast_ref::<safetally::Error>()
                .map_or(2, safetally::Error::exit_code);
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
