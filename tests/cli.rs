//! Every subcommand through the binary: templates, keys, pseudonymise
//! (CSV, XLSX, BOM/CRLF, invalid rows, --allow-rejects, overwriting) and check.

use crate::util::{
    DropData, World, pseudonymise_args, rewrite_drop, screening_header, screening_row,
};

fn person_a(case_ref: &str) -> String {
    screening_row(&[
        ("case_ref", case_ref),
        ("screening_date", "2018-03-05"),
        ("family_name", "Dela Cruz"),
        ("given_name", "Maria"),
        ("date_of_birth", "1990-05-12"),
        ("sex", "f"),
        ("nationality", "Philippines"),
        ("passport_number", "P1234567A"),
        ("sector", "domestic_work"),
        ("ind_deception", "yes"),
        ("ind_isolation", "0"),
        ("outcome", "Not identified"),
    ])
}

/// The same person as `person_a`, written the way another NGO would.
fn person_a_again(case_ref: &str) -> String {
    screening_row(&[
        ("case_ref", case_ref),
        ("screening_date", "7/3/2018"),
        ("family_name", "MARIA"),
        ("given_name", "de la cruz"),
        ("date_of_birth", "12/05/1990"),
        ("sex", "Female"),
        ("nationality", "Filipina"),
        ("passport_number", "p123-4567 a"),
        ("outcome", "pending"),
    ])
}

fn csv(rows: &[String]) -> String {
    let mut s = screening_header() + "\n";
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

#[test]
fn template_prints_the_schema_header() {
    let w = World::new();
    let r = w.run(&["template", "screening"]);
    r.ok();
    assert_eq!(r.stdout.trim(), screening_header());
    let r = w.run(&["template", "self_assessment"]);
    assert!(
        r.stdout
            .starts_with("response_ref,response_date,family_name")
    );
    assert_eq!(w.run(&["template", "intake"]).code, 2);
}

#[test]
fn xlsx_template_reads_back_and_is_not_overwritten() {
    let w = World::new();
    w.run(&["template", "screening", "--xlsx", "t.xlsx"]).ok();
    let t = safetally::raw::read(&w.path("t.xlsx")).unwrap();
    assert_eq!(t.header.join(","), screening_header());
    assert!(t.rows.is_empty());
    let before = std::fs::read(w.path("t.xlsx")).unwrap();
    let r = w.run(&["template", "screening", "--xlsx", "t.xlsx"]);
    assert_eq!(r.code, 2);
    assert_eq!(std::fs::read(w.path("t.xlsx")).unwrap(), before);
}

#[test]
fn keygen_writes_a_private_key_once_and_fingerprint_repeats_it() {
    let w = World::new();
    let r = w.run(&["keygen", "--out", "k"]);
    r.ok();
    let fp = r.stdout.trim().to_string();
    assert!(safetally::drop::is_fingerprint(&fp), "{fp}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.path("k")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key_bytes = std::fs::read(w.path("k")).unwrap();
    let again = w.run(&["keygen", "--out", "k"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"));
    assert_eq!(std::fs::read(w.path("k")).unwrap(), key_bytes);

    assert_eq!(w.run(&["fingerprint", "--key", "k"]).stdout.trim(), fp);
    let via_env = w
        .cmd()
        .args(["fingerprint"])
        .env("SAFETALLY_KEY_FILE", "k")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&via_env.stdout).trim(), fp);
    // The key itself never reaches the terminal.
    let hex = String::from_utf8(key_bytes).unwrap();
    assert!(!r.stdout.contains(hex.trim()) && !r.stderr.contains(hex.trim()));
}

#[test]
fn missing_unreadable_or_malformed_keys_are_usage_errors() {
    let w = World::new();
    w.write("in.csv", csv(&[person_a("A1")]));
    let none = w.run(&["fingerprint"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("SAFETALLY_KEY_FILE"),
        "{}",
        none.stderr
    );
    let absent = w.pseudonymise("NGO01", &[], &["in.csv"]);
    assert_eq!(absent.code, 2);
    assert!(
        absent.stderr.contains("cannot read the key file"),
        "{}",
        absent.stderr
    );
    w.write("key", "not a key\n");
    let bad = w.pseudonymise("NGO01", &[], &["in.csv"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("not a safetally key"), "{}", bad.stderr);
    assert!(!w.path("out").exists(), "nothing is written without a key");
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_others_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let key = w.key();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = w.run(&["fingerprint", "--key", "key"]);
    r.ok();
    assert!(
        r.stderr.contains("can be read by other users"),
        "{}",
        r.stderr
    );
}

#[test]
fn pseudonymise_writes_a_drop_that_reads_back_and_passes_check() {
    let w = World::new();
    w.key();
    w.write("in.csv", csv(&[person_a("A1"), person_a_again("A2")]));
    let r = w.pseudonymise("ngo01", &[], &["in.csv"]);
    r.ok();
    let drop = w.path("out/screening_NGO01_2018-03.parquet");
    let d = DropData::read(&drop);
    assert_eq!(d.rows(), 2);
    assert_eq!(d.meta["safetally.form"], "screening");
    assert_eq!(d.meta["safetally.org"], "NGO01");
    assert_eq!(d.meta["safetally.period"], "2018-03");
    assert_eq!(d.meta["safetally.rows"], "2");
    assert_eq!(d.meta["safetally.rejected_rows"], "0");
    let fp = w
        .run(&["fingerprint", "--key", "key"])
        .stdout
        .trim()
        .to_string();
    assert_eq!(d.meta["safetally.key_fingerprint"], fp);
    // Coarsened and coded values.
    assert_eq!(d.text("event_month", 0).as_deref(), Some("2018-03"));
    assert_eq!(d.text("age_band", 0).as_deref(), Some("26-35"));
    assert_eq!(d.text("sex", 1).as_deref(), Some("female"));
    assert_eq!(d.text("nationality", 1).as_deref(), Some("PHL"));
    assert_eq!(d.text("outcome", 0).as_deref(), Some("not_identified"));
    assert_eq!(d.flag("ind_deception", 0), Some(true));
    assert_eq!(d.flag("ind_isolation", 0), Some(false));
    assert_eq!(d.flag("ind_debt_bondage", 0), None);
    // One person written two ways: same match keys, different record keys.
    assert!(d.key("key_passport", 0).is_some());
    assert_eq!(d.key("key_passport", 0), d.key("key_passport", 1));
    assert_eq!(d.key("key_name_dob", 0), d.key("key_name_dob", 1));
    assert_ne!(d.key("record_key", 0), d.key("record_key", 1));
    // No identity column.
    for col in [
        "family_name",
        "given_name",
        "date_of_birth",
        "passport_number",
    ] {
        assert!(d.batch.column_by_name(col).is_none(), "{col}");
    }
    let c = w.run(&["check", "--key", "key", drop.to_str().unwrap()]);
    c.ok();
    assert!(
        c.stdout
            .contains("form=screening org=NGO01 period=2018-03 rows=2 rejected=0")
    );
}

#[test]
fn same_passport_number_from_two_countries_gives_two_keys() {
    let w = World::new();
    w.key();
    let row = |r: &str, nat: &str| {
        screening_row(&[
            ("case_ref", r),
            ("nationality", nat),
            ("passport_number", "A1234567"),
        ])
    };
    w.write(
        "in.csv",
        csv(&[row("1", "IDN"), row("2", "PHL"), row("3", "id")]),
    );
    w.pseudonymise("NGO01", &[], &["in.csv"]).ok();
    let d = DropData::read(&w.path("out/screening_NGO01_2018-03.parquet"));
    assert_ne!(d.key("key_passport", 0), d.key("key_passport", 1));
    assert_eq!(d.key("key_passport", 0), d.key("key_passport", 2));
    assert_eq!(d.key("key_name_dob", 0), None, "no name, no name key");
}

#[test]
fn bom_crlf_semicolons_and_xlsx_give_the_same_keys_as_plain_csv() {
    let w = World::new();
    w.key();
    let plain = csv(&[person_a("A1"), person_a_again("A2")]);
    w.write("plain.csv", &plain);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(plain.replace('\n', "\r\n").replace(',', ";").into_bytes());
    w.write("bom.csv", bom);
    // The same rows in Excel, screening_date typed as an Excel date.
    let xlsx = w.path("in.xlsx");
    {
        use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        let mut rows = safetally::raw::read_csv_bytes(plain.as_bytes(), "p".as_ref())
            .unwrap()
            .rows;
        for (c, h) in screening_header().split(',').enumerate() {
            sheet.write_string(0, c as u16, h.to_uppercase()).unwrap();
        }
        let date = Format::new().set_num_format("dd/mm/yyyy");
        for (r, row) in rows.iter_mut().enumerate() {
            for (c, v) in row.cells.iter().enumerate() {
                let (r, c) = (r as u32 + 1, c as u16);
                if c == 1 && r == 1 {
                    let d = ExcelDateTime::from_ymd(2018, 3, 5).unwrap();
                    sheet.write_datetime_with_format(r, c, &d, &date).unwrap();
                } else if !v.is_empty() {
                    sheet.write_string(r, c, v).unwrap();
                }
            }
        }
        book.save(&xlsx).unwrap();
    }
    for (org, file) in [("P", "plain.csv"), ("B", "bom.csv"), ("X", "in.xlsx")] {
        w.pseudonymise(org, &[], &[file]).ok();
    }
    let read = |org: &str| DropData::read(&w.path(&format!("out/screening_{org}_2018-03.parquet")));
    let (p, b, x) = (read("P"), read("B"), read("X"));
    for d in [&b, &x] {
        assert_eq!(d.rows(), 2);
        for row in 0..2 {
            for col in ["key_passport", "key_name_dob"] {
                assert_eq!(d.key(col, row), p.key(col, row), "{col} row {row}");
            }
            assert_eq!(d.text("event_month", row), p.text("event_month", row));
            assert_eq!(d.text("age_band", row), p.text("age_band", row));
        }
    }
}

/// Every kind of invalid row, with the (row, column) it must be reported at.
#[test]
fn every_kind_of_invalid_row_is_reported_and_no_drop_is_written() {
    let w = World::new();
    w.key();
    let future = (chrono::Utc::now().date_naive() + chrono::Days::new(400))
        .format("%Y-%m-%d")
        .to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("screening_date", "2018-03-01")], "case_ref"),
        (
            vec![("case_ref", "D1"), ("screening_date", "2018/03/01")],
            "screening_date",
        ),
        (
            vec![("case_ref", "D2"), ("screening_date", "31/02/2018")],
            "screening_date",
        ),
        (
            vec![("case_ref", "D3"), ("screening_date", "2018-04-01")],
            "screening_date",
        ),
        (
            vec![("case_ref", "D4"), ("date_of_birth", &future)],
            "date_of_birth",
        ),
        (
            vec![("case_ref", "D5"), ("date_of_birth", "1890")],
            "date_of_birth",
        ),
        (
            vec![
                ("case_ref", "D6"),
                ("screening_date", "2018-03-02"),
                ("date_of_birth", "2018-03-09"),
            ],
            "date_of_birth",
        ),
        (vec![("case_ref", "D7"), ("sex", "woman?")], "sex"),
        (
            vec![("case_ref", "D8"), ("nationality", "Atlantis")],
            "nationality",
        ),
        (
            vec![("case_ref", "D9"), ("nationality", "Congolese")],
            "nationality",
        ),
        (
            vec![("case_ref", "D10"), ("passport_number", "P12/345")],
            "passport_number",
        ),
        (vec![("case_ref", "D11"), ("sector", "mining")], "sector"),
        (
            vec![("case_ref", "D12"), ("ind_deception", "maybe")],
            "ind_deception",
        ),
        (vec![("case_ref", "D13"), ("outcome", "victim")], "outcome"),
        (vec![("case_ref", "D14"), ("referral", "ngo")], "referral"),
        (
            vec![("case_ref", "D15"), ("exploitation_type", "begging")],
            "exploitation_type",
        ),
        (vec![("case_ref", "DUP")], "case_ref"),
        (vec![("case_ref", "dup ")], "case_ref"),
    ];
    let mut rows: Vec<String> = vec![person_a("OK1")];
    rows.extend(cases.iter().map(|(v, _)| screening_row(v)));
    rows.push(format!("{},extra", person_a("OK2")));
    w.write("in.csv", csv(&rows));
    let r = w.pseudonymise("NGO01", &[], &["in.csv"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!w.path("out/screening_NGO01_2018-03.parquet").exists());
    let report =
        std::fs::read_to_string(w.path("out/screening_NGO01_2018-03.rejects.csv")).unwrap();
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("file,row,column,reason"));
    let reported: Vec<(u64, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            (f[1].parse().unwrap(), f[2].to_string())
        })
        .collect();
    for (i, (_, column)) in cases.iter().enumerate() {
        let row = i as u64 + 3; // header is row 1, OK1 is row 2
        assert!(
            reported.contains(&(row, column.to_string())),
            "row {row} column {column} not reported in\n{report}"
        );
    }
    let extra_row = cases.len() as u64 + 3;
    assert!(reported.contains(&(extra_row, String::new())), "{report}");
    assert!(!reported.iter().any(|(row, _)| *row == 2), "OK1 is valid");
    assert!(r.stderr.contains("row 3, column case_ref"), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-rejects"));
}

#[test]
fn header_that_does_not_match_the_form_is_refused_with_the_columns_named() {
    let w = World::new();
    w.key();
    let header = screening_header().replace("nationality", "nationalty");
    w.write("in.csv", format!("{header}\n{}\n", person_a("A1")));
    let r = w.pseudonymise("NGO01", &[], &["in.csv"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("missing columns: nationality"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("'nationalty'"), "{}", r.stderr);
    assert!(!w.path("out/screening_NGO01_2018-03.parquet").exists());
}

#[test]
fn allow_rejects_writes_valid_rows_and_records_the_number_rejected() {
    let w = World::new();
    w.key();
    let rows = [
        person_a("A1"),
        screening_row(&[("case_ref", "B1"), ("sex", "??")]),
        screening_row(&[("case_ref", "B2"), ("screening_date", "2017-01-01")]),
        person_a_again("A2"),
    ];
    w.write("in.csv", csv(&rows));
    let r = w.pseudonymise("NGO01", &["--allow-rejects"], &["in.csv"]);
    r.ok();
    assert!(r.stdout.contains("2 rows, 2 rejected"), "{}", r.stdout);
    let d = DropData::read(&w.path("out/screening_NGO01_2018-03.parquet"));
    assert_eq!(d.rows(), 2);
    assert_eq!(d.meta["safetally.rejected_rows"], "2");
    assert!(w.path("out/screening_NGO01_2018-03.rejects.csv").exists());
    // Input order is kept: A1 then A2.
    assert_eq!(d.text("outcome", 0).as_deref(), Some("not_identified"));
    assert_eq!(d.text("outcome", 1).as_deref(), Some("pending"));
}

#[test]
fn an_existing_drop_is_never_overwritten_without_force() {
    let w = World::new();
    w.key();
    w.write("in.csv", csv(&[person_a("A1")]));
    w.pseudonymise("NGO01", &[], &["in.csv"]).ok();
    let drop = w.path("out/screening_NGO01_2018-03.parquet");
    let before = std::fs::read(&drop).unwrap();
    w.write("in.csv", csv(&[person_a("A1"), person_a_again("A2")]));
    let r = w.pseudonymise("NGO01", &[], &["in.csv"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(&drop).unwrap(), before);
    w.pseudonymise("NGO01", &["--force"], &["in.csv"]).ok();
    assert_eq!(DropData::read(&drop).rows(), 2);
    let leftovers: Vec<_> = std::fs::read_dir(w.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_fixed_file_removes_the_stale_rejects_report() {
    let w = World::new();
    w.key();
    w.write(
        "in.csv",
        csv(&[screening_row(&[("case_ref", "A"), ("sex", "?")])]),
    );
    assert_eq!(w.pseudonymise("NGO01", &[], &["in.csv"]).code, 1);
    let report = w.path("out/screening_NGO01_2018-03.rejects.csv");
    assert!(report.exists());
    w.write(
        "in.csv",
        csv(&[screening_row(&[("case_ref", "A"), ("sex", "f")])]),
    );
    w.pseudonymise("NGO01", &[], &["in.csv"]).ok();
    assert!(!report.exists());
}

#[test]
fn bad_usage_is_exit_code_2_before_anything_is_written() {
    let w = World::new();
    w.key();
    w.write("in.csv", csv(&[person_a("A1")]));
    for (flag, value) in [
        ("--org", "bad org!"),
        ("--period", "2018-3"),
        ("--form", "intake"),
    ] {
        let mut args = pseudonymise_args("NGO01");
        args.push("in.csv");
        let i = args.iter().position(|a| *a == flag).unwrap();
        args[i + 1] = value;
        let r = w.run(&args);
        assert_eq!(r.code, 2, "{flag} {value}: {}", r.stderr);
        assert!(!w.path("out").exists());
    }
    assert_eq!(w.pseudonymise("NGO01", &[], &["nothing.csv"]).code, 2);
    assert_eq!(w.pseudonymise("NGO01", &[], &["old.xls"]).code, 2);
}

#[test]
fn check_refuses_truncated_foreign_and_wrong_key_drops() {
    let w = World::new();
    w.key();
    w.write("in.csv", csv(&[person_a("A1")]));
    w.pseudonymise("NGO01", &[], &["in.csv"]).ok();
    let good = std::fs::read(w.path("out/screening_NGO01_2018-03.parquet")).unwrap();
    w.write("truncated.parquet", &good[..good.len() / 2]);
    w.write("text.parquet", "hello");
    w.run(&["keygen", "--out", "other"]).ok();
    let r = w.run(&[
        "check",
        "out/screening_NGO01_2018-03.parquet",
        "truncated.parquet",
        "text.parquet",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("ok  out/screening_NGO01_2018-03.parquet"));
    assert!(
        r.stdout
            .contains("BAD truncated.parquet: not a readable Parquet file"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("BAD text.parquet"));
    let r = w.run(&[
        "check",
        "--key",
        "other",
        "out/screening_NGO01_2018-03.parquet",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("pseudonymise again"), "{}", r.stdout);
}

#[test]
fn check_refuses_a_parquet_file_with_an_identity_column() {
    use arrow_array::{RecordBatch, StringArray};
    use std::sync::Arc;
    let w = World::new();
    w.key();
    w.write("in.csv", csv(&[person_a("A1")]));
    w.pseudonymise("NGO01", &[], &["in.csv"]).ok();
    // Same metadata, plus a given_name column.
    rewrite_drop(
        &w.path("out/screening_NGO01_2018-03.parquet"),
        &w.path("evil.parquet"),
        |_| {},
        |b| {
            let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(arrow_schema::Field::new(
                "given_name",
                arrow_schema::DataType::Utf8,
                true,
            )));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(StringArray::from(vec!["x"; b.num_rows()])));
            RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap()
        },
    );
    let r = w.run(&["check", "evil.parquet"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("identity column given_name"),
        "{}",
        r.stdout
    );
}
