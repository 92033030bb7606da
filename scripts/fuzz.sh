#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo fuzz with libFuzzer) for a bounded
# time, seeded with real files: the demo's drops, raw CSV and XLSX files and
# ledger, and the secretariat's config files. Fails when a target finds an
# input that crashes it; the input is kept under the work folder's
# artifacts/ (copy it to tests/fuzz/TARGET/ as a regression test, then fix).
#
#   scripts/fuzz.sh [TARGET...]        (default: all targets)
#
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_WORK      corpora, artifacts and the build (default ~/.cache/safetally-fuzz)
#
# cargo-fuzz is installed under ~/.cache/safetally-tools when absent. It
# passes -Z flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 lets it.
# Only cargo fuzz gets that variable: cargo rebuilds everything it builds
# when it changes, so the main build (and its cache) never sees it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
work="${FUZZ_WORK:-$HOME/.cache/safetally-fuzz}"
tools="$HOME/.cache/safetally-tools"
export PATH="$tools/bin:$PATH"
unset RUSTC_BOOTSTRAP
export CARGO_TERM_COLOR=never
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(drop raw_csv raw_xlsx ledger config)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$tools"
fi

# --- seeds: real files, made by the demo ---------------------------------
mkdir -p "$work"
seeds="$work/seeds"
if [ ! -d "$seeds/drop" ]; then
  echo "== seeds from the demo"
  rm -rf "$work/demo" "$seeds.tmp"
  cargo run --locked --quiet --bin safetally -- demo --dir "$work/demo" >"$work/demo.log" 2>&1 \
    || { tail -20 "$work/demo.log" >&2; echo "fuzz: the demo failed" >&2; exit 1; }
  mkdir -p "$seeds.tmp"/{drop,raw_csv,raw_xlsx,ledger,config}
  find "$work/demo/drops" -name '*.parquet' -exec cp {} "$seeds.tmp/drop/" \;
  # The raw files (not the report's tables or the rejects reports).
  mapfile -t csvs < <(find "$work/demo/raw" -name '*.csv' | sort)
  mapfile -t xlsxs < <(find "$work/demo/raw" -name '*.xlsx' | sort)
  # Every seventh file: several NGOs, both forms (their names repeat).
  for ((i = 0; i < ${#csvs[@]}; i += 7)); do cp "${csvs[$i]}" "$seeds.tmp/raw_csv/$i.csv"; done
  for ((i = 0; i < ${#xlsxs[@]}; i += 5)); do cp "${xlsxs[$i]}" "$seeds.tmp/raw_xlsx/$i.xlsx"; done
  cp "$work/demo/store/ledger.jsonl" "$seeds.tmp/ledger/"
  find "$work/demo/store" -name '*.toml' -exec cp {} "$seeds.tmp/config/" \;
  printf 'title = "Annual report"\nmin_count = 5\nprotection = 5\nrounding_base = 3\nfuzzy_linkage = true\nfuzzy_memory_mib = 64\nqueries = "queries"\n' \
    >"$seeds.tmp/config/report.toml"
  printf '[members]\nNGO01 = "Harbour Light"\nNGO02 = { name = "Second Shelter", forms = ["screening"] }\n' \
    >"$seeds.tmp/config/members.toml"
  rm -rf "$work/demo"
  mv "$seeds.tmp" "$seeds"
fi

status=0
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  artifacts="$work/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz $t (${seconds}s)"
  started=$SECONDS
  # The regression inputs first: what was found before must stay fixed.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --target-dir "$work/target" "$t" \
      "$corpus" "$seeds/$t" "tests/fuzz/$t" -- \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 \
      -artifact_prefix="$artifacts" -print_final_stats=1 >"$work/$t.log" 2>&1; then
    tail -40 "$work/$t.log" >&2
    echo "fuzz: $t found a crashing input: see $artifacts" >&2
    status=1
  else
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$work/$t.log" \
      | tr '\n' ' ' || true
    echo "($((SECONDS - started))s with the build)"
  fi
done
exit $status
