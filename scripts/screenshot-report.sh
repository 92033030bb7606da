#!/usr/bin/env bash
# Opens report.html in headless Chromium, takes a desktop and a phone-width
# screenshot, and checks that the pictures show the charts: the page must
# hold one chart per table, and each PNG must have enough pixels of the bar
# colour. Installs Debian's chromium with apt-get when it is absent.
#
#   scripts/screenshot-report.sh [REPORT_DIR [OUT_DIR]]   (REPORT_DIR "" = the demo)
#
# Without REPORT_DIR it builds safetally and makes the demo's report in a
# temporary folder. The PNGs go to OUT_DIR (default: a temporary folder);
# their paths are printed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "screenshot-report: FAILED: $*" >&2
  exit 1
}

# The bar colour of one-dimension charts (src/report/chart.rs, PALETTE[0]).
BAR_RGB="31,95,153"
# Pixels of that colour each screenshot must have (a single bar of the
# demo's first chart is several thousand).
MIN_PIXELS="${MIN_PIXELS:-5000}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- Chromium -------------------------------------------------------------
chromium_bin=""
for c in chromium chromium-browser; do
  if command -v "$c" >/dev/null 2>&1; then chromium_bin="$c"; break; fi
done
if [ -z "$chromium_bin" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    fail "chromium is not installed and cannot be installed here (needs root and apt-get): install Debian's chromium package"
  fi
  echo "== installing chromium (apt-get)"
  started=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >>"$work/apt.log" 2>&1 \
    || { tail -20 "$work/apt.log" >&2; fail "apt-get install chromium failed"; }
  echo "   installed in $((SECONDS - started)) s"
  chromium_bin=chromium
fi
echo "== $("$chromium_bin" --version 2>/dev/null | head -1)"

# --- The report -----------------------------------------------------------
if [ -n "${1:-}" ]; then
  report="$1"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/safetally-target}"
  echo "== building safetally"
  cargo build --locked --quiet --bin safetally
  echo "== safetally demo"
  "$CARGO_TARGET_DIR/debug/safetally" demo --dir "$work/demo" >"$work/demo.log" 2>&1 \
    || { tail -20 "$work/demo.log" >&2; fail "safetally demo failed"; }
  report="$work/demo/report"
fi
html="$(cd "$report" && pwd)/report.html"
[ -f "$html" ] || fail "no report.html in $report"
out="${2:-$(mktemp -d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# One chart (inline <svg>) per table.
tables=$(find "$(dirname "$html")/tables" -name '*.csv' | wc -l)
charts=$(grep -o '<svg class="chart"' "$html" | wc -l)
[ "$tables" -gt 0 ] || fail "the report has no tables"
[ "$charts" -eq "$tables" ] || fail "report.html has $charts charts for $tables tables"
echo "== report.html: $charts charts for $tables tables"

# --- Screenshots ------------------------------------------------------------
shoot() { # NAME WIDTH HEIGHT
  local png="$out/report-$1.png"
  rm -f "$png"
  timeout 120 "$chromium_bin" --headless --no-sandbox --disable-gpu \
    --disable-dev-shm-usage --no-first-run --hide-scrollbars \
    --user-data-dir="$work/profile-$1" --force-device-scale-factor=1 \
    --window-size="$2,$3" --screenshot="$png" "file://$html" \
    >"$work/chromium-$1.log" 2>&1 || true
  [ -s "$png" ] || { tail -20 "$work/chromium-$1.log" >&2; fail "chromium wrote no screenshot ($1)"; }
  python3 - "$png" "$BAR_RGB" "$MIN_PIXELS" <<'PY' || fail "the $1 screenshot does not show the charts: $png"
import struct, sys, zlib

path, rgb, least = sys.argv[1], tuple(int(v) for v in sys.argv[2].split(",")), int(sys.argv[3])
data = open(path, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"{path}: not a PNG")
pos, idat, head = 8, [], None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        head = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat.append(body)
    pos += 12 + n
width, height, depth, colour, _, _, interlace = head
channels = {2: 3, 6: 4}.get(colour)
if depth != 8 or channels is None or interlace:
    sys.exit(f"{path}: unexpected PNG format (depth {depth}, colour type {colour})")
raw = zlib.decompress(b"".join(idat))
stride = width * channels
prev = bytearray(stride)
hits = 0
near = lambda a, b: abs(a - b) <= 6
for y in range(height):
    line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
    f, cur = line[0], bytearray(line[1:])
    if f == 1:
        for i in range(channels, stride):
            cur[i] = (cur[i] + cur[i - channels]) & 255
    elif f == 2:
        cur = bytearray((a + b) & 255 for a, b in zip(cur, prev))
    elif f == 3:
        for i in range(stride):
            left = cur[i - channels] if i >= channels else 0
            cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 255
    elif f == 4:
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for i in range(0, stride, channels):
        if near(cur[i], rgb[0]) and near(cur[i + 1], rgb[1]) and near(cur[i + 2], rgb[2]):
            hits += 1
    prev = cur
print(f"   {path}: {width}x{height}, {hits} pixels of the bar colour (need {least})")
if hits < least:
    sys.exit(1)
PY
}

started=$SECONDS
echo "== screenshots"
shoot desktop 1280 2400
shoot phone 390 2400
echo "== the screenshots show the charts ($((SECONDS - started)) s):"
echo "   $out/report-desktop.png"
echo "   $out/report-phone.png"
