#!/usr/bin/env bash
# Per-call overhead of each hop, side by side in one run, against one upstream (the ztk sandbox
# serving a ~1.5 KB pod list): direct, through nginx (TLS in, TLS out, keepalive), through
# `kubectl proxy`, through the ztk gateway, and through the ztk local proxy plus the gateway
# (when this ztk has `ztk proxy`). Load: wrk at fixed concurrency, p50/p99 latency and req/s.
# Usage: bench/relay.sh [SECONDS_PER_RUN] [CONCURRENCIES]    e.g. bench/relay.sh 10 "1 16 64"
# ROUNDS=N repeats every run N times, interleaved (the summary takes medians).
# ZTK_BENCH_COMPARE=/path/to/other/ztk adds a second gateway and local proxy of that build (same
# sandbox, a login of their own), run in the same rounds: a before/after in one run.
# ZTK_BENCH_POSTGRES=1 adds a gateway of this build on a throwaway PostgreSQL (target
# pg:ztk-gateway): each backend's CPU per relayed call side by side.
# Needs: nginx, wrk (Debian packages nginx-light, wrk), openssl, kubectl. Prints; asserts nothing.
set -euo pipefail
SECS="${1:-10}"
CONCS="${2:-1 16 64}"
source "$(dirname "$0")/lib.sh"

start_sandbox

# nginx: TLS in front, TLS to the sandbox with kept-alive upstream connections. Two servers in
# one nginx: without an access log (the leanest proxy), and with Debian's default access log (one
# line per call, nginx's own record of it: the closer peer to a hop that records every call).
NGINX_PORT=$(free_port)
NGINX_LOG_PORT=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -keyout "$dir/nginx.key" -out "$dir/nginx.crt" 2>/dev/null
mkdir -p "$dir/nginx"
# What both servers do: TLS, then relay to the sandbox over kept-alive connections.
cat > "$dir/nginx-relay.conf" <<NGINX
ssl_certificate $dir/nginx.crt; ssl_certificate_key $dir/nginx.key;
location / {
  proxy_pass https://sandbox;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_ssl_session_reuse on;
  proxy_buffering off;
}
NGINX
cat > "$dir/nginx.conf" <<NGINX
worker_processes auto;
error_log $dir/nginx/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  upstream sandbox { server ${SANDBOX#https://}; keepalive 128; }
  server { listen 127.0.0.1:$NGINX_PORT ssl; include $dir/nginx-relay.conf; }
  server {
    listen 127.0.0.1:$NGINX_LOG_PORT ssl;
    access_log $dir/nginx/access.log;
    include $dir/nginx-relay.conf;
  }
}
NGINX
nginx -p "$dir/nginx" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/nginx/stderr" & pids+=($!)

# kubectl proxy: the Kubernetes project's own Go proxy (plain HTTP on loopback).
kubectl proxy --port=0 --kubeconfig "$dir/sandbox.kubeconfig" > "$dir/kproxy.out" 2>&1 & KPROXY_PID=$!; pids+=($KPROXY_PID)
KPROXY=$(wait_line "$dir/kproxy.out" "Starting to serve on")

start_gateway

for _ in $(seq 50); do [ -s "$dir/nginx/nginx.pid" ] && break; sleep 0.1; done
NGINX_PIDS="$(cat "$dir/nginx/nginx.pid") $(pgrep -P "$(cat "$dir/nginx/nginx.pid")" | tr '\n' ' ')"

# name|url|authorization|pids whose CPU time is the hop's own (the last column: CPU per request)
targets=(
  "direct|$SANDBOX$PATH_Q|Bearer $TOKEN|$SANDBOX_PID"
  "nginx|https://127.0.0.1:$NGINX_PORT$PATH_Q|Bearer $TOKEN|$NGINX_PIDS"
  "nginx+log|https://127.0.0.1:$NGINX_LOG_PORT$PATH_Q|Bearer $TOKEN|$NGINX_PIDS"
  "kubectl-proxy|http://$KPROXY$PATH_Q||$KPROXY_PID"
  "ztk-gateway|$GATEWAY/k8s/sb$PATH_Q|Bearer $SESSION|$GATEWAY_PID"
)
# The persistent local proxy in front of the gateway, as plain kubectl reaches it.
start_proxy
targets+=("ztk-proxy+gateway|$PROXY_URL$PATH_Q|Bearer $CRED|$PROXY_PID")

# The other build's gateway and proxy: lib.sh's functions, pointed at a directory of their own.
if [ -n "${ZTK_BENCH_COMPARE:-}" ]; then
  (
    BIN="$ZTK_BENCH_COMPARE"; dir="$dir/other"; mkdir -p "$dir"
    export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" HOME="$dir/home" KUBECACHEDIR="$dir/kcache"
    cp "$dir/../sandbox.kubeconfig" "$dir/"
    start_gateway
    start_proxy
    printf '%s\n' "$GATEWAY_PID" "$GATEWAY/k8s/sb" "$SESSION" "$PROXY_PID" "$PROXY_URL" "$CRED" > "$dir/started"
  )
  { read -r OTHER_GATEWAY_PID; read -r OTHER_GATEWAY; read -r OTHER_SESSION
    read -r OTHER_PROXY_PID; read -r OTHER_PROXY_URL; read -r OTHER_CRED; } < "$dir/other/started"
  pids+=("$OTHER_GATEWAY_PID" "$OTHER_PROXY_PID")
  targets+=(
    "other:ztk-gateway|$OTHER_GATEWAY$PATH_Q|Bearer $OTHER_SESSION|$OTHER_GATEWAY_PID"
    "other:ztk-proxy+gateway|$OTHER_PROXY_URL$PATH_Q|Bearer $OTHER_CRED|$OTHER_PROXY_PID"
  )
fi

# The same build's gateway on PostgreSQL.
if [ -n "${ZTK_BENCH_POSTGRES:-}" ]; then
  start_postgres
  (
    dir="$dir/pg-gw"; mkdir -p "$dir"
    export ZTK_CONFIG_DIR="$dir/client" ZTK_DATA_DIR="$dir/client" HOME="$dir/home" KUBECACHEDIR="$dir/kcache"
    export ZTK_BENCH_GATEWAY_TOML="database = \"$PG_URL\""
    cp "$dir/../sandbox.kubeconfig" "$dir/"
    start_gateway
    printf '%s\n' "$GATEWAY_PID" "$GATEWAY/k8s/sb" "$SESSION" > "$dir/started"
  )
  { read -r PG_GATEWAY_PID; read -r PG_GATEWAY; read -r PG_SESSION; } < "$dir/pg-gw/started"
  pids+=("$PG_GATEWAY_PID")
  targets+=("pg:ztk-gateway|$PG_GATEWAY$PATH_Q|Bearer $PG_SESSION|$PG_GATEWAY_PID")
fi

for t in "${targets[@]}"; do
  IFS="|" read -r name url auth _ <<< "$t"
  code=$(curl -s -o /dev/null -w '%{http_code}' -k ${auth:+-H "Authorization: $auth"} "$url")
  [ "$code" = 200 ] || { echo "$name answers $code at $url" >&2; exit 1; }
done

# CPU time (user + system) of a list of pids, in clock ticks.
cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# CPU time of the whole machine (user, nice, system, irq, softirq), in clock ticks: wrk, the
# upstream and every hop, so what a hop costs beyond its own process shows too.
box_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
ROUNDS="${ROUNDS:-1}"
results="$dir/results"
printf '%-24s %5s %10s %10s %10s %12s %12s\n' target conc p50 p99 req/s "cpu/req(us)" "box/req(us)"
for c in $CONCS; do
  for round in $(seq "$ROUNDS"); do
    for t in "${targets[@]}"; do
      IFS='|' read -r name url auth cpupids <<< "$t"
      threads=$(( c < 2 ? 1 : 2 ))
      before=$(cpu_ticks "$cpupids"); box_before=$(box_ticks)
      out=$(wrk -t"$threads" -c"$c" -d"${SECS}s" --latency ${auth:+-H "Authorization: $auth"} "$url")
      after=$(cpu_ticks "$cpupids"); box_after=$(box_ticks)
      p50=$(awk '$1=="50%" {print $2}' <<< "$out")
      p99=$(awk '$1=="99%" {print $2}' <<< "$out")
      rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
      n=$(awk '/requests in/ {print $1}' <<< "$out")
      cpu=$(( n > 0 ? (after - before) * 1000000 / HZ / n : 0 ))
      box=$(( n > 0 ? (box_after - box_before) * 1000000 / HZ / n : 0 ))
      errs=$(awk '/Non-2xx/ {print $NF}' <<< "$out")
      printf '%-24s %5s %10s %10s %10s %12s %12s %s\n' "$name" "$c" "$p50" "$p99" "$rps" "$cpu" "$box" "${errs:+($errs non-2xx)}"
      echo "$name $c $p50 $p99 $rps $cpu $box" >> "$results"
    done
  done
done

# What each hop adds: nginx, kubectl proxy and the ztk gateway over direct; the ztk local proxy
# over the ztk gateway alone. Medians over the rounds.
python3 - "$results" <<'PY'
import statistics, sys
def us(v):
    for unit, f in (("us", 1), ("ms", 1000), ("s", 1000000)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = {}
for line in open(sys.argv[1]):
    name, c, p50, p99, rps, cpu, box = line.split()
    rows.setdefault((name, c), []).append((us(p50), us(p99), float(rps), float(cpu), float(box)))
med = {k: [statistics.median(x[i] for x in v) for i in range(5)] for k, v in rows.items()}
hops = [("nginx", "nginx", "direct"), ("nginx, access log on", "nginx+log", "direct"),
        ("kubectl proxy", "kubectl-proxy", "direct"),
        ("ztk gateway", "ztk-gateway", "direct"), ("ztk local proxy", "ztk-proxy+gateway", "ztk-gateway"),
        ("ztk gateway on PostgreSQL", "pg:ztk-gateway", "direct"),
        ("ztk gateway, other build", "other:ztk-gateway", "direct"),
        ("ztk local proxy, other build", "other:ztk-proxy+gateway", "other:ztk-gateway")]
print()
print("added by each hop (median of rounds)     p50 added   p99 added   cpu/req of the hop   machine cpu/req added   p50, p99 added ÷ nginx's")
for c in sorted({c for _, c in med}, key=int):
    # What nginx adds at p50 and p99: the yardstick of issue 9's targets.
    nginx = None
    if ("nginx", c) in med and ("direct", c) in med:
        nginx = [med[("nginx", c)][i] - med[("direct", c)][i] for i in (0, 1)]
    for label, name, base in hops:
        if (name, c) in med and (base, c) in med:
            a, b = med[(name, c)], med[(base, c)]
            ratio = ""
            if nginx and min(nginx) > 0:
                ratio = f"{(a[0]-b[0])/nginx[0]:6.2f}, {(a[1]-b[1])/nginx[1]:.2f}"
            print(f"  c={c:<4} {label:<28} {a[0]-b[0]:8.0f}us  {a[1]-b[1]:8.0f}us  {a[3]:8.0f}us  {a[4]-b[4]:18.0f}us      {ratio}")
PY
