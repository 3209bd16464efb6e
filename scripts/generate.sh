#!/usr/bin/env bash
# Regenerates the checked-in completions and man pages from the clap definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/ztk
mkdir -p completions man
"$bin" completions bash > completions/ztk.bash
"$bin" completions zsh > completions/_ztk
"$bin" completions fish > completions/ztk.fish
rm -f man/*.1
"$bin" man man
echo "generated completions/ and man/"
