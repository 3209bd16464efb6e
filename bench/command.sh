#!/usr/bin/env bash
# Command overhead, side by side in one run against one upstream (the ztk sandbox): times
# `kubectl get po -A` straight at the sandbox, through `ztk kubectl` (a per-run local proxy
# plus the gateway), and plain kubectl through the kubeconfig from `ztk kubeconfig` (exec plugin
# `ztk credential` plus the persistent proxy plus the gateway). Prints each way's median and 10 %
# trimmed mean, and what each ztk way adds to the direct one. Target (issue 9): under 15 ms
# added at the median.
#
# The three run in rounds, in a shuffled order each round, rather than one command RUNS times
# and then the next (hyperfine's way): on a shared 2-vCPU VM the machine's speed drifts by
# tens of milliseconds over a minute, and a block of runs then measures the drift.
# Usage: bench/command.sh [ROUNDS]      (default 100; prints numbers, asserts nothing)
# ZTK_BENCH_COMPARE=/path/to/other/ztk adds a fourth way, `ztk kubectl` of that build (same
# gateway and login), for a before/after in one run.
# Needs: kubectl, python3.
set -euo pipefail
ROUNDS="${1:-100}"
source "$(dirname "$0")/lib.sh"

start_sandbox
start_gateway
start_proxy

compare=()
if [ -n "${ZTK_BENCH_COMPARE:-}" ]; then
  compare=("ztk kubectl, other build" "$ZTK_BENCH_COMPARE kubectl --cluster sb get po -A")
fi
python3 - "$ROUNDS" \
  "kubectl (direct)" "kubectl --kubeconfig $dir/sandbox.kubeconfig get po -A" \
  "ztk kubectl" "$BIN kubectl --cluster sb get po -A" \
  "kubectl via ztk kubeconfig" "kubectl --kubeconfig $ZTK_KUBECONFIG --context ztk-sb get po -A" \
  "${compare[@]}" <<'PY'
import random, shlex, statistics, subprocess, sys, time

rounds = int(sys.argv[1])
ways = list(zip(sys.argv[2::2], [shlex.split(c) for c in sys.argv[3::2]]))
times = {name: [] for name, _ in ways}

def run(argv):
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shlex.join(argv)}\n{done.stderr.decode()}")
    return took * 1000

for name, argv in ways:  # each must work before it is timed; warms caches
    for _ in range(3):
        run(argv)
for _ in range(rounds):
    order = list(ways)
    random.shuffle(order)
    for name, argv in order:
        times[name].append(run(argv))

def trimmed_mean(xs, cut=0.1):
    xs = sorted(xs)
    k = int(len(xs) * cut)
    return statistics.mean(xs[k:len(xs) - k] or xs)

base = ways[0][0]
print(f"{rounds} rounds, each way once per round in a shuffled order")
print(f"{'':28} {'median':>9} {'trimmed':>9} {'min':>8} {'max':>8}")
for name, _ in ways:
    t = times[name]
    print(f"{name:28} {statistics.median(t):7.1f}ms {trimmed_mean(t):7.1f}ms {min(t):6.1f}ms {max(t):6.1f}ms")
print()
for name, _ in ways[1:]:
    added = statistics.median(times[name]) - statistics.median(times[base])
    added_tm = trimmed_mean(times[name]) - trimmed_mean(times[base])
    print(f"median: {name} adds {added:.1f} ms (trimmed mean: {added_tm:.1f} ms; target: < 15 ms)")
PY
