//! What the fuzz targets (`fuzz/`) run on each input, shared with the
//! tests that replay what fuzzing found (`tests/fuzz.rs`). Each entry takes
//! any bytes and must return: a panic is a bug, reported by libFuzzer as a
//! crash and kept as a regression input. They read as the commands do, but
//! write nothing.

use std::path::Path;

use bytes::Bytes;
use chrono::NaiveDate;

use crate::key::TaskForceKey;
use crate::pseudonymise::{Input, Period, Pseudonymiser, Source};
use crate::schema::Form;

/// A drop's bytes, read and verified as `ingest` and `check` do. A panic
/// in safetally's own code is a crash. A panic in a dependency's reader
/// (the Parquet decoder meeting damaged pages) is what [`crate::guard`]
/// turns into the drop's refusal: here it must be that, a refusal that
/// names no value.
pub fn drop(data: &[u8]) {
    match guarded(|| crate::drop::inspect_bytes(Bytes::copy_from_slice(data))) {
        Ok(_) => {}
        Err(_) => {
            let refused = crate::drop::inspect(Bytes::copy_from_slice(data));
            assert!(
                refused.is_err_and(|r| r.reason.contains("internal error") && r.meta.is_none()),
                "a dependency's panic must be the drop's refusal"
            );
        }
    }
}

/// Runs `f` under the guard `pseudonymise` and `ingest` run their readers
/// under: `Err` for a panic in a dependency (which the guard makes the
/// file's error); a panic in safetally's own code is a crash.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, crate::guard::Panicked> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(crate::guard::install_recording_hook);
    match crate::guard::catch(f) {
        Err(p) if !p.in_dependency() => panic!("safetally's own code panicked: {p}"),
        r => r,
    }
}

fn pseudonymiser(form: Form) -> Pseudonymiser {
    let key = TaskForceKey::from_bytes([7; crate::key::KEY_LEN]);
    let period = Period {
        year: 2018,
        month: 3,
    };
    let today = NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default();
    Pseudonymiser::new(&key, form, "NGO01", period, today)
}

/// A raw CSV file, read whole and streamed (the two ways `pseudonymise`
/// reads one) and pseudonymised as each form.
pub fn raw_csv(data: &[u8]) {
    let path = Path::new("fuzz.csv");
    for form in Form::ALL {
        let p = pseudonymiser(form);
        if let Ok(table) = crate::raw::read_csv_bytes(data, path) {
            let input = Input {
                name: "fuzz.csv".to_string(),
                table,
            };
            let _ = p.run_batches(&[input]);
        }
        if let Ok(file) = crate::raw::open_csv_bytes(data.to_vec(), path) {
            let source = Source {
                name: "fuzz.csv".to_string(),
                file,
            };
            let _ = p.run_into(&[source], || Ok(Vec::new()));
        }
    }
}

/// A raw XLSX workbook, read and pseudonymised as each form. The XLSX
/// reader (calamine) has panicked on damaged workbooks (with overflow
/// checks on, as fuzzing builds); `pseudonymise` runs under the guard that
/// makes such a panic the file's error.
pub fn raw_xlsx(data: &[u8]) {
    let path = Path::new("fuzz.xlsx");
    let Ok(Ok(table)) = guarded(|| crate::raw::read_xlsx_bytes(data, path)) else {
        return;
    };
    for form in Form::ALL {
        let input = Input {
            name: "fuzz.xlsx".to_string(),
            table: table.clone(),
        };
        let _ = pseudonymiser(form).run_batches(&[input]);
    }
}

/// A store's ledger, read and replayed into the store's state as every
/// store command does.
pub fn ledger(data: &[u8]) {
    let ledger = crate::store::ledger::Ledger::parse(data);
    let state = crate::store::State::replay(ledger);
    let _ = state.current();
    let _ = state.epoch();
}

/// A report configuration and a member list (the secretariat's two TOML
/// files), each parsed from the same text.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::config::Config::parse(&text, Path::new("config.toml"));
    let _ = crate::store::Members::parse(&text, Path::new("members.toml"));
}
