#!/usr/bin/env bash
# Memory of both hops: the persistent local proxy idle (target: under 15 MB RSS), then N
# concurrent watches held open through the local proxy and the gateway (default 1,000; targets:
# proxy under 64 MB, gateway under 128 MB RSS). Each watch is its own TLS connection to the
# proxy (the worst case for the proxy; kubectl would multiplex them over HTTP/2), relayed to the
# gateway and on to the sandbox. Prints RSS; asserts nothing.
# Usage: bench/streams.sh [N]
# Needs: python3, kubectl.
set -euo pipefail
N="${1:-1000}"
source "$(dirname "$0")/lib.sh"
# Every watch takes a descriptor in the client and the proxy.
ulimit -n "$(( N * 2 + 1024 > $(ulimit -Hn) ? $(ulimit -Hn) : N * 2 + 1024 ))"

start_sandbox
start_gateway
start_proxy

sleep 2
printf '%-44s %8s %8s %8s\n' "" proxy gateway sandbox
report() { printf '%-44s %6s MB %5s MB %5s MB\n' "$1" "$(rss_mb "$PROXY_PID")" "$(rss_mb "$GATEWAY_PID")" "$(rss_mb "$SANDBOX_PID")"; }
report "RSS idle (after one kubectl call)"

# N watches of pods in all namespaces, held open; RSS is read while all are open.
hold_watches "$PROXY_URL" "$CRED" "$dir/client/proxy/ca.pem" "$N"
report "RSS with $(cat "$dir/held" 2>/dev/null || echo '?') of $N watches open"
release_watches
sleep 3
report "RSS after the watches closed"
