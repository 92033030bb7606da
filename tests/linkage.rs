//! Fuzzy linkage end to end: two NGOs' files in which some people were
//! typed with a one-letter typo and no passport, through pseudonymise,
//! ingest, `link` and `report`. Every name here is made up by code.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow_array::{Array, Float64Array, Int64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{World, screening_header, screening_row};

/// The rows of NGO01 and NGO02 (CSV lines) and, per row, the generated
/// person it is (`None` for NGO02's one invalid row).
struct Files {
    ngo1: Vec<(String, Option<u32>)>,
    ngo2: Vec<(String, Option<u32>)>,
    /// People typed with a typo and no passport by NGO02.
    typo_people: BTreeSet<u32>,
    /// People of both files linked by their passport.
    passport_people: BTreeSet<u32>,
}

/// Where NGO02's invalid row sits (0 = first data row).
const BAD_ROW: usize = 5;

fn files() -> Files {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let syll = [
        "ka", "ri", "na", "to", "su", "me", "lo", "wi", "an", "di", "ra", "ti", "bu", "go", "he",
        "ju", "pe", "so", "ve", "ze",
    ];
    let word = |rng: &mut ChaCha8Rng| -> String {
        (0..3)
            .map(|_| syll[rng.random_range(0..syll.len())])
            .collect()
    };
    let typo = |w: &str| -> String {
        let mut c: Vec<char> = w.chars().collect();
        c[3] = if c[3] == 'x' { 'y' } else { 'x' };
        c.into_iter().collect()
    };
    let mut f = Files {
        ngo1: Vec::new(),
        ngo2: Vec::new(),
        typo_people: BTreeSet::new(),
        passport_people: BTreeSet::new(),
    };
    let mut case = 0;
    let mut line = |family: &str, given: &str, dob: &str, passport: &str| {
        case += 1;
        screening_row(&[
            ("case_ref", &format!("C{case}")),
            ("screening_date", "2018-03-10"),
            ("family_name", family),
            ("given_name", given),
            ("date_of_birth", dob),
            ("sex", "female"),
            ("nationality", "Indonesia"),
            ("passport_number", passport),
        ])
    };
    for who in 0..380u32 {
        let (fam, giv) = (word(&mut rng), word(&mut rng));
        let dob = format!(
            "{}-{:02}-{:02}",
            rng.random_range(1965..2000),
            rng.random_range(1..13),
            rng.random_range(1..29)
        );
        let pp = format!("B{}", rng.random_range(1_000_000..9_999_999));
        match who {
            // In both, same passport; every third with a typo in NGO02.
            0..60 => {
                f.ngo1.push((line(&fam, &giv, &dob, &pp), Some(who)));
                let fam2 = if who % 3 == 0 { typo(&fam) } else { fam };
                f.ngo2.push((line(&fam2, &giv, &dob, &pp), Some(who)));
                f.passport_people.insert(who);
            }
            // In both; NGO02 typed the family name wrong and had no passport.
            60..75 => {
                f.ngo1.push((line(&fam, &giv, &dob, &pp), Some(who)));
                f.ngo2.push((line(&typo(&fam), &giv, &dob, ""), Some(who)));
                f.typo_people.insert(who);
            }
            75..230 => f.ngo1.push((line(&fam, &giv, &dob, &pp), Some(who))),
            _ => f.ngo2.push((line(&fam, &giv, &dob, &pp), Some(who))),
        }
    }
    // Shuffle the files' rows, then put an invalid row into NGO02.
    for rows in [&mut f.ngo1, &mut f.ngo2] {
        for i in (1..rows.len()).rev() {
            let j = rng.random_range(0..=i);
            rows.swap(i, j);
        }
    }
    let bad = screening_row(&[("case_ref", "BAD"), ("sex", "q")]);
    f.ngo2.insert(BAD_ROW, (bad, None));
    f
}

/// A store with both NGOs' drops of 2018-03.
fn world(f: &Files) -> World {
    let w = World::new();
    // A fixed key: which typo pairs reach the threshold depends on the
    // name filters' flips, which come from the key.
    w.fixed_key(29);
    for (org, rows) in [("NGO01", &f.ngo1), ("NGO02", &f.ngo2)] {
        let mut text = screening_header() + "\n";
        for (line, _) in rows {
            text += line;
            text += "\n";
        }
        let name = format!("{org}.csv");
        w.write(&name, text);
        w.pseudonymise(org, &["--allow-rejects"], &[&name]).ok();
    }
    w.run(&["store", "init", "store"]).ok();
    w.run(&["ingest", "--store", "store", "out"]).ok();
    w
}

struct Traced {
    org: String,
    row: i64,
    person: i64,
    link: String,
    score: Option<f64>,
}

fn read_trace(path: &std::path::Path) -> Vec<Traced> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let s = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let i = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let (form, org, link, row, person) = (
            s("form"),
            s("org"),
            s("link"),
            i("drop_row"),
            i("person_id"),
        );
        let score = b
            .column_by_name("score")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        for k in 0..b.num_rows() {
            assert_eq!(form.value(k), "screening");
            out.push(Traced {
                org: org.value(k).to_string(),
                row: row.value(k),
                person: person.value(k),
                link: link.value(k).to_string(),
                score: score.is_valid(k).then(|| score.value(k)),
            });
        }
    }
    out
}

/// `link --out` gives one row per record whose drop row leads back to the
/// NGO's input row (rejected rows left out), and links into one person
/// exactly the records of one generated person: by passport where they
/// share one, by score where NGO02 typed a typo and no passport. `--stats`
/// agrees with the file. The report counts the same persons and its
/// manifest carries the fitted model.
#[test]
fn link_traces_rows_to_input_and_fuzzy_links_join_typo_pairs_only() {
    let f = files();
    let w = world(&f);
    let run = w.run(&[
        "link",
        "--store",
        "store",
        "--from",
        "2018-03",
        "--to",
        "2018-03",
        "--out",
        "link.parquet",
        "--stats",
    ]);
    run.ok();
    let traced = read_trace(&w.path("link.parquet"));
    let valid = |rows: &Vec<(String, Option<u32>)>| rows.iter().filter(|r| r.1.is_some()).count();
    assert_eq!(traced.len(), valid(&f.ngo1) + valid(&f.ngo2));
    // Its progress spinner is drawn only on a terminal: a pipe gets the
    // command's one line.
    assert_eq!(
        run.stderr.trim(),
        format!("{} records traced in link.parquet", traced.len())
    );
    // The drop's rows are the input's rows, the rejected one left out.
    let who = |t: &Traced| -> u32 {
        let (rows, row) = match t.org.as_str() {
            "NGO01" => (&f.ngo1, t.row as usize),
            _ => (
                &f.ngo2,
                t.row as usize + usize::from(t.row as usize >= BAD_ROW),
            ),
        };
        rows[row].1.expect("a valid row")
    };
    let mut persons: BTreeMap<i64, BTreeSet<u32>> = BTreeMap::new();
    let mut people: BTreeMap<u32, BTreeSet<i64>> = BTreeMap::new();
    // The typo people whose two records a score linked. One letter of two
    // six-letter words gives a name Dice of about 0.86, at the model's
    // 0.85 cut: the flips' noise puts some pairs below it, where a name
    // and a birth date do not reach the threshold.
    let linked_typo: BTreeSet<u32> = traced
        .iter()
        .filter(|t| t.link == "fuzzy")
        .map(who)
        .collect();
    assert!(
        linked_typo.len() * 3 >= f.typo_people.len() * 2,
        "{} of {} typo pairs linked",
        linked_typo.len(),
        f.typo_people.len()
    );
    for t in &traced {
        persons.entry(t.person).or_default().insert(who(t));
        people.entry(who(t)).or_default().insert(t.person);
        match t.link.as_str() {
            "fuzzy" => {
                assert!(f.typo_people.contains(&who(t)));
                assert!(t.score.is_some_and(|s| s > 0.0));
            }
            "exact" => assert!(f.passport_people.contains(&who(t))),
            other => {
                assert_eq!(other, "alone");
                assert!(!linked_typo.contains(&who(t)) && !f.passport_people.contains(&who(t)));
            }
        }
    }
    assert!(
        persons.values().all(|p| p.len() == 1),
        "a person joins records of different people"
    );
    assert!(
        people
            .iter()
            .all(|(w, p)| p.len() == 1 || (f.typo_people.contains(w) && !linked_typo.contains(w))),
        "a generated person is split"
    );
    let n_fuzzy = traced.iter().filter(|t| t.link == "fuzzy").count();
    assert_eq!(n_fuzzy, 2 * linked_typo.len());

    // --stats agrees with the file.
    let stdout = &run.stdout;
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "screening: {} records, {} persons",
            traced.len(),
            persons.len()
        )
    );
    let mut by_size: HashMap<u64, u64> = HashMap::new();
    for p in persons.keys() {
        let n = traced.iter().filter(|t| t.person == *p).count() as u64;
        *by_size.entry(n).or_default() += 1;
    }
    for (size, n) in &by_size {
        assert!(
            stdout.contains(&format!("{size:>4} records: {n:>8} persons")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "links: {} exact, {} fuzzy",
            f.passport_people.len(),
            linked_typo.len()
        )),
        "{stdout}"
    );

    // The report counts the same persons; its manifest has the model.
    w.run(&[
        "report", "--store", "store", "--from", "2018-03", "--to", "2018-03", "--out", "rep",
    ])
    .ok();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("rep/manifest.json")).unwrap())
            .unwrap();
    let screening = &manifest["linkage"]["screening"];
    assert_eq!(screening["persons"], persons.len() as u64);
    let fuzzy = &screening["fuzzy"];
    assert_eq!(fuzzy["linked"], true);
    assert_eq!(fuzzy["fuzzy_links"], linked_typo.len() as u64);
    let model = &fuzzy["model"];
    assert_eq!(model["fitted"], true);
    assert!(model["threshold_weight"].as_f64().unwrap() > 0.0);
    assert_eq!(model["min_posterior"], 0.99);
    assert!(model["prior_log2_odds"].as_f64().unwrap() < 0.0);
    for field in ["name", "date_of_birth", "passport", "nationality", "sex"] {
        let levels = model["fields"][field].as_array().unwrap();
        assert!(levels.len() >= 2, "{field}");
        for l in levels {
            for k in ["m", "u", "weight"] {
                assert!(l[k].as_f64().is_some(), "{field} {k}");
            }
        }
        // Agreeing at the top level on an identifying field is evidence
        // for a match (everyone here shares nationality and sex).
        if ["name", "date_of_birth", "passport"].contains(&field) {
            assert!(levels[0]["weight"].as_f64().unwrap() > 3.0, "{field}");
        }
    }
    assert_eq!(
        model["m_source"]["name"],
        "pairs linked by the passport key"
    );

    // Exact keys alone (fuzzy_linkage = false): the typo pairs stay two
    // persons each, and no model is fitted.
    w.write("exact.toml", "fuzzy_linkage = false\n");
    w.run(&[
        "report",
        "--store",
        "store",
        "--from",
        "2018-03",
        "--to",
        "2018-03",
        "--out",
        "rep2",
        "--config",
        "exact.toml",
    ])
    .ok();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("rep2/manifest.json")).unwrap())
            .unwrap();
    let screening = &manifest["linkage"]["screening"];
    assert_eq!(
        screening["persons"],
        (persons.len() + linked_typo.len()) as u64
    );
    assert!(screening.get("fuzzy").is_none());
}

/// Flags are checked before anything is read or written.
#[test]
fn link_needs_an_output_or_stats_and_never_overwrites_unasked() {
    let w = World::new();
    let r = w.run(&[
        "link", "--store", "nowhere", "--from", "2018-03", "--to", "2018-03",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    w.write("taken.parquet", "x");
    let r = w.run(&[
        "link",
        "--store",
        "nowhere",
        "--from",
        "2018-03",
        "--to",
        "2018-03",
        "--out",
        "taken.parquet",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(std::fs::read(w.path("taken.parquet")).unwrap(), b"x");
}

/// Fuzzy linkage over more records than its filter budget holds compares
/// the records range against range, reading each range from the drops
/// again: it must find exactly what one pass over every record finds.
#[test]
fn fuzzy_linkage_range_by_range_finds_what_one_pass_finds() {
    use safetally::pseudonymise::Period;
    use safetally::report::fuzzy::{FILTER_BYTES, Params};
    let f = files();
    let w = world(&f);
    let store = safetally::store::Store::open(&w.path("store")).unwrap();
    let month: Period = "2018-03".parse().unwrap();
    let link = |filter_budget: usize| {
        let params = Params {
            filter_budget,
            ..Params::default()
        };
        safetally::report::link_window(&store, month, month, true, &params).unwrap()
    };
    let one = link(Params::default().filter_budget);
    let ranged = link(40 * FILTER_BYTES);
    let screening = &one[0];
    let records = screening.trace.person.len();
    // The budget holds 40 records' filters, two ranges at a time: the
    // form's records do not fit, so they were read range by range.
    assert!(records > 40, "{records} records");
    let fuzzy = screening.stats.fuzzy.as_ref().unwrap();
    assert!(fuzzy.fuzzy_links > 0 && fuzzy.candidate_pairs > 0);
    for (a, b) in one.iter().zip(&ranged) {
        assert_eq!(a.trace.person, b.trace.person);
        assert_eq!(a.trace.exact, b.trace.exact);
        assert_eq!(a.trace.fuzzy_weights, b.trace.fuzzy_weights);
        let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.trace.score), bits(&b.trace.score));
        assert_eq!(
            serde_json::to_value(&a.stats).unwrap(),
            serde_json::to_value(&b.stats).unwrap()
        );
    }
}
