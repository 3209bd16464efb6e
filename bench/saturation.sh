#!/usr/bin/env bash
# Does a relayed call ever wait on the audit writer? Latency of calls through the ztk gateway
# (wrk, fixed concurrency), three ways, side by side in one run:
#   idle     the gateway's writer has only wrk's own records to commit;
#   ingest   meanwhile a second client pushes a large backlog through the ingest endpoint into the
#            same store, so the writer competes for SQLite's write lock (and the push for the CPU);
#   stalled  the sqlite3 CLI holds the store's write lock for the whole run: nothing can be
#            committed, the writer holds its records in memory and retries.
# Afterwards the gateway must have written a record of every call wrk made (checked).
# Usage: bench/saturation.sh [SECONDS] [CONCURRENCY] [BACKLOG]    e.g. bench/saturation.sh 5 16 400000
# Needs: wrk, sqlite3, curl, openssl, kubectl. Prints numbers; asserts only that no record is lost.
set -euo pipefail
SECS="${1:-5}"
CONC="${2:-16}"
BACKLOG="${3:-400000}"
source "$(dirname "$0")/lib.sh"

start_sandbox
start_gateway
url="$GATEWAY/k8s/sb$PATH_Q"
code=$(curl -s -o /dev/null -w '%{http_code}' -k -H "Authorization: Bearer $SESSION" "$url")
[ "$code" = 200 ] || { echo "the gateway answers $code at $url" >&2; exit 1; }

# The flooding client: its own config and store, another user.
echo pw | "$BIN" gateway user add flood --password-stdin --config "$dir/gateway.toml" >/dev/null
flood() { ZTK_CONFIG_DIR="$dir/flood" ZTK_DATA_DIR="$dir/flood" "$BIN" "$@"; }
echo pw | flood login --gateway "$GATEWAY" --ca-file "$dir/gw/ca.pem" --user flood --password-stdin >/dev/null
echo "== seeding a backlog of $BACKLOG calls for the flooding client"
flood audit seed --count "$BACKLOG" --user flood 2>&1 | tail -1

calls() { sqlite3 "$dir/gw/audit.db" "SELECT COUNT(*) FROM api_calls WHERE user = 'bench'"; }
total=0
printf '%-8s %10s %10s %10s %10s  %s\n' phase p50 p99 max req/s during
run() {
  local phase=$1 during=$2 out
  out=$(wrk -t2 -c"$CONC" -d"${SECS}s" --latency -H "Authorization: Bearer $SESSION" "$url")
  total=$((total + $(awk '/requests in/ {print $1}' <<< "$out")))
  printf '%-8s %10s %10s %10s %10s  %s\n' "$phase" \
    "$(awk '$1=="50%" {print $2}' <<< "$out")" "$(awk '$1=="99%" {print $2}' <<< "$out")" \
    "$(awk '/Latency/ {print $4}' <<< "$out")" "$(awk '/Requests\/sec/ {print $2}' <<< "$out")" "$during"
  errs=$(awk '/Non-2xx/ {print $NF}' <<< "$out")
  [ -z "$errs" ] || echo "  ($errs answers were not 2xx)"
}

run idle "-"

flood audit push > "$dir/push.out" 2>&1 &
push=$!
run ingest "ztk audit push of $BACKLOG records"
if kill -0 "$push" 2>/dev/null; then during="(the push was still running when wrk ended)"; else during="(the push ended before wrk: raise BACKLOG)"; fi
wait "$push" || { cat "$dir/push.out" >&2; exit 1; }
echo "  $during; push: $(tail -1 "$dir/push.out")"

# Hold the write lock a little longer than the run. The CLI's `.shell` keeps the transaction open.
# `.timeout`: the gateway's writer may be committing the last phase's records just then, and the
# CLI would otherwise give up at once ("database is locked") instead of waiting its turn.
printf '.timeout 10000\nBEGIN IMMEDIATE;\nINSERT INTO sequence (id, last) SELECT 1, 0 WHERE 0;\n.shell sleep %s\nCOMMIT;\n' "$((SECS + 1))" \
  | sqlite3 "$dir/gw/audit.db" &
lock=$!
sleep 0.3
# Counted once the CLI holds the lock: the writer may have committed just before it got it.
before_stall=$(calls)
run stalled "sqlite3 holds the write lock"
during_stall=$(calls)
wait "$lock"
echo "  records written while the lock was held: $((during_stall - before_stall))"

# Every call wrk made (plus the curl check) must be recorded once the writer catches up.
want=$((total + 1))
for _ in $(seq 1 300); do
  [ "$(calls)" -ge "$want" ] && break
  sleep 0.1
done
got=$(calls)
echo "records of wrk's calls at the gateway: $got of $want"
[ "$got" -ge "$want" ] || { echo "the gateway lost $((want - got)) audit records" >&2; exit 1; }
