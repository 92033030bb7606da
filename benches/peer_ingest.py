#!/usr/bin/env python3
"""Peer for the ingest benchmark: the script a secretariat might write
itself with pyarrow, doing the same work as `safetally ingest` on the same
drops, with the same durability.

For each drop, in order: read the file, SHA-256 it, decode every column
with pyarrow, check the safetally metadata (present, expected key
fingerprint, row count), that no identity column is present, that record
keys are unique and that every event month is the drop's period; then write
it under .tmp/, fsync, rename into form=/period=/org=/SHA256.parquet, fsync
the folder, and append a JSON line to the ledger with fsync. (It checks
less than safetally: no code lists, no hash chain.)

Usage: peer_ingest.py STORE_DIR FINGERPRINT DROP...
Prints one JSON line: {"drops": N, "accepted": N, "seconds": S}.
"""

import hashlib
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

IDENTITY = {"family_name", "given_name", "date_of_birth", "passport_number"}


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    store, fingerprint, drops = sys.argv[1], sys.argv[2], sys.argv[3:]
    start = time.perf_counter()
    os.makedirs(os.path.join(store, ".tmp"), exist_ok=True)
    ledger = open(os.path.join(store, "ledger.jsonl"), "ab")
    seen = set()
    accepted = 0
    for path in drops:
        with open(path, "rb") as f:
            data = f.read()
        sha = hashlib.sha256(data).hexdigest()
        entry = {"sha256": sha, "source": os.path.basename(path)}
        if sha in seen:
            entry.update(outcome="duplicate")
            ledger.write((json.dumps(entry) + "\n").encode())
            ledger.flush()
            os.fsync(ledger.fileno())
            continue
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            meta = {
                k.decode(): v.decode()
                for k, v in (parquet.metadata.metadata or {}).items()
                if k.startswith(b"safetally.")
            }
            table = parquet.read()
            form, org, period = (
                meta["safetally.form"],
                meta["safetally.org"],
                meta["safetally.period"],
            )
            if meta["safetally.key_fingerprint"] != fingerprint:
                raise ValueError("wrong key")
            if int(meta["safetally.rows"]) != table.num_rows:
                raise ValueError("row count")
            if IDENTITY & set(table.column_names):
                raise ValueError("identity column")
            if pc.count_distinct(table["record_key"]).as_py() != table.num_rows:
                raise ValueError("record keys not unique")
            if table.num_rows and not pc.all(
                pc.equal(table["event_month"], period)
            ).as_py():
                raise ValueError("event month")
        except Exception as e:  # noqa: BLE001 - the peer records any refusal
            entry.update(outcome="refused", reason=str(e))
        else:
            folder = os.path.join(
                store, "drops", f"form={form}", f"period={period}", f"org={org}"
            )
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(store, ".tmp", sha + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(folder, sha + ".parquet"))
            fsync_dir(folder)
            seen.add(sha)
            accepted += 1
            entry.update(
                outcome="accepted",
                form=form,
                org=org,
                period=period,
                rows=table.num_rows,
                received=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        ledger.write((json.dumps(entry) + "\n").encode())
        ledger.flush()
        os.fsync(ledger.fileno())
    ledger.close()
    print(
        json.dumps(
            {
                "drops": len(drops),
                "accepted": accepted,
                "seconds": time.perf_counter() - start,
            }
        )
    )


if __name__ == "__main__":
    main()
