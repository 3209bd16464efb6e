#!/usr/bin/env bash
# The web console with N API-call records in the gateway's store (default 1,000,000):
#   - server time of the audit page (first page, filtered pages, a later page) and of the
#     insights page, median of 7 requests on one kept-alive connection; beside it the same
#     listing by `ztk audit list` on the same store (the CLI's path, no HTTP)
#   - the CSV export of every call streamed by the gateway, against `sqlite3 -csv` dumping the
#     same table, and the gateway's peak RSS before and after it (flat memory)
#   - the roll-up of the store at gateway start (what the insights read)
#   - time to first render of the audit page in Chromium (playwright-core from tests/browser)
# Usage: bench/console.sh [N]        (prints numbers; asserts nothing)
set -euo pipefail
N="${1:-1000000}"
cd "$(dirname "$0")/.."
if [ -z "${ZTK_BENCH_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${ZTK_BENCH_BIN:-$PWD/target/release/ztk}"
ROOT="$PWD"
dir="$(mktemp -d)"
gw_pid=""
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
export ZTK_DATA_DIR="$dir/client" ZTK_CONFIG_DIR="$dir/client"
cat > "$dir/gateway.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "gw"
[[clusters]]
name = "sandbox"
sandbox = true
EOF
echo "bench-password-1" | "$BIN" gateway user add root --group ztk-admins --password-stdin --config "$dir/gateway.toml" >/dev/null
"$BIN" gateway role bind cluster-admin --user root --config "$dir/gateway.toml" >/dev/null

echo "== seeding $N calls into the gateway's store"
/usr/bin/time -f "seed: %es wall" "$BIN" audit seed --count "$N" --db "$dir/gw/audit.db" >/dev/null
sqlite3 "$dir/gw/audit.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
echo "store: $(du -h "$dir/gw/audit.db" | cut -f1)"

"$BIN" gateway serve --config "$dir/gateway.toml" > "$dir/gw.log" 2>&1 &
gw_pid=$!
start=$(date +%s.%N)
for _ in $(seq 100); do grep -q 'listening on' "$dir/gw.log" && break; sleep 0.1; done
url="$(sed -n 's/^ztk gateway: listening on //p' "$dir/gw.log")"
last=$(sqlite3 "$dir/gw/audit.db" "SELECT last FROM sequence")
for _ in $(seq 600); do
  rolled=$(sqlite3 "$dir/gw/audit.db" "SELECT through_seq FROM rollup_state" 2>/dev/null || echo 0)
  [ "$rolled" -ge "$last" ] 2>/dev/null && break
  sleep 0.1
done
python3 -c "import sys,time; print(f'roll-up of the store at start: {time.time()-float(sys.argv[1]):.1f}s (through seq {sys.argv[2]})')" "$start" "$rolled"

python3 - "$url" "$dir/gw/ca.pem" "$BIN" "$gw_pid" "$dir" <<'PY'
import http.client, json, ssl, statistics, subprocess, sys, time
url, ca, bin, pid, d = sys.argv[1:6]
host, port = url.removeprefix("https://").split(":")
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
conn.request("POST", "/ztk/v1/login", json.dumps({"user": "root", "password": "bench-password-1"}), {"content-type": "application/json"})
token = json.loads(conn.getresponse().read())["token"]
cookie = {"cookie": f"__Host-ztk={token}"}

def get(path):
    global conn
    for attempt in range(2):
        try:
            t = time.perf_counter()
            conn.request("GET", path, headers=cookie)
            r = conn.getresponse()
            body = r.read()
            return (time.perf_counter() - t) * 1000, r.status, body
        except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
            # The gateway closes a connection idle for longer than its header-read timeout
            # (10 s) while the CLI runs: reconnect, untimed, and time the request again.
            conn = http.client.HTTPSConnection(host, int(port), context=ctx)
            conn.connect()
    raise RuntimeError("the gateway closed the connection twice")

def hwm():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            yield line.split()[1]

_, _, first = get("/audit/kubectl?view=calls")
import re
m = re.search(rb'href="(/audit/kubectl\?view=calls&amp;after=[^"]+)"', first)
later = m.group(1).decode().replace("&amp;", "&") if m else None
pages = [
    ("/audit/kubectl", ["--view", "commands"]),
    ("/audit/kubectl?view=calls", ["--view", "calls"]),
    ("/audit/kubectl?view=calls&namespace=payments&verb=delete", ["--view", "calls", "--namespace", "payments", "--verb", "delete"]),
    ("/audit/kubectl?view=calls&user=alice&status=4xx&since=7d", ["--view", "calls", "--user", "alice", "--status", "4xx", "--since", "7d"]),
    ("/audit/kubectl?view=commands&user=bob", ["--view", "commands", "--user", "bob"]),
]
if later:
    pages.append((later, None))
print("== audit page: server time (request to last byte on a kept-alive TLS connection, median of 7)")
print(f"{'console page':72} {'ms':>8} {'ztk audit list (CLI, same store)':>34}")
for path, cli in pages:
    times = []
    for _ in range(7):
        ms, status, _ = get(path)
        assert status == 200, (path, status)
        times.append(ms)
    cli_ms = ""
    if cli:
        ct = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([bin, "audit", "list", "-o", "ndjson", "--limit", "100", *cli], check=True, stdout=subprocess.DEVNULL, env={"ZTK_DATA_DIR": d + "/gw", "ZTK_CONFIG_DIR": d + "/client", "PATH": "/usr/bin:/bin"})
            ct.append((time.perf_counter() - t) * 1000)
        cli_ms = f"{statistics.median(ct):.1f}"
    shown = path if len(path) <= 72 else path[:69] + "..."
    print(f"{shown:72} {statistics.median(times):8.1f} {cli_ms:>34}")
print("== insights page (rollups), median of 5")
for path in ["/audit/insights?since=24h", "/audit/insights?since=7d&by=user", "/audit/insights?since=30d&by=resource&interval=1d", "/audit/insights?since=1h&by=verb&command=delete"]:
    times = []
    for _ in range(5):
        ms, status, _ = get(path)
        assert status == 200, (path, status)
        times.append(ms)
    print(f"{path:72} {statistics.median(times):8.1f}")
print("== export of every call")
before = list(hwm())
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
t = time.perf_counter()
conn.request("GET", "/audit/kubectl/export.csv?view=calls", headers=cookie)
r = conn.getresponse()
size = 0; lines = 0
with open(d + "/export.csv", "wb") as f:
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        size += len(chunk); lines += chunk.count(b"\n")
        f.write(chunk)
export_s = time.perf_counter() - t
after = list(hwm())
t = time.perf_counter()
with open(d + "/sqlite.csv", "wb") as f:
    subprocess.run(["sqlite3", "-csv", "-header", d + "/gw/audit.db", "SELECT * FROM api_calls ORDER BY time_us DESC"], stdout=f, check=True)
sqlite_s = time.perf_counter() - t
print(f"console export:  {export_s:.2f}s, {lines} lines, {size / 1e6:.0f} MB")
print(f"sqlite3 -csv:    {sqlite_s:.2f}s")
print(f"ratio export/sqlite3: {export_s / sqlite_s:.2f}x")
print(f"gateway memory (kB): peak before {before[0]}, peak after {after[0]}, resident after {after[1]}")
PY

if [ -d "$ROOT/tests/browser/node_modules/playwright-core" ] && [ -x /usr/bin/chromium ]; then
  echo "== time to first render in Chromium (audit page, API calls; median of 5 loads)"
  (cd "$ROOT/tests/browser" && node --input-type=module - "$url" <<'JS'
import { chromium } from 'playwright-core';
const url = process.argv[2];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
const page = await ctx.newPage();
await page.goto(url + '/signin');
await page.getByLabel('Username').fill('root');
await page.getByLabel('Password').fill('bench-password-1');
await page.getByRole('button', { name: 'Sign in' }).click();
await page.waitForURL('**/audit/kubectl');
const rows = [];
for (let i = 0; i < 5; i++) {
  await page.goto(url + '/audit/kubectl?view=calls', { waitUntil: 'load' });
  rows.push(await page.evaluate(async () => {
    const n = performance.getEntriesByType('navigation')[0];
    const fcp = await new Promise((resolve) => {
      new PerformanceObserver((list) => {
        const e = list.getEntries().find((x) => x.name === 'first-contentful-paint');
        if (e) resolve(e.startTime);
      }).observe({ type: 'paint', buffered: true });
      setTimeout(() => resolve(NaN), 2000);
    });
    return { ttfb: n.responseStart - n.startTime, fcp, load: n.loadEventEnd - n.startTime };
  }));
}
const med = (k) => rows.map((r) => r[k]).sort((a, b) => a - b)[2].toFixed(1);
console.log(`time to first byte ${med('ttfb')} ms, first contentful paint ${med('fcp')} ms, load ${med('load')} ms`);
await browser.close();
JS
  )
else
  echo "(time to first render skipped: needs /usr/bin/chromium and tests/browser/node_modules; scripts/test.sh installs both)"
fi
