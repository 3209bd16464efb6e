#!/usr/bin/env bash
# Command overhead, side by side in one run against one upstream (the ztk sandbox): hyperfine
# times `kubectl get po -A` straight at the sandbox, through `ztk kubectl` (a per-run local proxy
# plus the gateway), and plain kubectl through the kubeconfig from `ztk kubeconfig` (exec plugin
# `ztk credential` plus the persistent proxy plus the gateway). Prints hyperfine's table and the
# median each ztk way adds. Target (issue 9): under 15 ms added at the median.
# Usage: bench/command.sh [RUNS]      (default 30; prints numbers, asserts nothing)
# Needs: hyperfine (Debian package), kubectl, python3.
set -euo pipefail
RUNS="${1:-30}"
source "$(dirname "$0")/lib.sh"

start_sandbox
start_gateway
start_proxy

direct="kubectl --kubeconfig $dir/sandbox.kubeconfig get po -A"
ztk_kubectl="$BIN kubectl --cluster sb get po -A"
plain="kubectl --kubeconfig $ZTK_KUBECONFIG --context ztk-sb get po -A"
# Each must work before it is timed.
for cmd in "$direct" "$ztk_kubectl" "$plain"; do
  $cmd >/dev/null || { echo "failed: $cmd" >&2; exit 1; }
done

hyperfine --style basic --warmup 3 --runs "$RUNS" --export-json "$dir/command.json" \
  -n "kubectl (direct)" "$direct" \
  -n "ztk kubectl" "$ztk_kubectl" \
  -n "kubectl via ztk kubeconfig" "$plain"

python3 - "$dir/command.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
base = results["kubectl (direct)"]["median"]
print()
print(f"median: kubectl (direct) {base * 1000:.1f} ms")
for name in ("ztk kubectl", "kubectl via ztk kubeconfig"):
    m = results[name]["median"]
    print(f"median: {name} {m * 1000:.1f} ms, adds {(m - base) * 1000:.1f} ms (target: < 15 ms)")
PY
