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
python3 - "$PROXY_URL" "$CRED" "$dir/client/proxy/ca.pem" "$N" "$dir/held" "$dir/release" <<'PY' &
import asyncio, os, ssl, sys
url, cred, ca, n, held, release = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
host, port = url.split("//")[1].split("/")[0].split(":")
prefix = "/" + url.split("//")[1].split("/", 1)[1]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
ok = 0
async def watch(i, sem):
    global ok
    async with sem:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
        writer.write((f"GET {prefix}/api/v1/pods?watch=true&resourceVersion=0 HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {cred}\r\nUser-Agent: ztk-bench\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " in status:
            ok += 1
    while not os.path.exists(release):
        await asyncio.sleep(0.2)
    writer.close()
async def main():
    sem = asyncio.Semaphore(50)  # at most 50 handshakes at a time
    tasks = [asyncio.create_task(watch(i, sem)) for i in range(n)]
    # Until every watch answered, or none more did for 3 s (failures are reported as the count).
    last, still = -1, 0
    while ok < n and still < 6:
        await asyncio.sleep(0.5)
        still = still + 1 if ok == last else 0
        last = ok
    open(held, "w").write(str(ok))
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
PY
client=$!
for _ in $(seq 600); do [ -s "$dir/held" ] && break; sleep 0.1; done
sleep 1
report "RSS with $(cat "$dir/held" 2>/dev/null || echo '?') of $N watches open"
touch "$dir/release"
wait "$client" || true
sleep 3
report "RSS after the watches closed"
