#!/usr/bin/env bash
# Kernel cost per event, daemon CPU and event-to-table latency under a fixed connection churn.
#
#   xtask/scripts/ringbuf_cost.sh [BIN] [CONNS_PER_S] [SECONDS]
#
# Starts one tcpwatch daemon (BIN, default target/debug/tcpwatch), makes a namespace `rbcost`
# with a loopback churn of CONNS_PER_S connections per second (default 1000: about 10 000
# state changes/s) for SECONDS (default 15), and prints per tcpwatch program the kernel's
# run_time_ns/run_cnt (bpf_stats) and recursion_misses over the churn, the daemon's CPU
# (utime+stime from /proc/PID/stat) and 20 event-to-table latencies (connect on root-namespace
# loopback, poll /api/v1/connections every 2 ms). Bounded; undoes what it made (namespace,
# daemon it started, pin directory, bpf_stats). Needs root.
set -euo pipefail
BIN=${1:-target/debug/tcpwatch}
RATE=${2:-1000}
SECS=${3:-15}
NS=rbcost-$$
PIN=/sys/fs/bpf/rbcost-$$
PORT=$((20000 + $$ % 20000))
OLD_STATS=$(cat /proc/sys/kernel/bpf_stats_enabled)
DPID=
cleanup() {
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$PIN"
    echo "$OLD_STATS" >/proc/sys/kernel/bpf_stats_enabled
}
trap cleanup EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo 1 >/proc/sys/kernel/bpf_stats_enabled
ip netns add "$NS"
ip -n "$NS" link set lo up

ids() { bpftool prog show -j | python3 -c 'import json,sys; print(" ".join(str(p["id"]) for p in json.load(sys.stdin)))'; }
BEFORE_IDS=$(ids)
TCPWATCH_LOG=warn "$BIN" daemon --pin-dir "$PIN" --set "daemon.listen=\"127.0.0.1:$PORT\"" \
    >/dev/null 2>&1 &
DPID=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "daemon not ready" >&2; exit 1; }
sleep 2

# The daemon's programs: those loaded since it started (bpftool here lists no pids). Another
# daemon started in the same seconds would show up twice by name: the script refuses then.
NEW_IDS=$(python3 -c 'import sys; b=set(sys.argv[1].split()); print(" ".join(i for i in sys.argv[2].split() if i not in b))' "$BEFORE_IDS" "$(ids)")
progs() { # id name run_time_ns run_cnt recursion_misses, for the daemon's programs
    bpftool prog show -j | python3 -c '
import json, sys
ids = set(sys.argv[1].split())
names = []
for p in json.load(sys.stdin):
    if str(p["id"]) in ids:
        names.append(p.get("name", "?"))
        print(p["id"], p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0),
              p.get("recursion_misses", 0))
if len(names) != len(set(names)):
    sys.exit("another daemon loaded programs at the same time: run again")' "$NEW_IDS"
}
cpu() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }

B=$(progs)
C0=$(cpu)
T0=$(date +%s.%N)
ip netns exec "$NS" python3 - "$RATE" "$SECS" <<'EOF'
import socket, sys, threading, time
rate, secs = float(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(1024); addr = srv.getsockname()
stop = time.monotonic() + secs
def serve():
    srv.settimeout(0.2)
    while time.monotonic() < stop + 1:
        try: c, _ = srv.accept()
        except socket.timeout: continue
        c.settimeout(2)
        try: c.sendall(c.recv(16))
        except OSError: pass
        c.close()  # the server closes first: TIME_WAIT stays on the listener's port
threading.Thread(target=serve, daemon=True).start()
n = err = 0; t0 = time.monotonic()
while time.monotonic() < stop:
    due = t0 + n / rate
    d = due - time.monotonic()
    if d > 0: time.sleep(d)
    try:
        c = socket.create_connection(addr, timeout=2); c.sendall(b"GET /tcpwatch!\r\n")
        c.recv(16); c.recv(16); c.close()
    except OSError: err += 1
    n += 1
el = time.monotonic() - t0
print(f"churn: {n} connections in {el:.1f} s = {n/el:.0f}/s, {err} errors")
EOF
T1=$(date +%s.%N)
C1=$(cpu)
A=$(progs)
HZ=$(getconf CLK_TCK)
echo "daemon CPU: $(python3 -c "print(f'{($C1-$C0)/$HZ/($T1-$T0)*100:.2f}')") % of a core over $(python3 -c "print(f'{$T1-$T0:.1f}')") s"
python3 - "$B" "$A" <<'EOF'
import sys
def parse(s):
    return {l.split()[0]: l.split() for l in s.splitlines() if l.strip()}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
print(f"{'program':<18}{'events':>10}{'ns/event':>10}{'rec.misses':>12}")
for k, v in a.items():
    o = b.get(k, [k, v[1], 0, 0, 0])
    ns, cnt, miss = int(v[2]) - int(o[2]), int(v[3]) - int(o[3]), int(v[4]) - int(o[4])
    if cnt:
        print(f"{v[1]:<18}{cnt:>10}{ns / cnt:>10.0f}{miss:>12}")
EOF
python3 - "$PORT" <<'EOF'
import json, socket, sys, time, urllib.request
port = sys.argv[1]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
lat, keep = [], []
for _ in range(20):
    t0 = time.monotonic()
    c = socket.create_connection(srv.getsockname()); keep.append(c)
    cport = c.getsockname()[1]
    while time.monotonic() - t0 < 2:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/connections?port={cport}") as r:
            if json.load(r)["connections"]:
                break
        time.sleep(0.002)
    lat.append((time.monotonic() - t0) * 1000)
    time.sleep(0.05)
lat.sort()
print(f"event-to-table latency ms: median {lat[10]:.1f}, max {lat[-1]:.1f}, all {[round(x) for x in lat]}")
EOF
