#!/usr/bin/env bash
# README's test command: installs what the tests drive when it is missing (Debian packages, the
# Python kubernetes client), then runs `cargo test` with any arguments given.
# `cargo test` alone works too where these are installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

for k in /usr/bin/kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.{27,28,29,30,31,32,33}; do
  [ -x "$k" ] || { echo "scripts/test.sh: $k is missing; the tests drive the real kubectl (1.27 to 1.33)" >&2; exit 1; }
done

need_apt=()
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
# The TUI end-to-end test drives `ztk audit tui` in tmux.
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# rsyslog receives the syslog sink's messages in the sinks tests (TCP, and TLS with its GnuTLS driver).
[ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || dpkg -s rsyslog-gnutls >/dev/null 2>&1 || need_apt+=(rsyslog-gnutls)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# The console's browser tests drive Debian's chromium with playwright-core (Node.js is on the machine).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The agent's tests put the cluster and the agent in network namespaces of their own (ip netns, veth).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The PostgreSQL backend's tests start throwaway servers of their own (initdb, pg_ctl).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need_apt[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need_apt[@]}"
fi
# The Python kubernetes client, for the test that lists pods through the persistent proxy.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  echo "scripts/test.sh: installing the Python kubernetes client" >&2
  python3 -m pip install --quiet kubernetes 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes
fi

# playwright-core for the browser tests and oidc-provider for the SSO tests, pinned in
# tests/browser/package.json (no browser download: it drives /usr/bin/chromium).
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/oidc-provider ]; then
  echo "scripts/test.sh: installing playwright-core and oidc-provider (tests/browser)" >&2
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error)
fi

exec cargo test "$@"
