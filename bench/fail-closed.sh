#!/usr/bin/env bash
# The latency cost of committing a call's record before forwarding it (group commit through
# the batch writer), where best-effort records it after the response:
#   - the client's fail-closed mode: wrk drives GET /api/v1/namespaces/default through
#     `ztk proxy` + the gateway + the built-in sandbox, once per mode;
#   - the gateway's strict mode (`audit_mode = "strict"`) against best-effort: wrk straight at
#     the gateway with the session token, once per mode (the gateway restarted in between);
# each at concurrency 1 and 16.
# Usage: bench/fail-closed.sh [SECONDS]        (prints wrk's latency lines; asserts nothing)
set -euo pipefail
SECS="${1:-5}"
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
if [ -z "${ZTK_BENCH_BIN:-}" ]; then
    cargo build --release --quiet
    ZTK_BENCH_BIN="$PWD/target/release/ztk"
fi
BIN="$ZTK_BENCH_BIN"
dir="$(mktemp -d)"
gw_pid=""
cleanup() {
    ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" "$BIN" proxy stop >/dev/null 2>&1 || true
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
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
"$BIN" gateway role bind edit --user alice --config "$dir/gateway.toml" >/dev/null
"$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gateway.out" 2>"$dir/gateway.err" &
gw_pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^ztk gateway: listening on //p' "$dir/gateway.out" 2>/dev/null || true)"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "the gateway did not start:"; cat "$dir/gateway.err"; exit 1; }
export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" ZTK_TOKEN_STORE=file
echo "$PASSWORD" | "$BIN" login --gateway "$url" --ca-file "$dir/gw/ca.pem" --user alice --password-stdin >/dev/null
"$BIN" kubeconfig -o "$dir/kubeconfig" >/dev/null   # chooses the proxy's port

for mode in best-effort fail-closed; do
    sed -i '/^\[audit\]/,$d' "$dir/client/config.toml"
    printf '[audit]\nmode = "%s"\n' "$mode" >> "$dir/client/config.toml"
    "$BIN" proxy stop >/dev/null 2>&1 || true
    # The plugin starts the proxy and prints a credential for it.
    token="$("$BIN" credential --cluster sandbox | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')"
    port="$(cat "$dir/client/proxy/port")"
    target="https://127.0.0.1:$port/k8s/sandbox/api/v1/namespaces/default"
    for c in 1 16; do
        echo "== $mode, concurrency $c"
        wrk -t1 -c"$c" -d"${SECS}s" --latency -H "Authorization: Bearer $token" "$target" \
            | grep -E '^\s+(50|99)%|Requests/sec|Non-2xx'
    done
done

# The gateway's own modes, straight at it with the session.
session="$(cat "$dir/client/session-token")"
for gmode in best-effort strict; do
    kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null || true
    sed -i '/^audit_mode/d' "$dir/gateway.toml"
    sed -i "1i audit_mode = \"$gmode\"" "$dir/gateway.toml"
    : > "$dir/gateway.out"
    "$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gateway.out" 2>"$dir/gateway.err" &
    gw_pid=$!
    url=""
    for _ in $(seq 1 100); do
        url="$(sed -n 's/^ztk gateway: listening on //p' "$dir/gateway.out" 2>/dev/null || true)"
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "the gateway did not start:"; cat "$dir/gateway.err"; exit 1; }
    for c in 1 16; do
        echo "== gateway audit_mode $gmode, concurrency $c"
        wrk -t1 -c"$c" -d"${SECS}s" --latency -H "Authorization: Bearer $session" \
            "$url/k8s/sandbox/api/v1/namespaces/default" | grep -E '^\s+(50|99)%|Requests/sec|Non-2xx'
    done
done
