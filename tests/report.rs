//! The report through the binary: linkage end to end on real keys, tables
//! with margins and suppression, queries as files, determinism, and a
//! snapshot of report.md on a small fixed store.

use std::collections::BTreeMap;
use std::path::Path;

use safetally::schema::Form;

use crate::util::{Fleet, ledger, tree};

type Row = Vec<(String, String)>;

fn row(pairs: &[(&str, &str)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A screening row of a person.
fn screened(case: &str, date: &str, person: &[(&str, &str)], outcome: &str) -> Row {
    let mut r = row(&[
        ("case_ref", case),
        ("screening_date", date),
        ("outcome", outcome),
    ]);
    r.extend(row(person));
    r
}

/// A table's CSV as rows of (labels joined by '/', count, flag, percent).
fn table(dir: &Path, name: &str) -> BTreeMap<String, (String, String, String)> {
    let text = std::fs::read_to_string(dir.join(format!("tables/{name}.csv"))).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let count_at = headers.iter().position(|h| h == "count").unwrap();
    let mut out = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let labels: Vec<&str> = (0..count_at).map(|i| &rec[i]).collect();
        out.insert(
            labels.join("/"),
            (
                rec[count_at].to_string(),
                rec[count_at + 1].to_string(),
                rec.get(count_at + 2).unwrap_or("").to_string(),
            ),
        );
    }
    out
}

fn count(t: &BTreeMap<String, (String, String, String)>, key: &str) -> String {
    t.get(key)
        .unwrap_or_else(|| panic!("no row {key} in {t:?}"))
        .0
        .clone()
}

/// The people of the linkage tests, one store.
fn linkage_store() -> Fleet {
    let f = Fleet::new();
    let ana = [
        ("family_name", "Santos"),
        ("given_name", "Ana Maria"),
        ("date_of_birth", "1990-02-03"),
        ("nationality", "PHL"),
    ];
    // A chain: NGO01 has only the passport, NGO02 passport and name,
    // NGO03 only the name (written differently): one person, three NGOs.
    let chain_01 = [("passport_number", "P1111111"), ("nationality", "PHL")];
    let mut chain_02 = ana.to_vec();
    chain_02.push(("passport_number", "p111-1111"));
    let chain_03 = [
        ("family_name", "ANA MARIA"),
        ("given_name", "santos"),
        ("date_of_birth", "03/02/1990"),
    ];
    // The same passport number from two countries: two people.
    let idn = [("passport_number", "X7777777"), ("nationality", "IDN")];
    let vnm = [("passport_number", "X7777777"), ("nationality", "VNM")];
    // The same name with other birth dates: two people.
    let budi_a = [
        ("family_name", "Budi"),
        ("given_name", "Santoso"),
        ("date_of_birth", "1985-01-01"),
    ];
    let budi_b = [
        ("family_name", "Budi"),
        ("given_name", "Santoso"),
        ("date_of_birth", "1986-01-01"),
    ];
    // Conflicting outcomes: identified once, not identified later.
    let siti = [
        ("family_name", "Siti"),
        ("given_name", "Aminah"),
        ("date_of_birth", "1995-07-07"),
        ("sex", "f"),
    ];
    f.drop_of(
        Form::Screening,
        "NGO01",
        "2018-01",
        "l",
        &[
            screened("A1", "2018-01-10", &chain_01, "pending"),
            screened("A2", "2018-01-11", &idn, "pending"),
            screened("A3", "2018-01-12", &budi_a, "not_identified"),
            screened("A4", "2018-01-13", &siti, "identified"),
            // Anonymous: no key; each counts once.
            screened("A5", "2018-01-14", &[("sex", "m")], "pending"),
            screened("A6", "2018-01-15", &[("sex", "m")], "pending"),
        ],
    );
    f.drop_of(
        Form::Screening,
        "NGO02",
        "2018-02",
        "l",
        &[
            screened("B1", "2018-02-01", &chain_02, "not_identified"),
            screened("B2", "2018-02-02", &vnm, "pending"),
            screened("B3", "2018-02-03", &budi_b, "not_identified"),
            screened("B4", "2018-02-04", &siti, "not_identified"),
        ],
    );
    f.drop_of(
        Form::Screening,
        "NGO03",
        "2018-03",
        "l",
        &[screened("C1", "2018-03-01", &chain_03, "identified")],
    );
    // Self-assessments: two anonymous, one person answering twice.
    let answer = |r: &str, date: &str, who: &[(&str, &str)], fear: &str| {
        let mut x = row(&[
            ("response_ref", r),
            ("response_date", date),
            ("fear_of_consequences", fear),
            ("nationality", "IDN"),
        ]);
        x.extend(row(who));
        x
    };
    let dewi = [
        ("family_name", "Dewi"),
        ("given_name", "Lestari"),
        ("date_of_birth", "1992-04-04"),
    ];
    f.drop_of(
        Form::SelfAssessment,
        "NGO01",
        "2018-01",
        "l",
        &[
            answer("S1", "2018-01-20", &[], "yes"),
            answer("S2", "2018-01-21", &[], "no"),
            answer("S3", "2018-01-22", &dewi, "yes"),
        ],
    );
    f.drop_of(
        Form::SelfAssessment,
        "NGO02",
        "2018-02",
        "l",
        &[answer("T1", "2018-02-20", &dewi, "yes")],
    );
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", "made/l"]).ok();
    f
}

fn report(f: &Fleet, out: &str, extra: &[&str]) -> crate::util::Run {
    let mut args = vec![
        "report", "--store", "store", "--from", "2018-01", "--to", "2018-03", "--out", out,
    ];
    args.extend(extra);
    f.w.run(&args)
}

/// A config that publishes every count, to see the linkage itself.
fn no_suppression(f: &Fleet) {
    f.w.write("open.toml", "min_count = 1\nmin_denominator = 1\n");
}

#[test]
fn linkage_joins_chains_across_ngos_and_keeps_apart_what_differs() {
    let f = linkage_store();
    no_suppression(&f);
    report(&f, "r", &["--config", "open.toml"]).ok();
    let r = f.w.path("r");
    let funnel = table(&r, "screening_funnel");
    // 11 records: the chain (3) is one person, Siti (2) one, the two X7777777
    // two, the two Budi two, two anonymous: 8 persons.
    assert_eq!(count(&funnel, "Total"), "8");
    // Identified: Siti (identified, then not) and the chain (identified last).
    assert_eq!(count(&funnel, "identified"), "2");
    assert_eq!(count(&funnel, "not_identified"), "2", "the two Budis");
    assert_eq!(count(&funnel, "pending"), "4");
    let ngos = table(&r, "screened_by_number_of_ngos");
    assert_eq!(count(&ngos, "3 or more"), "1", "the chain");
    assert_eq!(count(&ngos, "2"), "1", "Siti");
    assert_eq!(count(&ngos, "1"), "6");
    let first = table(&r, "screened_by_first_month");
    assert_eq!(count(&first, "2018-01"), "6");
    assert_eq!(count(&first, "2018-02"), "2");
    assert_eq!(count(&first, "2018-03"), "0", "zero cells are published");
    let fear = table(&r, "self_assessment_fear_of_consequences");
    // Two anonymous respondents, Dewi once: 3 respondents, 2 afraid.
    assert_eq!(count(&fear, "IDN/Total"), "3");
    assert_eq!(count(&fear, "IDN/yes"), "2");
    assert_eq!(fear["IDN/yes"].2, "66.7");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["screening"]["persons"], 8);
    assert_eq!(summary["screening"]["records"], 11);
    assert_eq!(summary["screening"]["organisations"], 3);
    assert_eq!(summary["screening"]["identified"], 2);
    assert_eq!(summary["screening"]["identified_pct"], 25.0);
    assert_eq!(summary["self_assessment"]["respondents"], 3);
    assert_eq!(
        summary["self_assessment"]["fear_of_consequences_pct"]["IDN"],
        66.7
    );
}

#[test]
fn small_counts_and_the_totals_that_would_narrow_them_down_are_suppressed() {
    let f = linkage_store();
    let run = report(&f, "r", &[]);
    run.ok();
    let r = f.w.path("r");
    let funnel = table(&r, "screening_funnel");
    // 2 identified, 4 pending, 2 not identified: all small. With the total
    // 8 published, and the 2 identified split by sex into two suppressed
    // cells of at least 1 each, a reader would know 2 <= identified <= 6:
    // narrower than the protection (5). So the total goes too.
    for outcome in ["identified", "pending", "not_identified", "Total"] {
        assert_eq!(
            funnel[outcome],
            ("".into(), "suppressed".into(), "".into()),
            "{outcome}"
        );
    }
    // Zeros are published; a cell that is alone in its line with a
    // published margin is never left suppressed.
    let first = table(&r, "screened_by_first_month");
    assert_eq!(first["2018-03"].0, "0");
    assert_eq!(first["2018-01"].1, "suppressed", "6, hidden to protect 2");
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    assert!(md.contains("| Identified | x |"), "{md}");
    assert!(
        !md.contains("<5"),
        "one mark for small and protecting cells"
    );
    // The headline does not reveal a suppressed count.
    assert!(
        run.stdout.contains(
            "The number of potential victims who underwent preliminary screening is withheld \
             to protect small groups."
        ),
        "{}",
        run.stdout
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("summary.json")).unwrap()).unwrap();
    assert!(summary["screening"]["persons"].is_null());
    assert!(summary["screening"]["identified"].is_null());
    assert!(summary["self_assessment"]["respondents"].is_null());

    // With min_count 2 and protection 1, the identified are one female
    // and one of unknown sex (1 and 1, both small): publishing their total
    // 2 would pin both at 1. So it is withheld (though not small), and in
    // the funnel the smallest other count (2 not identified) with it; the
    // 4 pending and the total 8 are published.
    f.w.write("two.toml", "min_count = 2\nprotection = 1\n");
    report(&f, "r2", &["--config", "two.toml"]).ok();
    let funnel = table(&f.w.path("r2"), "screening_funnel");
    assert_eq!(funnel["Total"], ("8".into(), "".into(), "".into()));
    assert_eq!(funnel["pending"].0, "4");
    assert_eq!(funnel["identified"].1, "suppressed");
    assert_eq!(funnel["not_identified"].1, "suppressed");
    let by_sex = table(&f.w.path("r2"), "identified_by_sex");
    assert_eq!(by_sex["female"].1, "suppressed");
    assert_eq!(by_sex["unknown"].1, "suppressed");
    assert_eq!(by_sex["Total"].1, "suppressed");
    // Below 20 persons, no percentage.
    assert_eq!(funnel["pending"].2, "");
    let audit = f.w.run(&["audit", "r2"]);
    audit.ok();
    assert!(audit.stdout.ends_with("PASS\n"), "{}", audit.stdout);
}

#[test]
fn a_new_sql_file_is_a_new_table_and_a_bad_one_is_named() {
    let f = linkage_store();
    f.w.write(
        "extra/persons_by_sex.sql",
        "-- title: Persons screened, by sex\n-- dimensions: sex\n-- counts: distinct persons screened\n\
         SELECT sex, count(*) AS count FROM screening_persons GROUP BY sex\n",
    );
    f.w.write("cfg.toml", "min_count = 1\nqueries = \"extra\"\n");
    report(&f, "r", &["--config", "cfg.toml"]).ok();
    let t = table(&f.w.path("r"), "persons_by_sex");
    assert_eq!(count(&t, "female"), "1", "Siti");
    assert_eq!(count(&t, "male"), "2");
    assert_eq!(count(&t, "other"), "0");
    assert_eq!(count(&t, "Total"), "8");
    f.w.write(
        "extra/broken.sql",
        "-- title: Broken\n-- dimensions: sex\n-- counts: nothing\nSELECT sex FROM screening_persons\n",
    );
    let r = report(&f, "r2", &["--config", "cfg.toml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("broken.sql: returns the columns sex but its header promises sex, count"),
        "{}",
        r.stderr
    );
    assert!(!f.w.path("r2").exists(), "nothing is written");
}

#[test]
fn the_same_store_and_window_give_the_same_bytes_and_report_md_matches_its_snapshot() {
    let f = linkage_store();
    report(&f, "a", &[]).ok();
    report(&f, "b", &[]).ok();
    let a = f.w.path("a");
    let b = f.w.path("b");
    assert_eq!(tree(&a.join("tables")), tree(&b.join("tables")));
    for file in ["summary.json", "report.md", "report.html"] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["inputs"].as_array().unwrap().len(), 5);
    assert_eq!(manifest["parameters"]["min_count"], 5);
    // An existing report is not overwritten without --force.
    let r = report(&f, "a", &[]);
    assert_eq!(r.code, 2);
    report(&f, "a", &["--force"]).ok();

    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/report_small.md");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &md).unwrap();
    }
    let want = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/report_small.md (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(
        md, want,
        "report.md changed: review, then UPDATE_SNAPSHOTS=1"
    );
}

#[test]
fn a_window_spanning_two_keys_is_refused() {
    let f = Fleet::new();
    f.drop("NGO01", "2018-01", 1, "k");
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", "made/k"]).ok();
    let other = Fleet::new();
    let o = other.drop("NGO02", "2018-02", 1, "o");
    other.key.write_new(&f.w.path("new.key")).unwrap();
    f.w.run(&["store", "rotate", "store", "--key", "new.key"])
        .ok();
    f.w.run(&["ingest", "--store", "store", o.to_str().unwrap()])
        .ok();
    let r = report(&f, "r", &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot be linked across keys"),
        "{}",
        r.stderr
    );
    // Each epoch's months alone are fine.
    f.w.run(&[
        "report", "--store", "store", "--from", "2018-02", "--to", "2018-02", "--out", "r2",
    ])
    .ok();
}

#[test]
fn the_audit_reads_only_the_published_report_and_finds_what_a_published_total_gives_away() {
    let f = linkage_store();
    no_suppression(&f);
    report(&f, "open", &["--config", "open.toml"]).ok();
    let r = f.w.run(&["audit", "open"]);
    r.ok();
    assert!(r.stdout.contains("0 suppressed cells"), "{}", r.stdout);
    assert!(r.stdout.ends_with("PASS\n"), "{}", r.stdout);

    // The report as published passes (report refuses to write one that
    // does not).
    report(&f, "r", &[]).ok();
    let r = f.w.run(&["audit", "r"]);
    r.ok();
    assert!(r.stdout.ends_with("PASS\n"), "{}", r.stdout);
    // Put back the funnel's total (8), as primary suppression alone would
    // have left it: the identified persons are also split by sex into two
    // suppressed cells (female, unknown), each at least 1: so at least 2
    // are identified, and at most 8 - 1 - 1 = 6.
    let leaky = f.w.path("leaky");
    std::fs::create_dir_all(leaky.join("tables")).unwrap();
    for (rel, bytes) in tree(&f.w.path("r")) {
        let mut text = String::from_utf8(bytes).unwrap();
        if rel == "tables/screening_funnel.csv" {
            assert!(text.contains("\nTotal,,suppressed,\n"), "{text}");
            text = text.replace("\nTotal,,suppressed,\n", "\nTotal,8,,\n");
        }
        std::fs::write(leaky.join(rel), text).unwrap();
    }
    let r = f.w.run(&["audit", "leaky"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("FAIL ("), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("FAIL screening_funnel [identified]: 2 to 6"),
        "{}",
        r.stdout
    );
    // It needs only the folder: a copy elsewhere audits the same.
    let copy = f.w.path("copy");
    std::fs::create_dir_all(copy.join("tables")).unwrap();
    for (rel, bytes) in tree(&f.w.path("r")) {
        std::fs::write(copy.join(rel), bytes).unwrap();
    }
    assert_eq!(
        f.w.run(&["audit", "r"]).stdout,
        f.w.run(&["audit", "copy"]).stdout
    );
    let again = f.w.run(&["audit", "copy"]);
    assert_eq!(again.code, 0);
}

#[test]
fn report_html_has_a_chart_per_table_and_no_suppressed_count() {
    let f = linkage_store();
    report(&f, "r", &[]).ok();
    let r = f.w.path("r");
    let html = std::fs::read_to_string(r.join("report.html")).unwrap();
    let tables = std::fs::read_dir(r.join("tables")).unwrap().count();
    assert_eq!(html.matches("<svg class=\"chart\"").count(), tables);
    assert_eq!(html.matches("role=\"img\"").count(), tables);
    assert!(!html.contains("<script") && !html.contains("src=\"") && !html.contains("href=\""));
    // The funnel's cells are all suppressed (2, 2 and 4 persons): its chart
    // draws no bar and writes only the mark.
    let funnel = &html[html.find("id=\"chart-screening_funnel\"").unwrap()..];
    let funnel = &funnel[..funnel.find("</svg>").unwrap()];
    assert!(
        !funnel
            .lines()
            .any(|l| l.starts_with("<rect") && l.contains("fill=\"#1F5F99\"")),
        "{funnel}"
    );
    assert_eq!(funnel.matches(">\nx\n</text>").count(), 3, "{funnel}");
    assert!(!funnel.contains("(25.0%)") && !funnel.contains("(50.0%)"));
}

/// Screening rows for `n` distinct persons, with this outcome.
fn persons(tag: &str, period: &str, n: usize, outcome: &str) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let family = format!("{tag}{}", char::from(b'a' + i as u8));
            screened(
                &format!("{tag}{i}"),
                &format!("{period}-05"),
                &[
                    ("family_name", family.as_str()),
                    ("given_name", "Maria"),
                    ("date_of_birth", "1990-01-01"),
                ],
                outcome,
            )
        })
        .collect()
}

#[test]
fn a_monthly_release_then_a_year_to_date_one_reveals_no_small_difference() {
    let f = Fleet::new();
    let mut jan = persons("Jan", "2018-01", 20, "pending");
    jan.extend(persons("Kal", "2018-01", 10, "not_identified"));
    f.drop_of(Form::Screening, "NGO01", "2018-01", "j", &jan);
    f.drop_of(
        Form::Screening,
        "NGO02",
        "2018-02",
        "f",
        &persons("Feb", "2018-02", 3, "pending"),
    );
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", "made/j", "made/f"])
        .ok();
    let window = |from: &str, to: &str, out: &str| {
        f.w.run(&[
            "report", "--store", "store", "--from", from, "--to", to, "--out", out,
        ])
    };
    window("2018-01", "2018-01", "jan").ok();
    let funnel = table(&f.w.path("jan"), "screening_funnel");
    assert_eq!(funnel["Total"].0, "30");
    assert_eq!(funnel["pending"].0, "20");
    // January to February: 33 persons, 23 pending. Next to January's
    // release, either would tell that 3 persons were first screened in
    // February.
    window("2018-01", "2018-02", "ytd").ok();
    let ytd = f.w.path("ytd");
    let funnel = table(&ytd, "screening_funnel");
    assert_eq!(funnel["Total"].1, "suppressed", "{funnel:?}");
    assert_eq!(funnel["pending"].1, "suppressed", "{funnel:?}");
    assert_eq!(
        funnel["not_identified"].0, "10",
        "unchanged: nothing to hide"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ytd.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["release"]["earlier_releases_considered"][0],
        "2018-01..2018-01 (ledger entry 4)"
    );
    // The audit with the store's releases passes; put back the total and
    // it finds the difference, which the report alone does not show.
    let a = f.w.run(&["audit", "ytd", "--store", "store"]);
    a.ok();
    let leaky = f.w.path("leaky");
    std::fs::create_dir_all(leaky.join("tables")).unwrap();
    for (rel, bytes) in tree(&ytd) {
        let mut text = String::from_utf8(bytes).unwrap();
        if rel == "tables/screening_funnel.csv" {
            text = text.replace("\nTotal,,suppressed,", "\nTotal,33,,");
        }
        std::fs::write(leaky.join(rel), text).unwrap();
    }
    let a = f.w.run(&["audit", "leaky", "--store", "store"]);
    assert_eq!(a.code, 1, "{}", a.stdout);
    assert!(
        a.stdout.contains(
            "FAIL screening_funnel Total: published as 33, and as 30 in the release \
             2018-01..2018-01 (ledger entry 4): the difference, 3, is a small count"
        ),
        "{}",
        a.stdout
    );
    // A revised January (a late drop) is recorded as revising the first.
    f.drop_of(
        Form::Screening,
        "NGO03",
        "2018-01",
        "late",
        &persons("Late", "2018-01", 6, "not_identified"),
    );
    f.w.run(&["ingest", "--store", "store", "made/late"]).ok();
    window("2018-01", "2018-01", "jan2").ok();
    let ledger = ledger(&f.w.path("store"));
    let releases: Vec<&serde_json::Value> = ledger
        .iter()
        .filter(|e| e["outcome"] == "release")
        .collect();
    assert_eq!(releases.len(), 3);
    assert_eq!(releases[0]["window"], "2018-01..2018-01");
    assert_eq!(releases[2]["revises"], releases[0]["seq"]);
    assert!(releases[1].get("revises").is_none());
    f.w.run(&["store", "verify", "store"]).ok();
    // A release record is evidence: a changed one is found.
    let rec =
        f.w.path("store")
            .join(releases[0]["path"].as_str().unwrap());
    std::fs::write(&rec, "{}").unwrap();
    let v = f.w.run(&["store", "verify", "store"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
}

#[test]
fn rounding_to_base_5_is_applied_to_every_published_count_and_audited() {
    let f = Fleet::new();
    let mut jan = persons("Jan", "2018-01", 22, "pending");
    jan.extend(persons("Kal", "2018-01", 11, "not_identified"));
    f.drop_of(Form::Screening, "NGO01", "2018-01", "j", &jan);
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", "made/j"]).ok();
    f.w.write("round.toml", "rounding_base = 5\n");
    report(&f, "r", &["--config", "round.toml"]).ok();
    let r = f.w.path("r");
    let funnel = table(&r, "screening_funnel");
    // 22 -> 20, 11 -> 10, 33 -> 35: each on its own; the percentage is of
    // the rounded counts (20 of 35).
    assert_eq!(funnel["pending"], ("20".into(), "".into(), "57.1".into()));
    assert_eq!(funnel["not_identified"].0, "10");
    assert_eq!(funnel["Total"].0, "35");
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    assert!(md.contains("Counts are rounded to a multiple of 5"), "{md}");
    let a = f.w.run(&["audit", "r"]);
    a.ok();
    assert!(a.stdout.contains("0 suppressed cells"), "{}", a.stdout);
    f.w.write("bad.toml", "rounding_base = 1\n");
    let bad = report(&f, "r2", &["--config", "bad.toml"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("rounding_base must be at least 2"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_fuzzy_memory_budget_too_small_to_work_in_is_refused_before_anything_is_written() {
    let f = Fleet::new();
    let jan = persons("Jan", "2018-01", 22, "pending");
    f.drop_of(Form::Screening, "NGO01", "2018-01", "j", &jan);
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", "made/j"]).ok();
    f.w.write("small.toml", "fuzzy_memory_mib = 8\n");
    let bad = report(&f, "r", &["--config", "small.toml"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("fuzzy_memory_mib must be at least 16"),
        "{}",
        bad.stderr
    );
    assert!(!f.w.path("r").exists());
    // The smallest budget works (the records are compared range by range:
    // tests/linkage.rs shows the links are the same).
    f.w.write("least.toml", "fuzzy_memory_mib = 16\n");
    report(&f, "r", &["--config", "least.toml"]).ok();
    assert!(f.w.path("r").join("summary.json").exists());
}
