#!/usr/bin/env bash
# Audit-trail speed with N API-call records in a local store (default 1,000,000):
#   - filtered `ztk audit list` latency (median of 5 runs, several filters)
#   - `ztk audit export --csv` of every call against `sqlite3 -csv` dumping the same table,
#     and the export's peak RSS.
# Usage: bench/audit.sh [N]        (prints numbers; asserts nothing)
set -euo pipefail
N="${1:-1000000}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN="$PWD/target/release/ztk"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
export ZTK_DATA_DIR="$dir" ZTK_CONFIG_DIR="$dir"

echo "== seeding $N calls"
/usr/bin/time -f "seed: %es wall, %MKB max RSS" "$BIN" audit seed --count "$N"
db="$dir/audit.db"
sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
echo "store: $(du -h "$db" | cut -f1)"

python3 - "$BIN" <<'PY'
import statistics, subprocess, sys, time
bin = sys.argv[1]
cases = [
    ["--view", "calls"],
    ["--view", "calls", "--user", "alice"],
    ["--view", "calls", "--verb", "delete", "--namespace", "payments"],
    ["--view", "calls", "--status", "5xx", "--cluster", "prod"],
    ["--view", "calls", "--since", "1d", "--resource", "secrets"],
    ["--view", "calls", "--user", "alice", "--verb", "delete", "--status", "4xx", "--since", "7d"],
    ["--view", "calls", "--command", "delete pods"],
    ["--view", "commands", "--user", "bob"],
    ["--view", "commands", "--verb", "delete", "--status", "5xx"],
]
print("== filtered list (100 rows, -o ndjson), median of 5 runs")
for args in cases:
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([bin, "audit", "list", "-o", "ndjson", "--limit", "100", *args], check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    print(f"{statistics.median(times):8.1f} ms  ztk audit list {' '.join(args)}")
PY

echo "== export of every call"
ztk_out="$dir/ztk.csv"; sq_out="$dir/sqlite.csv"
/usr/bin/time -o "$dir/ztk.time" -f "%e %M" "$BIN" audit export --csv --view calls -o "$ztk_out" 2>/dev/null
/usr/bin/time -o "$dir/sq.time" -f "%e %M" sqlite3 -csv -header "$db" "SELECT * FROM api_calls ORDER BY time_us DESC" > "$sq_out"
read -r zt zm < "$dir/ztk.time"; read -r st sm < "$dir/sq.time"
echo "ztk audit export --csv:  ${zt}s, $((zm / 1024)) MB max RSS, $(wc -l < "$ztk_out") lines"
echo "sqlite3 -csv:            ${st}s, $((sm / 1024)) MB max RSS, $(wc -l < "$sq_out") lines"
python3 -c "import sys; z,s=float(sys.argv[1]),float(sys.argv[2]); print(f'ratio ztk/sqlite3: {z/s:.2f}x' if s>0 else 'ratio: n/a')" "$zt" "$st"
