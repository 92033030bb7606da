#!/usr/bin/env python3
"""Recomputes drops' content digests from docs/drops.md ("Content digest")
alone, with pyarrow: a second implementation of the canonical form, for a
secretariat that wants to check a drop without safetally, and for checking
that the documentation says what src/digest.rs does.

    python3 scripts/check-digest.py DROP.parquet...   (pip install pyarrow)

Prints `match` or `MISMATCH` per drop (a drop of format 1 or 2 has no
digest: `no digest`); exits 1 on any mismatch. Reads only keyed columns and
codes: a drop holds no identity value.
"""
import hashlib, struct, sys
import pyarrow as pa, pyarrow.parquet as pq

def sized(b): return struct.pack("<I", len(b)) + b
def opt(s): return b"\0" if s is None else b"\1" + sized(s)

def type_name(t):
    if pa.types.is_fixed_size_binary(t): return f"fixed_size_binary({t.byte_width})"
    if pa.types.is_binary(t): return "binary"
    if pa.types.is_string(t): return "utf8"
    if pa.types.is_boolean(t): return "boolean"
    raise ValueError(t)

bad = 0
for path in sys.argv[1:]:
    f = pq.ParquetFile(path)
    t = f.read()
    md = f.metadata
    kv = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()}
    stated = kv.pop("safetally.content_sha256", None)
    if stated is None:
        print(path, "no digest")
        continue
    out = b"safetally content digest 1\0" + struct.pack("<Q", t.num_rows) + struct.pack("<I", t.num_columns)
    for field, col in zip(t.schema, t.columns):
        h = hashlib.sha256()
        for v in col.to_pylist():
            if v is None: h.update(b"\0")
            elif isinstance(v, bool): h.update(b"\1" + bytes([v]))
            elif pa.types.is_fixed_size_binary(field.type): h.update(b"\1" + v)
            elif isinstance(v, str): h.update(b"\1" + sized(v.encode()))
            else: h.update(b"\1" + sized(v))
        out += sized(field.name.encode()) + sized(type_name(field.type).encode()) + bytes([field.nullable]) + h.digest()
    out += opt(md.created_by.encode() if md.created_by else None)
    out += struct.pack("<I", len(kv))
    for k in sorted(kv):
        out += sized(k.encode()) + opt(kv[k].encode())
    got = hashlib.sha256(out).hexdigest()
    print(path, "match" if got == stated else f"MISMATCH (computed {got}, stated {stated})")
    bad += got != stated
sys.exit(1 if bad else 0)
