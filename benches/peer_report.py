#!/usr/bin/env python3
"""Peer for the report benchmark: the script a secretariat analyst might
write with pyarrow, numpy and scipy to get the report's headline figures
from the same store.

For each form: read the key columns (and the screening outcome) of every
drop of the window with pyarrow, take the first 128 bits of each key (as
safetally does), join records that share a passport key or a name key
(sort by key, equal neighbours are an edge), and count the connected
components (scipy.sparse.csgraph.connected_components): the persons. A
screened person is identified when any of their records says so.

It does less than `safetally report`: it follows the store's folder layout
instead of its ledger (the benchmark's store has one drop per slot, so the
two agree), resolves no attributes other than the outcome, and writes no
tables.

Usage: peer_report.py STORE_DIR FROM TO      (months as YYYY-MM)
Prints one JSON line: {"seconds": S, "screening": {"records": N,
"persons": N, "identified": N}, "self_assessment": {"records": N,
"persons": N}}.
"""

import glob
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def drops(store, form, first, last):
    pattern = os.path.join(
        store, "drops", f"form={form}", "period=*", "org=*", "*.parquet"
    )
    out = []
    for path in sorted(glob.glob(pattern)):
        period = path.split("period=")[1].split(os.sep)[0]
        if first <= period <= last:
            out.append(path)
    return out


def prefixes(column):
    """The first 128 bits of each key as two uint64 arrays, and validity."""
    hi, lo, valid = [], [], []
    for chunk in column.chunks:
        n = len(chunk)
        words = np.frombuffer(chunk.buffers()[1], dtype="<u8")
        words = words[chunk.offset * 4 : (chunk.offset + n) * 4].reshape(n, 4)
        hi.append(words[:, 0])
        lo.append(words[:, 1])
        valid.append(chunk.is_valid().to_numpy(zero_copy_only=False))
    if not hi:
        empty = np.zeros(0, dtype="<u8")
        return empty, empty, np.zeros(0, dtype=bool)
    return np.concatenate(hi), np.concatenate(lo), np.concatenate(valid)


def edges(hi, lo, valid):
    """Pairs of records that share a key: equal neighbours once sorted."""
    idx = np.flatnonzero(valid)
    h, l = hi[idx], lo[idx]
    order = np.lexsort((l, h))
    s, h, l = idx[order], h[order], l[order]
    same = (h[1:] == h[:-1]) & (l[1:] == l[:-1])
    return s[:-1][same], s[1:][same]


def persons(table):
    """Connected components of records joined by shared keys."""
    n = table.num_rows
    rows, cols = [], []
    for key in ("key_passport", "key_name_dob"):
        a, b = edges(*prefixes(table.column(key)))
        rows.append(a)
        cols.append(b)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)
    ).tocsr()
    return connected_components(graph, directed=False)


def read(files, columns, schema_of):
    if not files:
        return pa.table({c: pa.array([], schema_of(c)) for c in columns})
    return pq.read_table(files, columns=columns)


def main():
    store, first, last = sys.argv[1], sys.argv[2], sys.argv[3]
    start = time.perf_counter()
    key = pa.binary(32)
    out = {}
    for form in ("screening", "self_assessment"):
        columns = ["key_passport", "key_name_dob"]
        if form == "screening":
            columns.append("outcome")
        table = read(
            drops(store, form, first, last),
            columns,
            lambda c: pa.string() if c == "outcome" else key,
        )
        count, labels = persons(table)
        figures = {"records": table.num_rows, "persons": int(count)}
        if form == "screening":
            hit = pc.fill_null(pc.equal(table.column("outcome"), "identified"), False)
            hit = hit.to_numpy(zero_copy_only=False)
            figures["identified"] = int(np.unique(labels[hit]).size)
        out[form] = figures
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
