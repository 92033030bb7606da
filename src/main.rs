//! The `safetally` command: parses flags, runs one subcommand, maps the
//! outcome to an exit code (0 done, 1 data refused, 2 usage or
//! configuration error, 3 the machine failed). A closed output pipe exits
//! quietly with 0. A panic prints where it happened, never its message.

mod cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use safetally::error::{EXIT_MACHINE, EXIT_USAGE, io_exit_code};

fn main() -> ExitCode {
    keep_freed_memory();
    safetally::guard::install_hook();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let code = exit_code(&err);
            let mut stderr = std::io::stderr();
            let _ = writeln!(stderr, "error: {err:#}");
            if code == EXIT_MACHINE {
                let _ = writeln!(
                    stderr,
                    "This is a problem of this computer (disk space, permissions, the disk \
                     itself), not of the data: fix it and run the command again. Nothing was \
                     half-written."
                );
            }
            ExitCode::from(code as u8)
        }
    }
}

/// The exit code of a failed command: the library's error says; an
/// operating system error from the command itself (writing to the
/// terminal, a file) is the machine's; anything else is a usage error.
fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(e) = err.downcast_ref::<safetally::Error>() {
        return e.exit_code();
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map_or(EXIT_USAGE, io_exit_code)
}

/// glibc's allocator hands memory freed at the top of a heap back to the
/// system once a few megabytes are free there (a threshold it derives from
/// the largest block freed so far, at most 64 MiB), each thread's heap on
/// its own. Reading drops allocates and frees buffers of a few megabytes
/// for every batch of every column, so every batch touched fresh pages:
/// at 10 million records, system time (mostly page faults) was about 30%
/// of the report's CPU time. Fixed thresholds (blocks under 32 MiB from
/// the heap, up to 256 MiB kept free at its top) keep that memory for the
/// next batch. Over five alternating runs of the 10 million report the
/// median wall time went from 5.6 s to 5.0 s and the median system time
/// from 2.5 s to 1.7 s; the peak rose by about 100 MiB
/// (docs/performance.md, "Figures at be7da77").
///
/// Blocks of 32 MiB and more (a form's columns, sort buffers, the filters
/// fuzzy linkage holds) were each mapped on their own and unmapped when
/// freed, so the next large block touched fresh pages again: at 10 million
/// records with fuzzy linkage, a million page faults. With no block mapped
/// on its own (`M_MMAP_MAX` 0) they come from the heap, and memory one
/// stage frees is taken by the next: half the faults, and about 0.1 s (exact
/// keys) and 1 s (fuzzy linkage) less at 10 million records, for 60 to 200
/// MiB more at peak (docs/performance.md, "Figures at cbb5b70 and f5065cf"). A
/// worker thread's heap cannot hold such a block, and glibc maps it
/// anyway. Other allocators and platforms are left as they are.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; it is
    // called once, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
