#!/usr/bin/env bash
# Gateway ingest throughput: N synthetic API-call records (default 500,000; plus one command
# per ten calls) of one user, shipped by `ztk audit push` through the real endpoint (TLS, session
# check, validation of every record, one SQLite transaction per 2,000-record batch) into the
# gateway's store. Client and gateway run on this machine at once, so the number is end to end.
# Usage: bench/ingest.sh [N]        (ZTK_BENCH_JSON=1 sends JSON batches instead of postcard)
# Prints numbers; asserts only that every record arrived once.
set -euo pipefail
N="${1:-500000}"
cd "$(dirname "$0")/.."
if [ -z "${ZTK_BENCH_BIN:-}" ]; then
    cargo build --release --quiet
    ZTK_BENCH_BIN="$PWD/target/release/ztk"
fi
BIN="$ZTK_BENCH_BIN"
dir="$(mktemp -d)"
gw_pid=""
cleanup() {
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
    [ -n "${ZTK_BENCH_KEEP:-}" ] && cp "$dir/gateway.err" "$ZTK_BENCH_KEEP"
    rm -rf "$dir"
}
trap cleanup EXIT
PASSWORD="bench password"

cat > "$dir/gateway.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "gw"
[[clusters]]
name = "sandbox"
sandbox = true
TOML
echo "$PASSWORD" | "$BIN" gateway user add alice --password-stdin --config "$dir/gateway.toml" >/dev/null
ZTK_LOG="${ZTK_LOG:-warn}" "$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gateway.out" 2>"$dir/gateway.err" &
gw_pid=$!
for _ in $(seq 1 100); do
    url="$(sed -n 's/^ztk gateway: listening on //p' "$dir/gateway.out" 2>/dev/null || true)"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "the gateway did not start:"; cat "$dir/gateway.err"; exit 1; }

export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" ZTK_TOKEN_STORE=file
echo "$PASSWORD" | "$BIN" login --gateway "$url" --ca-file "$dir/gw/ca.pem" --user alice --password-stdin >/dev/null
echo "== seeding $N calls into the client's store"
"$BIN" audit seed --count "$N" --user alice
# The seed's dirty pages (the whole store) go to disk before the clock starts: written back by
# the kernel during the push, they made the number a measure of the disk.
sync
json=()
[ "${ZTK_BENCH_JSON:-}" = "1" ] && json=(--json)
echo "== ztk audit push ${json[*]:-(postcard)}"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
gw_cpu0="$(cpu "$gw_pid")"
out="$(/usr/bin/time -f "%e %M %U %S" -o "$dir/push.time" "$BIN" audit push "${json[@]}")"
gw_cpu1="$(cpu "$gw_pid")"
echo "$out"
read -r wall rss push_user push_sys < "$dir/push.time"
gw_secs="$(python3 -c "import os; print(($gw_cpu1 - $gw_cpu0) / os.sysconf('SC_CLK_TCK'))")"
secs="$(echo "$out" | sed -n 's/.* in \([0-9.]*\)s (.*/\1/p')"
stored="$(sqlite3 "$dir/gw/audit.db" "SELECT COUNT(*) FROM client_calls")"
[ "$stored" = "$N" ] || { echo "the gateway stored $stored of $N calls"; exit 1; }
python3 - "$N" "$secs" "$wall" "$rss" "$gw_secs" "$push_user" "$push_sys" <<'PY'
import sys
n, secs, wall, rss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
gw, push = float(sys.argv[5]), float(sys.argv[6]) + float(sys.argv[7])
records = n + n // 10
print(f"API-call records persisted by the gateway: {n / secs:,.0f}/s ({n:,} calls + {n // 10:,} commands in {secs:.2f}s)")
print(f"push process: {wall:.2f}s wall including start-up, {push:.2f}s CPU, {rss // 1024} MB max RSS")
# Client and gateway share this machine's cores; the gateway's own CPU time per record says
# what it can take when the clients are elsewhere (one ingest transaction at a time: one core).
if gw > 0:
    print(f"gateway: {gw:.2f}s CPU for {records:,} records, {gw / records * 1e6:.1f} µs each: {records / gw:,.0f} records per CPU-second")
PY
