#!/usr/bin/env bash
# Kernel cost per event of tcpwatch's programs next to a counting reference, same hooks, same
# window, same load.
#
#   xtask/scripts/kernel_cost.sh [BIN] [SECONDS] [LOAD]
#
# Starts one tcpwatch daemon (BIN, default target/debug/tcpwatch) and a bpftrace reference that
# only counts (`@c = count()`) on the same tracepoints, makes a namespace with LOAD (default
# `churn`) for SECONDS (default 10), and prints per program the kernel's run_time_ns/run_cnt
# (bpf_stats) and recursion_misses over that window.
#   churn: 2 client processes connect to a loopback server as fast as they can, send 16 bytes,
#          read them back and close; every 16th closes with SO_LINGER 0 (a reset), like the
#          bench's churn (ABORT_EVERY=N in the environment: every Nth).
#   bulk:  one loopback transfer with 1 % of the segments dropped (nft numgen), so that
#          tcp_retransmit_skb runs.
# Bounded; undoes what it made (namespace, processes it started, pin directory, bpf_stats).
# PERF=FILE in the environment: also a system-wide `perf record -g` of the load window.
# Needs root and bpftrace.
set -euo pipefail
BIN=${1:-target/debug/tcpwatch}
SECS=${2:-10}
LOAD=${3:-churn}
ABORT_EVERY=${ABORT_EVERY:-16}
NS=kcost-$$
PIN=/sys/fs/bpf/kcost-$$
PORT=$((20000 + $$ % 20000))
OLD_STATS=$(cat /proc/sys/kernel/bpf_stats_enabled)
DPID=
RPID=
cleanup() {
    [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null || true
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$PIN"
    echo "$OLD_STATS" >/proc/sys/kernel/bpf_stats_enabled
}
trap cleanup EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
echo 1 >/proc/sys/kernel/bpf_stats_enabled
ip netns add "$NS"
ip -n "$NS" link set lo up

ids() { bpftool prog show -j | python3 -c 'import json,sys; print(" ".join(str(p["id"]) for p in json.load(sys.stdin)))'; }
new_ids() { python3 -c 'import sys; b=set(sys.argv[1].split()); print(" ".join(i for i in sys.argv[2].split() if i not in b))' "$1" "$(ids)"; }

TCPWATCH_LOG=warn "$BIN" daemon --pin-dir "$PIN" --set "daemon.listen=\"127.0.0.1:$PORT\"" \
    >/dev/null 2>&1 &
DPID=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "daemon not ready" >&2; exit 1; }
sleep 1
# The daemon's programs, as it lists them (other daemons may load programs meanwhile).
TW_IDS=$(curl -sf "http://127.0.0.1:$PORT/api/v1/status" | python3 -c '
import json, sys; print(" ".join(str(p["id"]) for p in json.load(sys.stdin)["programs"]))')

BEFORE=$(ids)
bpftrace -e 'tracepoint:sock:inet_sock_set_state { @c0 = count(); }
tracepoint:tcp:tcp_retransmit_skb { @c1 = count(); }
tracepoint:tcp:tcp_send_reset { @c2 = count(); }
tracepoint:tcp:tcp_receive_reset { @c3 = count(); }' >/dev/null 2>&1 &
RPID=$!
REF_IDS=
for _ in $(seq 1 100); do
    sleep 0.2
    # bpftrace's programs: those loaded since it started, named after its probes.
    REF_IDS=$(bpftool prog show -j | python3 -c '
import json, sys
new = set(sys.argv[1].split())
print(" ".join(str(p["id"]) for p in json.load(sys.stdin)
      if str(p["id"]) in new and p.get("name", "").startswith(("inet_sock", "tcp_"))))' \
        "$(new_ids "$BEFORE")")
    [ "$(echo "$REF_IDS" | wc -w)" -ge 4 ] && break
done
[ "$(echo "$REF_IDS" | wc -w)" -eq 4 ] || {
    echo "bpftrace reference not attached, or another bpftrace started at once" >&2
    exit 1
}

progs() { # id name run_time_ns run_cnt recursion_misses, for the programs of $1 (tagged $2)
    bpftool prog show -j | python3 -c '
import json, sys
ids, tag = set(sys.argv[1].split()), sys.argv[2]
for p in json.load(sys.stdin):
    if str(p["id"]) in ids:
        print(p["id"], tag + p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0),
              p.get("recursion_misses", 0))' "$1" "$2"
}
snap() { progs "$TW_IDS" ""; progs "$REF_IDS" "ref:"; }

B=$(snap)
if [ -n "${PERF:-}" ]; then # PERF=FILE: a system-wide profile of the load window
    perf record -a -g -F 4000 -o "$PERF" >/dev/null 2>&1 &
    PPID_=$!
fi
case "$LOAD" in
churn)
    ip netns exec "$NS" python3 - "$SECS" "$ABORT_EVERY" <<'EOF'
import os, socket, struct, sys, time
secs, abort_every = float(sys.argv[1]), int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(4096); addr = srv.getsockname()
stop = time.monotonic() + secs
kids = []
for w in range(2):  # servers
    pid = os.fork()
    if pid == 0:
        srv.settimeout(0.2)
        while time.monotonic() < stop + 1:
            try: c, _ = srv.accept()
            except (socket.timeout, OSError): continue
            c.settimeout(2)
            try:
                c.sendall(c.recv(16))
                while c.recv(64): pass
            except OSError: pass
            c.close()
        os._exit(0)
    kids.append(pid)
for k in range(2):  # clients
    pid = os.fork()
    if pid == 0:
        n = err = 0
        while time.monotonic() < stop:
            try:
                c = socket.create_connection(addr, timeout=2); c.sendall(b"GET /tcpwatch!\r\n")
                c.recv(16)
                if n % abort_every == 0:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
            except OSError: err += 1
            n += 1
        print(f"client {k}: {n} connections, {err} errors", flush=True); os._exit(0)
    kids.append(pid)
for pid in kids: os.waitpid(pid, 0)
EOF
    ;;
bulk)
    ip netns exec "$NS" nft -f - <<'EOF'
add table inet kcost
add chain inet kcost in { type filter hook input priority 0; }
add rule inet kcost in tcp dport 5999 numgen random mod 100 == 0 drop
EOF
    ip netns exec "$NS" python3 - "$SECS" <<'EOF'
import os, socket, sys, time
secs = float(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5999)); srv.listen(8)
if os.fork() == 0:
    c, _ = srv.accept()
    while c.recv(1 << 16): pass
    os._exit(0)
c = socket.create_connection(("127.0.0.1", 5999)); buf = b"x" * (1 << 16)
stop = time.monotonic() + secs
while time.monotonic() < stop: c.sendall(buf)
c.close(); os.wait()
EOF
    ;;
*) echo "unknown load $LOAD" >&2; exit 2 ;;
esac
A=$(snap)
if [ -n "${PERF:-}" ]; then kill -INT "$PPID_"; wait "$PPID_" || true; fi
python3 - "$B" "$A" <<'EOF'
import sys
def parse(s):
    return {l.split()[0]: l.split() for l in s.splitlines() if l.strip()}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
print(f"{'program':<30}{'events':>10}{'ns/event':>10}{'rec.misses':>12}")
for k, v in a.items():
    o = b.get(k, [k, v[1], 0, 0, 0])
    ns, cnt, miss = int(v[2]) - int(o[2]), int(v[3]) - int(o[3]), int(v[4]) - int(o[4])
    if cnt:
        print(f"{v[1]:<30}{cnt:>10}{ns / cnt:>10.0f}{miss:>12}")
EOF
