#!/usr/bin/env bash
# The agent's tunnel against the gateway's direct connection, side by side in one run: one
# gateway with two clusters on the same upstream (the ztk sandbox): `sb`, reached directly over
# TCP+TLS, and `edge`, reached through `ztk agent` (an outbound TLS connection carrying HTTP/2
# streams). Per-call latency and req/s (wrk, short calls), bytes per second on a large body
# (the OpenAPI document), CPU per call of the gateway and the agent, and memory with N watches
# held open through each path (default 1,000; through the tunnel they share one connection).
# Usage: bench/agent.sh [SECONDS_PER_RUN] [CONCURRENCIES] [WATCHES]   e.g. bench/agent.sh 10 "1 16" 1000
# Needs: wrk, python3, kubectl. Prints; asserts nothing.
set -euo pipefail
SECS="${1:-10}"
CONCS="${2:-1 16 64}"
N="${3:-1000}"
source "$(dirname "$0")/lib.sh"
ulimit -n "$(( N * 4 + 1024 > $(ulimit -Hn) ? $(ulimit -Hn) : N * 4 + 1024 ))"

start_sandbox
export ZTK_BENCH_GATEWAY_TOML='[[clusters]]
name = "edge"
agent = true'
start_gateway
"$BIN" gateway agent token edge --config "$dir/gateway.toml" > "$dir/token" 2>/dev/null
"$BIN" agent --gateway "$GATEWAY" --ca-file "$dir/gw/ca.pem" --cluster edge --token-file "$dir/token" \
  --kubeconfig "$dir/sandbox.kubeconfig" --data-dir "$dir/agent" > "$dir/agent.out" 2>&1 &
AGENT_PID=$!; pids+=($AGENT_PID)
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -k -H "Authorization: Bearer $SESSION" "$GATEWAY/k8s/edge/version")" = 200 ] && break
  sleep 0.1
done

cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
# name|url|pids whose CPU is the path's own
targets=(
  "direct|$GATEWAY/k8s/sb$PATH_Q|$GATEWAY_PID"
  "tunnel|$GATEWAY/k8s/edge$PATH_Q|$GATEWAY_PID $AGENT_PID"
)
for t in "${targets[@]}"; do
  IFS="|" read -r name url _ <<< "$t"
  code=$(curl -s -o /dev/null -w '%{http_code}' -k -H "Authorization: Bearer $SESSION" "$url")
  [ "$code" = 200 ] || { echo "$name answers $code at $url" >&2; cat "$dir/agent.out" >&2; exit 1; }
done

printf '%-8s %5s %10s %10s %10s %14s %14s\n' path conc p50 p99 req/s "gw cpu/req(us)" "agent cpu/req"
for c in $CONCS; do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url _ <<< "$t"
    threads=$(( c < 2 ? 1 : 2 ))
    before=$(cpu_ticks "$GATEWAY_PID"); agent_before=$(cpu_ticks "$AGENT_PID")
    out=$(wrk -t"$threads" -c"$c" -d"${SECS}s" --latency -H "Authorization: Bearer $SESSION" "$url")
    after=$(cpu_ticks "$GATEWAY_PID"); agent_after=$(cpu_ticks "$AGENT_PID")
    p50=$(awk '$1=="50%" {print $2}' <<< "$out")
    p99=$(awk '$1=="99%" {print $2}' <<< "$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    n=$(awk '/requests in/ {print $1}' <<< "$out")
    errs=$(awk '/Non-2xx/ {print $NF}' <<< "$out")
    cpu=$(( n > 0 ? (after - before) * 1000000 / HZ / n : 0 ))
    agent_cpu=$(( n > 0 ? (agent_after - agent_before) * 1000000 / HZ / n : 0 ))
    printf '%-8s %5s %10s %10s %10s %14s %14s %s\n' "$name" "$c" "$p50" "$p99" "$rps" "$cpu" "$agent_cpu" "${errs:+($errs non-2xx)}"
  done
done

# A large body: a 900 KB config map, 4 connections.
python3 -c 'import json; print(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": "dev"}, "data": {"blob": "x" * 900000}}))' > "$dir/big.json"
curl -s -o /dev/null -k -X POST -H "Authorization: Bearer $SESSION" -H "Content-Type: application/json" \
  --data-binary @"$dir/big.json" "$GATEWAY/k8s/sb/api/v1/namespaces/dev/configmaps"
BIG=/api/v1/namespaces/dev/configmaps/big
size=$(curl -s -k -H "Authorization: Bearer $SESSION" "$GATEWAY/k8s/sb$BIG" | wc -c)
echo
printf '%-8s %12s %12s %14s  (body %s bytes, 4 connections)\n' path req/s MB/s "cpu/MB(ms)" "$size"
for name in direct tunnel; do
  cluster=sb; cpupids=$GATEWAY_PID
  [ "$name" = tunnel ] && { cluster=edge; cpupids="$GATEWAY_PID $AGENT_PID"; }
  before=$(cpu_ticks "$cpupids")
  out=$(wrk -t2 -c4 -d"${SECS}s" -H "Authorization: Bearer $SESSION" "$GATEWAY/k8s/$cluster$BIG")
  after=$(cpu_ticks "$cpupids")
  n=$(awk '/requests in/ {print $1}' <<< "$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  printf '%-8s %12s %12s %14s\n' "$name" "$rps" "$(awk -v r="$rps" -v s="$size" 'BEGIN {printf "%.1f", r * s / 1e6}')" \
    "$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$n" -v s="$size" 'BEGIN {printf "%.2f", (n > 0 ? t * 1000 / hz / (n * s / 1e6) : 0)}')"
done

echo
printf '%-40s %10s %10s %10s\n' "" gateway agent sandbox
report() { printf '%-40s %7s MB %7s MB %7s MB\n' "$1" "$(rss_mb "$GATEWAY_PID")" "$(rss_mb "$AGENT_PID")" "$(rss_mb "$SANDBOX_PID")"; }
report "RSS after the runs above"
for name in direct tunnel; do
  cluster=sb; [ "$name" = tunnel ] && cluster=edge
  # Each its own TLS connection to the gateway.
  hold_watches "$GATEWAY/k8s/$cluster" "$SESSION" "$dir/gw/ca.pem" "$N"
  report "RSS, $(cat "$dir/held") of $N watches open, $name"
  release_watches; sleep 3
  report "RSS after they closed"
done
