#!/usr/bin/env bash
# kubectl in the browser against kubectl in a terminal, side by side in one run against one
# upstream (the ztk sandbox, through its kubeconfig): the time from Enter to the first byte of
# output, and to the end, of `kubectl get pods -n dev`
#   - in the web shell (a WebSocket client speaking the console's protocol: the gateway checks
#     the line, mints the command's credential, starts the confined kubectl on a terminal,
#     kubectl calls back through the gateway's shell port)
#   - through `ztk kubectl` (a per-run local proxy plus the gateway)
#   - kubectl straight at the sandbox (the floor)
# in rounds, in a shuffled order each round. Prints medians and what each adds to the direct
# way. Usage: bench/shell.sh [ROUNDS]   (default 30; prints numbers, asserts nothing)
# Needs: kubectl, python3.
set -euo pipefail
ROUNDS="${1:-30}"
source "$(dirname "$0")/lib.sh"

start_sandbox
start_gateway

python3 - "$ROUNDS" "$GATEWAY" "$dir/gw/ca.pem" "$SESSION" "$BIN" "$dir/sandbox.kubeconfig" <<'PY'
import base64, json, os, random, socket, ssl, statistics, subprocess, sys, time
rounds, gateway, ca, session, bin, direct_kc = int(sys.argv[1]), *sys.argv[2:7]
host, port = gateway.removeprefix("https://").rstrip("/").split(":")
LINE = "kubectl get pods -n dev"

class Shell:
    """A minimal WebSocket client (RFC 6455) for the console's shell socket."""
    def __init__(self):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(["http/1.1"])
        self.s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname="localhost")
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /shell/socket?cluster=sb&namespace=dev HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Origin: https://{host}:{port}\r\nCookie: __Host-ztk={session}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        import hmac, hashlib
        csrf = hmac.new(session.encode(), b"ztk console csrf v1", hashlib.sha256).hexdigest()
        self.send({"t": "hello", "csrf": csrf, "cols": 120, "rows": 40})
        while self.recv()[1].get("t") != "ready":
            pass
    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    def exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "closed"
            buf += chunk
        return buf
    def recv(self):
        b0, b1 = self.exact(2)
        n = b1 & 0x7F
        if n == 126: n = int.from_bytes(self.exact(2), "big")
        elif n == 127: n = int.from_bytes(self.exact(8), "big")
        payload = self.exact(n)
        if b0 & 0x0F == 1:
            return None, json.loads(payload)
        return payload, {}

shell = Shell()

def web():
    t = time.perf_counter()
    shell.send({"t": "run", "line": LINE})
    first = None
    out = b""
    while True:
        data, event = shell.recv()
        if data:
            if first is None: first = time.perf_counter() - t
            out += data
        if event.get("t") == "exit":
            assert event.get("code") == 0 and b"web-" in out, (event, out[:200])
            return first, time.perf_counter() - t
        if event.get("t") in ("refused", "closed"):
            raise SystemExit(f"web shell: {event}")

def cli(argv):
    env = dict(os.environ)
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first_byte = p.stdout.read(1)
    first = time.perf_counter() - t
    rest = p.stdout.read()
    p.wait()
    assert p.returncode == 0 and b"web-" in first_byte + rest, p.stderr.read()
    return first, time.perf_counter() - t

ways = {
    "web shell (browser protocol)": web,
    "ztk kubectl": lambda: cli([bin, "kubectl", "--cluster", "sb", "get", "pods", "-n", "dev"]),
    "kubectl (direct)": lambda: cli(["kubectl", "--kubeconfig", direct_kc, "get", "pods", "-n", "dev"]),
}
for f in ways.values():
    f()  # warm: discovery caches, the gateway's connections
first = {k: [] for k in ways}
total = {k: [] for k in ways}
for _ in range(rounds):
    order = list(ways)
    random.shuffle(order)
    for k in order:
        a, b = ways[k]()
        first[k].append(a * 1000)
        total[k].append(b * 1000)
base_first = statistics.median(first["kubectl (direct)"])
base_total = statistics.median(total["kubectl (direct)"])
print(f"== Enter to first byte / to the end of `{LINE}`, {rounds} rounds (ms, median)")
print(f"{'way':32} {'first byte':>11} {'end':>8} {'first byte vs direct':>21}")
for k in ways:
    f, t = statistics.median(first[k]), statistics.median(total[k])
    print(f"{k:32} {f:11.1f} {t:8.1f} {f / base_first:20.2f}x")
w, z = statistics.median(first["web shell (browser protocol)"]), statistics.median(first["ztk kubectl"])
print(f"web shell / ztk kubectl, first byte: {w / z:.2f}x")
PY
