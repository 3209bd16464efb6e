#!/usr/bin/env bash
# `ztk audit tui` speed with N API-call records (default 1,000,000) in a local store: the time
# to the first screen and to answer each kind of key press, through the real app, query worker
# and renderer (a 120×40 TestBackend instead of a terminal; `ztk audit tui --bench`).
# Usage: bench/tui.sh [N] [DIR]   (DIR keeps the seeded store for reruns; prints numbers, asserts nothing)
set -euo pipefail
N="${1:-1000000}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN="$PWD/target/release/ztk"
if [ -n "${2:-}" ]; then
  dir="$2"; mkdir -p "$dir"
else
  dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
fi
export ZTK_DATA_DIR="$dir" ZTK_CONFIG_DIR="$dir"
if [ ! -s "$dir/audit.db" ]; then
  echo "== seeding $N calls"
  "$BIN" audit seed --count "$N"
fi
echo "== store: $(du -h "$dir/audit.db" | cut -f1)"
"$BIN" audit tui --bench
