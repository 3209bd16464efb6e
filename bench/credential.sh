#!/usr/bin/env bash
# Measures `ztk credential` as kubectl runs it: a gateway with the sandbox and a login in a temp
# dir, the persistent proxy already running, then N plugin runs whose parent is named `kubectl`
# (so each records a command, the full path). Prints min/median/p90/max in milliseconds.
# Target (issue 9): under 5 ms median.
# Usage: bench/credential.sh [N] [path/to/ztk]   (default: 200 runs; a release build of this tree)
set -euo pipefail
n=${1:-200}
if [ -n "${2:-}" ]; then
  ztk=$(realpath "$2")
else
  cd "$(dirname "$0")/.."
  cargo build --release --quiet
  ztk=$PWD/target/release/ztk
fi
dir=$(mktemp -d)
# The gateway is waited for before its directory goes: it writes there as it shuts down.
gw=""
trap 'ZTK_DATA_DIR=$dir/data ZTK_CONFIG_DIR=$dir/cfg "$ztk" proxy stop >/dev/null 2>&1 || true; if [ -n "$gw" ]; then kill $gw 2>/dev/null; wait $gw 2>/dev/null; fi; rm -rf "$dir"' EXIT
export ZTK_DATA_DIR=$dir/data ZTK_CONFIG_DIR=$dir/cfg ZTK_TOKEN_STORE=file HOME=$dir/home
printf 'listen = "127.0.0.1:0"\ndata_dir = "%s/gw"\n[[clusters]]\nname = "sandbox"\nsandbox = true\n' "$dir" > "$dir/gw.toml"
echo "bench-password-1234" | "$ztk" gateway user add bench --password-stdin --config "$dir/gw.toml" >/dev/null
"$ztk" gateway serve --config "$dir/gw.toml" > "$dir/gw.log" 2>&1 &
gw=$!
for _ in $(seq 100); do grep -q 'listening on' "$dir/gw.log" && break; sleep 0.05; done
url=$(grep -o 'https://[^ ]*' "$dir/gw.log" | head -1)
echo "bench-password-1234" | "$ztk" login --gateway "$url" --ca-file "$dir/gw/ca.pem" --user bench --password-stdin >/dev/null
"$ztk" kubeconfig --output "$dir/kubeconfig" >/dev/null
"$ztk" credential --cluster sandbox >/dev/null # starts the proxy: not part of the measurement
# The loop runs in a bash whose argv[0] is `kubectl`, as the plugin's parent would be.
(exec -a kubectl bash -c '
  ztk=$1; n=$2; times=()
  for ((i = 0; i < n; i++)); do
    s=$EPOCHREALTIME
    "$ztk" credential --cluster sandbox >/dev/null
    e=$EPOCHREALTIME
    times+=("$(( (${e/./} - ${s/./}) ))")
  done
  printf "%s\n" "${times[@]}" | sort -n | awk -v n="$n" -v ztk="$ztk" "
    { t[NR] = \$1 }
    END {
      printf \"ztk credential (%s), %d runs: min %.2f ms, median %.2f ms, p90 %.2f ms, max %.2f ms\n\",
        ztk, n, t[1]/1000, t[int((n+1)/2)]/1000, t[int(n*0.9)]/1000, t[n]/1000
    }"
' kubectl "$ztk" "$n")
