#!/usr/bin/env bash
# Installs ztk: the binary (cargo install, into ~/.cargo/bin), shell completions and man pages.
#   ./install.sh            install for this user
#   PREFIX=/usr/local ./install.sh   put completions and man pages under PREFIX instead of ~/.local
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1; then
  echo "install.sh: cargo is needed (https://rustup.rs)" >&2
  exit 1
fi

cargo install --path . --locked --force --quiet
bin="$(command -v ztk || echo "${CARGO_HOME:-$HOME/.cargo}/bin/ztk")"

share="${PREFIX:-$HOME/.local}/share"
install -d "$share/bash-completion/completions" "$share/zsh/site-functions" "$share/fish/vendor_completions.d" "$share/man/man1"
install -m 0644 completions/ztk.bash "$share/bash-completion/completions/ztk"
install -m 0644 completions/_ztk "$share/zsh/site-functions/_ztk"
install -m 0644 completions/ztk.fish "$share/fish/vendor_completions.d/ztk.fish"
install -m 0644 man/*.1 "$share/man/man1/"

echo "installed $bin ($("$bin" --version))"
echo "completions and man pages under $share"
case ":$PATH:" in
  *":$(dirname "$bin"):"*) ;;
  *) echo "note: add $(dirname "$bin") to your PATH" ;;
esac
