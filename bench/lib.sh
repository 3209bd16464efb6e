# Shared setup for the bench/ scripts (sourced, not run): a release build, a temp dir that is
# removed on exit, and functions that start the pieces every benchmark needs. Everything a
# script starts is stopped on exit, the detached `ztk proxy` included.
# Needs: openssl, python3, kubectl (and per script: nginx, wrk).

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${ZTK_BENCH_BIN:-}" ]; then
  cargo build --release --quiet
  ZTK_BENCH_BIN="$PWD/target/release/ztk"
fi
BIN="$ZTK_BENCH_BIN"
dir="$(mktemp -d)"
pids=()
bench_cleanup() {
  # The persistent proxy runs detached (started by `ztk credential`): stop it by its pid file.
  "$BIN" proxy stop >/dev/null 2>&1 || true
  if [ -n "${PROXY_PID:-}" ]; then kill "$PROXY_PID" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${PG_DIR:-}" ]; then as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}
trap bench_cleanup EXIT
export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" ZTK_TOKEN_STORE=file HOME="$dir/home" KUBECACHEDIR="$dir/kcache"
export ZTK_LOG="${ZTK_LOG:-error}"
PATH_Q="/api/v1/namespaces/dev/pods?labelSelector=run%3Ddebug-shell"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits (up to $3 tenths of a second, default 100) for a line matching $2 in file $1 and prints
# its last field.
wait_line() { for _ in $(seq "${3:-100}"); do l=$(grep -m1 "$2" "$1" 2>/dev/null || true); [ -n "$l" ] && { echo "${l##* }"; return; }; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1; }
# Resident set size of a pid, in MB with one decimal.
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# A throwaway PostgreSQL (Debian's server programs), run as `postgres` when we are root, on a
# free loopback port, fsync on (as in production). Sets PG_URL (sslmode=disable: loopback).
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR="$dir/pg"; mkdir -p "$PG_DIR"; chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U ztk -A trust >/dev/null
  local port; port=$(free_port)
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
  as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U ztk ztk
  PG_URL="postgresql://ztk@127.0.0.1:$port/ztk?sslmode=disable"
}

# The upstream: the sandbox, as a real loopback TLS API server. Sets SANDBOX, TOKEN, SANDBOX_PID.
start_sandbox() {
  "$BIN" sandbox serve --kubeconfig "$dir/sandbox.kubeconfig" > "$dir/sandbox.out" 2>&1 &
  SANDBOX_PID=$!; pids+=($SANDBOX_PID)
  SANDBOX=$(wait_line "$dir/sandbox.out" "listening on")
  TOKEN=$(awk '/token:/ {print $2}' "$dir/sandbox.kubeconfig")
}

write_gateway_toml() {
  cat > "$dir/gateway.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$dir/gw"
${ZTK_BENCH_GATEWAY_TOML:-}
$1
[[clusters]]
name = "sb"
kubeconfig = "$dir/sandbox.kubeconfig"
TOML
}

# The ztk gateway with cluster `sb` (the sandbox, through its kubeconfig), user `bench` with the
# `edit` role, logged in; ZTK_BENCH_GATEWAY_TOML adds top-level settings to its gateway.toml
# (e.g. "worker_threads = 2"). Sets GATEWAY, SESSION, GATEWAY_PID.
start_gateway() {
  mkdir -p "$dir/gw"
  # The benchmarks push more than one user's default allowance per minute, from one address:
  # no [limits] on them (a build from before [limits] refuses the table, and goes without).
  local limits='[limits]
ingest_records_per_minute = 0
ingest_bytes_per_minute = 0
max_connections_per_address = 0'
  write_gateway_toml "$limits"
  if ! "$BIN" gateway user list --config "$dir/gateway.toml" >/dev/null 2>&1; then
    write_gateway_toml ""
  fi
  echo pw | "$BIN" gateway user add bench --password-stdin --config "$dir/gateway.toml" >/dev/null
  "$BIN" gateway role bind edit --user bench --config "$dir/gateway.toml" >/dev/null
  "$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gw.out" 2>&1 &
  GATEWAY_PID=$!; pids+=($GATEWAY_PID)
  GATEWAY=$(wait_line "$dir/gw.out" "listening on")
  echo pw | "$BIN" login --gateway "$GATEWAY" --ca-file "$dir/gw/ca.pem" --user bench --password-stdin >/dev/null
  SESSION=$(cat "$dir/client/session-token")
}

# The persistent local proxy behind a generated kubeconfig (contexts `ztk-sb`), started the way
# kubectl starts it (through the credential plugin). Sets PROXY_URL (…/k8s/sb), CRED (a
# credential as the plugin issues it), PROXY_PID, ZTK_KUBECONFIG.
start_proxy() {
  ZTK_KUBECONFIG="$dir/ztk.kubeconfig"
  "$BIN" kubeconfig --output "$ZTK_KUBECONFIG" >/dev/null
  KUBECONFIG="$ZTK_KUBECONFIG" kubectl --context ztk-sb get ns >/dev/null
  PROXY_URL=$(awk '/server:/ && /k8s\/sb/ {print $2; exit}' "$ZTK_KUBECONFIG")
  CRED=$(KUBERNETES_EXEC_INFO='{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}' \
    "$BIN" credential --cluster sb | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
  PROXY_PID=$(cat "$dir/client/proxy/proxy.pid")
}

# Holds N watches of pods in all namespaces open against URL (a cluster's base: the proxy's
# or the gateway's /k8s/CLUSTER), each its own TLS connection (HTTP/1.1) with bearer CRED,
# trusting CA; returns once all answered or none more did for 3 s, with the count answered in
# $dir/held. `release_watches` closes them.
hold_watches() {
  rm -f "$dir/held" "$dir/release"
  python3 - "$1" "$2" "$3" "$4" "$dir/held" "$dir/release" <<'PY' &
import asyncio, os, ssl, sys
url, cred, ca, n, held, release = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
host, port = url.split("//")[1].split("/")[0].split(":")
prefix = "/" + url.split("//")[1].split("/", 1)[1]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
ok = 0
async def watch(i, sem):
    global ok
    async with sem:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
        writer.write((f"GET {prefix}/api/v1/pods?watch=true&resourceVersion=0 HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {cred}\r\nUser-Agent: ztk-bench\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " in status:
            ok += 1
    while not os.path.exists(release):
        await asyncio.sleep(0.2)
    writer.close()
async def main():
    sem = asyncio.Semaphore(50)  # at most 50 handshakes at a time
    tasks = [asyncio.create_task(watch(i, sem)) for i in range(n)]
    # Until every watch answered, or none more did for 3 s (failures are reported as the count).
    last, still = -1, 0
    while ok < n and still < 6:
        await asyncio.sleep(0.5)
        still = still + 1 if ok == last else 0
        last = ok
    open(held, "w").write(str(ok))
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
PY
  WATCHES_PID=$!
  for _ in $(seq 600); do [ -s "$dir/held" ] && break; sleep 0.1; done
  sleep 1
}
release_watches() { touch "$dir/release"; wait "$WATCHES_PID" || true; }
