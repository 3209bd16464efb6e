#!/usr/bin/env bash
# User-space instructions per relayed call, for the gateway and for the persistent local proxy,
# counted by valgrind (callgrind): a measure that does not move with the machine's load, for
# comparing two builds where CPU time per call on a shared 2-vCPU VM moves by tens of percent
# from one run to the next. Each hop runs under valgrind twice, serving N1 and then N2 calls
# (one keep-alive connection, one call at a time); per call = (Ir(N2) − Ir(N1)) / (N2 − N1), so
# start-up and shutdown cancel out. The kernel's share (about 40 % of each hop's CPU) is not in
# these counts, and valgrind's virtual CPU lacks SHA-NI and AVX-512, so hashing (the audit chain,
# the credential's HMAC) and TLS crypto take slower code paths than on the real CPU: read the
# counts as a comparison between builds, not as a profile. Usage: bench/instructions.sh [N1] [N2]    (default 500 2500)
# Needs: valgrind (Debian package), python3, openssl, kubectl. Prints; asserts nothing.
set -euo pipefail
N1="${1:-500}"
N2="${2:-2500}"
source "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || { echo "bench/instructions.sh needs valgrind (apt-get install valgrind)" >&2; exit 1; }

start_sandbox
start_gateway
start_proxy

# N keep-alive GETs of the pod list on one connection; prints how many answered 200.
cat > "$dir/get.py" <<'PY'
import http.client, ssl, sys, urllib.parse
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlsplit(url)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=120)
path = u.path + ("?" + u.query if u.query else "")
ok = 0
for _ in range(n):
    conn.request("GET", path, headers={"Authorization": "Bearer " + token})
    resp = conn.getresponse(); resp.read()
    ok += resp.status == 200
print(ok)
PY

# Stops a process started under valgrind the way a user stops it (SIGINT), waits for its
# shutdown, and prints the instructions callgrind counted.
stop_and_count() {
  local pid=$1 out=$2
  kill -INT "$pid"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  awk '/Collected :/ {print $NF}' "$out"
}

# A copy of the gateway (same users, sessions and cluster) under callgrind, serving $1 calls.
gateway_ir() {
  local n=$1 w="$dir/cg-gw-$1"
  mkdir -p "$w"; cp -r "$dir/gw" "$w/gw"
  sed "s|^data_dir = .*|data_dir = \"$w/gw\"|" "$dir/gateway.toml" > "$w/gateway.toml"
  valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$BIN" gateway serve --config "$w/gateway.toml" > "$w/out" 2>&1 &
  local pid=$!
  # A server under valgrind starts ~50 times slower: a minute's patience.
  local url; url=$(wait_line "$w/out" "listening on" 600)
  local ok; ok=$(python3 "$dir/get.py" "$url/k8s/sb$PATH_Q" "$SESSION" "$n")
  [ "$ok" = "$n" ] || { echo "the gateway answered $ok of $n calls with 200" >&2; cat "$w/out" >&2; exit 1; }
  stop_and_count "$pid" "$w/out"
}

# The persistent proxy itself, restarted in the foreground under callgrind, serving $1 calls
# (relayed to the real gateway, recorded, and shipped).
proxy_ir() {
  local n=$1 w="$dir/cg-px-$1"
  mkdir -p "$w"
  "$BIN" proxy stop >/dev/null 2>&1 || true
  for _ in $(seq 100); do "$BIN" proxy status >/dev/null 2>&1 || break; sleep 0.1; done
  valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$BIN" proxy > "$w/out" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do curl -sk -o /dev/null "$PROXY_URL/version" && break; sleep 0.1; done
  local ok; ok=$(python3 "$dir/get.py" "$PROXY_URL$PATH_Q" "$CRED" "$n")
  [ "$ok" = "$n" ] || { echo "the proxy answered $ok of $n calls with 200" >&2; cat "$w/out" >&2; exit 1; }
  stop_and_count "$pid" "$w/out"
}

printf '%-14s %14s %14s %16s\n' hop "Ir ($N1 calls)" "Ir ($N2 calls)" "Ir per call"
for hop in gateway proxy; do
  a=$("${hop}_ir" "$N1"); b=$("${hop}_ir" "$N2")
  printf '%-14s %14s %14s %16s\n' "$hop" "$a" "$b" "$(( (b - a) / (N2 - N1) ))"
done
