"""Peer of benches/linkage.rs: anonlink on clkhash Bloom-filter encodings
(CLKs) of the same normalised fields safetally encodes.

Usage: peer_anonlink.py INPUT.csv OUTPUT.json

INPUT has columns side (0 or 1), row, name (normalised tokens), dob
(YYYY-MM-DD, YYYY or blank), passport (normalised), nationality, sex.
Each record becomes a 1024-bit CLK under one secret (name bigrams,
positional digits of the date of birth, passport bigrams, nationality and
sex). anonlink finds the candidate pairs of the two sides with a Dice
coefficient of at least the lowest threshold, then, for each threshold,
greedy one-to-one matching keeps the best pairs. OUTPUT lists, per
threshold, the pairs found as [row on side 0, row on side 1].

Exits 3 when anonlink or clkhash is not installed. Prints no value.
"""

import array
import csv
import json
import sys

try:
    import numpy as np
    import anonlink
    from clkhash import clk
    from clkhash.schema import from_json_dict
except ImportError:
    sys.exit(3)


def feature(name, n, bits, positional=False):
    return {
        "identifier": name,
        "format": {"type": "string", "encoding": "utf-8"},
        "hashing": {
            "comparison": {"type": "ngram", "n": n, "positional": positional},
            "strategy": {"bitsPerToken": bits},
            "hash": {"type": "doubleHash"},
        },
        "missingValue": {"sentinel": "", "replaceWith": ""},
    }


SCHEMA = {
    "version": 3,
    "clkConfig": {
        "l": 1024,
        "kdf": {
            "type": "HKDF",
            "hash": "SHA256",
            "salt": "c2FmZXRhbGx5LWJlbmNo",
            "info": "c2FmZXRhbGx5",
            "keySize": 64,
        },
    },
    "features": [
        feature("name", 2, 20),
        # Digits of YYYYMMDD by position: a year typo or a swap keeps most.
        feature("dob", 1, 20, positional=True),
        feature("passport", 2, 15),
        feature("nationality", 1, 10),
        feature("sex", 1, 10),
    ],
}

THRESHOLDS = [round(0.7 + 0.02 * i, 3) for i in range(14)]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    sides = ([], [])
    rows = ([], [])
    with open(src, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            s = int(r["side"])
            sides[s].append(
                [r["name"], r["dob"].replace("-", ""), r["passport"], r["nationality"], r["sex"]]
            )
            rows[s].append(int(r["row"]))
    schema = from_json_dict(SCHEMA)
    secret = "safetally-bench-secret"
    clks = [clk.generate_clks(s, schema, secret, validate=False) for s in sides]
    candidates = anonlink.candidate_generation.find_candidate_pairs(
        clks,
        anonlink.similarities.dice_coefficient_accelerated,
        min(THRESHOLDS),
        k=10,
    )
    sims, (dset0, dset1), (rec0, rec1) = candidates
    sims = np.frombuffer(sims, dtype=np.float64)
    cols = [np.frombuffer(a, dtype=np.uint32) for a in (dset0, dset1, rec0, rec1)]
    out = []
    for t in THRESHOLDS:
        keep = sims >= t
        d0, d1, r0, r1 = (array.array("I", c[keep].tobytes()) for c in cols)
        sub = (array.array("d", sims[keep].tobytes()), (d0, d1), (r0, r1))
        groups = anonlink.solving.greedy_solve(sub)
        pairs = []
        for g in groups:
            if len(g) != 2:
                continue
            (da, ra), (db, rb) = sorted(g)
            if da == 0 and db == 1:
                pairs.append([rows[0][ra], rows[1][rb]])
        out.append({"threshold": t, "pairs": pairs})
    with open(dst, "w", encoding="utf-8") as f:
        json.dump({"thresholds": out}, f)


if __name__ == "__main__":
    main()
