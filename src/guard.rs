//! Panics: a panic inside the reading of outside bytes (a dependency's bug
//! met by a damaged file) becomes that file's error instead of the end of
//! the run, and no panic message ever reaches the terminal with its payload,
//! which could hold a value from the file being read (a name from a raw
//! file). The binary installs [`install_hook`]; readers wrap their work in
//! [`catch`].

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic caught on this thread happened.
    static LAST: Cell<Option<(String, u32)>> = const { Cell::new(None) };
}

/// Runs `f`; a panic inside it is returned as `Err` with where it happened
/// (file and line of the code that panicked, never its message).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    LAST.with(|l| l.set(None));
    let out = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    out.map_err(|_| match LAST.with(Cell::take) {
        Some((file, line)) => format!("an internal error at {file}:{line}"),
        None => "an internal error".to_string(),
    })
}

/// Replaces the panic message: inside [`catch`] nothing is printed (the
/// caller reports the error); elsewhere one line with the place, never the
/// payload.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| (l.file().to_string(), l.line()));
        if CATCHING.with(Cell::get) > 0 {
            LAST.with(|l| l.set(place));
            return;
        }
        let at = place.map_or(String::new(), |(f, l)| format!(" at {f}:{l}"));
        eprintln!(
            "safetally: internal error{at}. This is a bug in safetally, not a problem of your \
             data: please report it with the command you ran (never send the data)."
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_thread_goes_on() {
        let r: Result<(), String> = catch(|| panic!("a secret value"));
        let e = r.unwrap_err();
        assert!(e.starts_with("an internal error"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(catch(|| 2 + 2), Ok(4));
        assert_eq!(CATCHING.with(Cell::get), 0);
    }
}
