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

/// A panic caught by [`catch`]: where it happened (known when a hook of
/// this module is installed), never what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    /// The source file and line of the code that panicked.
    pub place: Option<(String, u32)>,
}

impl Panicked {
    /// Whether the panic happened in a dependency's code (its source lies
    /// in cargo's registry or git checkouts, or in the standard library's),
    /// not in safetally's own. An unknown place counts as ours.
    pub fn in_dependency(&self) -> bool {
        self.place.as_ref().is_some_and(|(file, _)| {
            let file = file.replace('\\', "/");
            file.contains("/registry/src/")
                || file.contains("/git/checkouts/")
                || file.starts_with("/rustc/")
        })
    }
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.place {
            Some((file, line)) => write!(f, "an internal error at {file}:{line}"),
            None => write!(f, "an internal error"),
        }
    }
}

/// Runs `f`; a panic inside it is returned as `Err`.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    CATCHING.with(|c| c.set(c.get() + 1));
    LAST.with(|l| l.set(None));
    let out = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    out.map_err(|_| Panicked {
        place: LAST.with(Cell::take),
    })
}

/// Replaces the panic message: inside [`catch`] nothing is printed (the
/// caller reports the error); elsewhere one line with the place, never the
/// payload.
pub fn install_hook() {
    install(false);
}

/// As [`install_hook`], but a panic outside [`catch`] goes to the hook that
/// was installed before (a fuzzer's, which must see it).
pub fn install_recording_hook() {
    install(true);
}

fn install(chain: bool) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info.location().map(|l| (l.file().to_string(), l.line()));
        if CATCHING.with(Cell::get) > 0 {
            LAST.with(|l| l.set(place));
            return;
        }
        if chain {
            return previous(info);
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
        let r: Result<(), Panicked> = catch(|| panic!("a secret value"));
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("an internal error"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(catch(|| 2 + 2), Ok(4));
        assert_eq!(CATCHING.with(Cell::get), 0);
    }

    #[test]
    fn a_place_in_the_registry_is_a_dependency_and_one_in_src_is_ours() {
        let at = |f: &str| Panicked {
            place: Some((f.to_string(), 1)),
        };
        assert!(at("/root/.cargo/registry/src/index/arrow-buffer-59.3.2/src/x.rs").in_dependency());
        assert!(!at("src/drop.rs").in_dependency());
        assert!(!at("/work/main/src/drop.rs").in_dependency());
        assert!(!Panicked { place: None }.in_dependency());
    }
}
