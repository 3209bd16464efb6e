#!/usr/bin/env bash
# Per-call overhead of each hop, side by side in one run, against one upstream (the ztk sandbox
# serving a ~1.5 KB pod list): direct, through nginx (TLS in, TLS out, keepalive), through
# `kubectl proxy`, through the ztk gateway, and through the ztk local proxy plus the gateway
# (when this ztk has `ztk proxy`). Load: wrk at fixed concurrency, p50/p99 latency and req/s.
# Usage: bench/relay.sh [SECONDS_PER_RUN] [CONCURRENCIES]    e.g. bench/relay.sh 10 "1 16 64"
# Needs: nginx, wrk (Debian packages nginx-light, wrk), openssl, kubectl. Prints; asserts nothing.
set -euo pipefail
SECS="${1:-10}"
CONCS="${2:-1 16 64}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN="$PWD/target/release/ztk"
dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" ZTK_TOKEN_STORE=file HOME="$dir/home" KUBECACHEDIR="$dir/kcache"
PATH_Q="/api/v1/namespaces/dev/pods?labelSelector=run%3Ddebug-shell"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits for a line matching $2 in file $1 and prints its last field.
wait_line() { for _ in $(seq 100); do l=$(grep -m1 "$2" "$1" 2>/dev/null || true); [ -n "$l" ] && { echo "${l##* }"; return; }; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1; }

# The upstream.
"$BIN" sandbox serve --kubeconfig "$dir/sandbox.kubeconfig" > "$dir/sandbox.out" 2>&1 & pids+=($!)
SANDBOX=$(wait_line "$dir/sandbox.out" "listening on")
TOKEN=$(awk '/token:/ {print $2}' "$dir/sandbox.kubeconfig")
awk '/certificate-authority-data:/ {print $2}' "$dir/sandbox.kubeconfig" | base64 -d > "$dir/sandbox-ca.pem"

# nginx: TLS in front, TLS to the sandbox with kept-alive upstream connections.
NGINX_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -keyout "$dir/nginx.key" -out "$dir/nginx.crt" 2>/dev/null
mkdir -p "$dir/nginx"
cat > "$dir/nginx.conf" <<NGINX
worker_processes auto;
error_log $dir/nginx/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  upstream sandbox { server ${SANDBOX#https://}; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $dir/nginx.crt; ssl_certificate_key $dir/nginx.key;
    location / {
      proxy_pass https://sandbox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_session_reuse on;
      proxy_buffering off;
    }
  }
}
NGINX
nginx -p "$dir/nginx" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/nginx/stderr" & pids+=($!)

# kubectl proxy: the Kubernetes project's own Go proxy (plain HTTP on loopback).
kubectl proxy --port=0 --kubeconfig "$dir/sandbox.kubeconfig" > "$dir/kproxy.out" 2>&1 & pids+=($!)
KPROXY=$(wait_line "$dir/kproxy.out" "Starting to serve on")

# The ztk gateway, reaching the same sandbox through its kubeconfig.
mkdir -p "$dir/gw"
cat > "$dir/gateway.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$dir/gw"
[[clusters]]
name = "sb"
kubeconfig = "$dir/sandbox.kubeconfig"
TOML
echo pw | "$BIN" gateway user add bench --password-stdin --config "$dir/gateway.toml" >/dev/null
"$BIN" gateway role bind edit --user bench --config "$dir/gateway.toml" >/dev/null 2>&1 || true
"$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gw.out" 2>&1 & pids+=($!)
GATEWAY=$(wait_line "$dir/gw.out" "listening on")
echo pw | "$BIN" login --gateway "$GATEWAY" --ca-file "$dir/gw/ca.pem" --user bench --password-stdin >/dev/null
SESSION=$(cat "$dir/client/session-token")

targets=(
  "direct|$SANDBOX$PATH_Q|Bearer $TOKEN"
  "nginx|https://127.0.0.1:$NGINX_PORT$PATH_Q|Bearer $TOKEN"
  "kubectl-proxy|http://$KPROXY$PATH_Q|"
  "ztk-gateway|$GATEWAY/k8s/sb$PATH_Q|Bearer $SESSION"
)
# The persistent local proxy, when this ztk has one: kubeconfig + credential plugin in front.
if "$BIN" proxy --help >/dev/null 2>&1 && "$BIN" kubeconfig --help >/dev/null 2>&1; then
  "$BIN" kubeconfig --output "$dir/ztk.kubeconfig" >/dev/null 2>&1 || true
  if [ -s "$dir/ztk.kubeconfig" ] && KUBECONFIG="$dir/ztk.kubeconfig" kubectl --context ztk-sb get ns >/dev/null 2>&1; then
    PROXY_URL=$(awk '/server:/ {print $2; exit}' "$dir/ztk.kubeconfig")
    CRED=$(KUBERNETES_EXEC_INFO='{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}' \
      "$BIN" credential --cluster sb | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
    targets+=("ztk-proxy+gateway|$PROXY_URL$PATH_Q|Bearer $CRED")
  fi
fi

for t in "${targets[@]}"; do
  IFS='|' read -r name url auth <<< "$t"
  code=$(curl -s -o /dev/null -w '%{http_code}' -k ${auth:+-H "Authorization: $auth"} "$url")
  [ "$code" = 200 ] || { echo "$name answers $code at $url" >&2; exit 1; }
done

printf '%-20s %6s %10s %10s %10s\n' target conc p50 p99 req/s
for c in $CONCS; do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url auth <<< "$t"
    threads=$(( c < 2 ? 1 : 2 ))
    out=$(wrk -t"$threads" -c"$c" -d"${SECS}s" --latency ${auth:+-H "Authorization: $auth"} "$url")
    p50=$(awk '$1=="50%" {print $2}' <<< "$out")
    p99=$(awk '$1=="99%" {print $2}' <<< "$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    errs=$(awk '/Non-2xx/ {print $NF}' <<< "$out")
    printf '%-20s %6s %10s %10s %10s %s\n' "$name" "$c" "$p50" "$p99" "$rps" "${errs:+($errs non-2xx)}"
  done
done
