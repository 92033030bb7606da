#!/usr/bin/env python3
"""DuckDB peer of `safetally report` for the benchmark suite
(benches/suite.rs): what a secretariat analyst would write in SQL to get
the report's person counts from the same store.

It reads the store's ledger (ledger.jsonl) to find the current drop of
each form, organisation and month in the window (the newest by the NGO's
`created` time, ties to the later filing, as safetally does), reads those
Parquet files with DuckDB, and links records into persons the way an
analyst would in SQL: every record starts with its own row number as its
label; each round, every record takes the smallest label among the
records sharing its passport key or its name key; rounds repeat until no
label changes (iterated minimum-label propagation). A person is a label.

Counts, per form (as the report's tables and summary.json):
  screening: records, persons, persons identified (any record says so),
             persons by the number of organisations that screened them
             ("1", "2", "3 or more": the table screened_by_number_of_ngos),
             persons by the month of their first screening
             (screened_by_first_month);
  self_assessment: records, respondents (persons).

Usage: peer_duckdb.py STORE_DIR FROM TO [THREADS]   (months as YYYY-MM)
Prints one JSON line with "seconds", "rounds" and the counts. Exits 3 with
"not installed: pip install duckdb" when DuckDB is missing.
"""

import json
import os
import sys
import time


def current_drops(store, first, last):
    """{form: [path, ...]}: the current drop of every slot in the window."""
    filed = {}
    with open(os.path.join(store, "ledger.jsonl"), encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a torn last line was never complete
            e = json.loads(line)
            if e.get("outcome") not in ("accepted", "superseded"):
                continue
            sha = e.get("sha256")
            if not sha or sha in filed or not e.get("path"):
                continue
            filed[sha] = e
    current = {}
    for e in filed.values():
        slot = (e["form"], e["period"], e["org"])
        if not first <= e["period"] <= last:
            continue
        old = current.get(slot)
        if old is None or (e.get("created", ""), e["seq"]) > (
            old.get("created", ""),
            old["seq"],
        ):
            current[slot] = e
    out = {}
    for (form, _period, org), e in sorted(current.items()):
        out.setdefault(form, []).append((os.path.join(store, e["path"]), org))
    return out


def load(con, name, drops, screening):
    """Table NAME(id, k1, k2, org, month[, identified]) of the drops' records."""
    con.execute("CREATE TEMP TABLE files(path VARCHAR, org VARCHAR)")
    con.executemany("INSERT INTO files VALUES (?, ?)", drops)
    paths = [p for p, _ in drops]
    extra = ", outcome = 'identified' AS identified" if screening else ""
    con.execute(
        f"""
        CREATE TEMP TABLE {name} AS
        SELECT row_number() OVER () AS id,
               key_passport AS k1, key_name_dob AS k2,
               f.org AS org, event_month AS month{extra}
        FROM read_parquet(?, filename = true) r
        JOIN files f ON f.path = r.filename
        """,
        [paths],
    )
    con.execute("DROP TABLE files")


def link(con, name):
    """Table NAME_label(id, label) by minimum-label propagation; returns
    the number of rounds."""
    con.execute(f"CREATE TEMP TABLE {name}_label AS SELECT id, id AS label FROM {name}")
    rounds = 0
    while True:
        rounds += 1
        con.execute(
            f"""
            CREATE TEMP TABLE {name}_next AS
            WITH l AS (SELECT r.id, r.k1, r.k2, l.label
                       FROM {name} r JOIN {name}_label l USING (id)),
                 m1 AS (SELECT k1, min(label) AS m FROM l WHERE k1 IS NOT NULL GROUP BY k1),
                 m2 AS (SELECT k2, min(label) AS m FROM l WHERE k2 IS NOT NULL GROUP BY k2)
            SELECT l.id, least(l.label, coalesce(m1.m, l.label), coalesce(m2.m, l.label)) AS label
            FROM l LEFT JOIN m1 USING (k1) LEFT JOIN m2 USING (k2)
            """
        )
        changed = con.execute(
            f"""SELECT count(*) FROM {name}_next n JOIN {name}_label o USING (id)
                WHERE n.label <> o.label"""
        ).fetchone()[0]
        con.execute(f"DROP TABLE {name}_label")
        con.execute(f"ALTER TABLE {name}_next RENAME TO {name}_label")
        if changed == 0:
            return rounds


def main():
    try:
        import duckdb
    except ImportError:
        print("not installed: pip install duckdb", file=sys.stderr)
        sys.exit(3)
    store, first, last = sys.argv[1:4]
    start = time.perf_counter()
    con = duckdb.connect()
    if len(sys.argv) > 4:
        con.execute(f"SET threads = {int(sys.argv[4])}")
    con.execute("SET preserve_insertion_order = false")
    drops = current_drops(store, first, last)
    out = {"rounds": {}}
    s = drops.get("screening", [])
    if s:
        load(con, "s", s, True)
        out["rounds"]["screening"] = link(con, "s")
        con.execute(
            """CREATE TEMP TABLE sp AS
               SELECT label, bool_or(identified) AS identified,
                      count(DISTINCT org) AS orgs, min(month) AS first_month
               FROM s JOIN s_label USING (id) GROUP BY label"""
        )
        records = con.execute("SELECT count(*) FROM s").fetchone()[0]
        persons, identified = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE identified) FROM sp"
        ).fetchone()
        by_ngos = dict(
            con.execute(
                """SELECT CASE WHEN orgs >= 3 THEN '3 or more' ELSE CAST(orgs AS VARCHAR) END,
                          count(*) FROM sp GROUP BY 1"""
            ).fetchall()
        )
        by_month = dict(
            con.execute("SELECT first_month, count(*) FROM sp GROUP BY 1").fetchall()
        )
        out["screening"] = {
            "records": records,
            "persons": persons,
            "identified": identified,
            "by_number_of_ngos": dict(sorted(by_ngos.items())),
            "by_first_month": dict(sorted(by_month.items())),
        }
    a = drops.get("self_assessment", [])
    if a:
        load(con, "a", a, False)
        out["rounds"]["self_assessment"] = link(con, "a")
        records = con.execute("SELECT count(*) FROM a").fetchone()[0]
        persons = con.execute("SELECT count(DISTINCT label) FROM a_label").fetchone()[0]
        out["self_assessment"] = {"records": records, "persons": persons}
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
