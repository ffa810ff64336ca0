#!/usr/bin/env bash
# The daemon's own CPU under a fixed connection churn, binaries compared in alternation.
#
#   xtask/scripts/churn_cpu.sh [-r ROUNDS] [-s SECONDS] CONNS_PER_S BIN [BIN...]
#
# For each round, for each BIN (the order swapped every round): makes a fresh namespace, starts
# `BIN daemon --no-pin` on a free loopback port, waits for /readyz plus 3 s, then runs in the
# namespace the bench's kind of churn (xtask/src/bench/load.rs: the client connects, sends 16
# bytes, reads 16 back and closes first, every 16th connection closed with SO_LINGER 0) at
# CONNS_PER_S connections per second (0: no load, the idle floor) for SECONDS (default 20), and
# prints the daemon's CPU (utime+stime of /proc/PID/stat over the load) and the state changes
# per second the daemon itself counted (`tcpwatch_kernel_state_changes_total`, read outside
# the measured window). About 10 state changes per connection: 1000 conn/s is ~10 000/s.
# With WARM=SECONDS, the daemon first sees that long a churn as fast as it goes with every
# connection reset (not measured): it fills the LRU maps of resets per port and endpoint the
# way minutes of churn on a node do (16 384 entries each). With PERF=DIR, also `perf record --call-graph dwarf` of the daemon over the load into
# DIR/perf-<bin>-<round>.data.
#
# Isolated from the rest of the host: the daemon sweeps every namespace it can find, so each
# measurement runs (daemon, churn and this script's probes) in a PID and mount namespace of
# its own, whose /proc lists only them and whose /run/netns holds only the churn namespace;
# other work on the machine (test pools of 100 000 sockets) is not swept. Bounded; undoes
# what it made (namespace, mounts and processes go with the PID namespace). Needs root.
set -euo pipefail
ROUNDS=2
SECS=20
while getopts "r:s:" o; do
    case $o in
    r) ROUNDS=$OPTARG ;;
    s) SECS=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n 2,16p "$0" >&2; exit 2; }
RATE=$1
shift
BINS=("$@")
HZ=$(getconf CLK_TCK)
NS=
DPID=
PPID_PERF=
cleanup() {
    [ -n "$PPID_PERF" ] && kill -INT "$PPID_PERF" 2>/dev/null && wait "$PPID_PERF" 2>/dev/null || true
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
    [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
    DPID= NS= PPID_PERF=
}
trap cleanup EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

changes() { # the daemon's count of kernel state changes (all series)
    curl -sf "http://127.0.0.1:$1/metrics" |
        awk '/^tcpwatch_kernel_state_changes_total\{/ {s += $NF} END {printf "%.0f\n", s}'
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

churn() { # NS RATE SECS [ABORT_EVERY]: prints "conns errors seconds" (RATE -1: flat out)
    ip netns exec "$1" python3 - "$2" "$3" "${4:-16}" <<'EOF'
import socket, struct, sys, threading, time
rate, secs, abort_every = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
flat_out = rate < 0
if flat_out: rate = 1e9
if rate <= 0:
    time.sleep(secs); print(0, 0, secs); sys.exit()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4096); addr = srv.getsockname()
srv.settimeout(0.2)
stop = time.monotonic() + secs
def serve():
    while time.monotonic() < stop + 2:
        try: c, _ = srv.accept()
        except OSError: continue
        c.settimeout(2)
        try:
            c.sendall(c.recv(16))
            while c.recv(64): pass
        except OSError: pass
        c.close()
for _ in range(2): threading.Thread(target=serve, daemon=True).start()
CLIENTS = 2
ok = [0] * CLIENTS; err = [0] * CLIENTS
LINGER0 = struct.pack("ii", 1, 0)
def client(i):
    gap = CLIENTS / rate; nxt = time.monotonic(); n = i
    while time.monotonic() < stop:
        d = nxt - time.monotonic()
        if d > 0 and not flat_out: time.sleep(d)
        elif d < -0.1: nxt = time.monotonic()  # fell behind: no burst to catch up
        nxt += gap; n += 1
        try:
            c = socket.create_connection(addr, timeout=2); c.sendall(b"GET /tcpwatch!\r\n")
            got = b""
            while len(got) < 16:
                b = c.recv(16 - len(got))
                if not b: raise OSError("short reply")
                got += b
            if n % abort_every == 0: c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            c.close(); ok[i] += 1
        except OSError:
            err[i] += 1; time.sleep(0.001)
t0 = time.monotonic()
ts = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(ok), sum(err), f"{time.monotonic() - t0:.3f}")
EOF
}

measure() { # BIN ROUND
    NS=churncpu-$$
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    CHURN_CPU_INNER=1 CHURN_CPU_NS=$NS \
        WARM=${WARM:-} PERF=${PERF:-} unshare --pid --fork --mount-proc --propagation private "$0" -r 1 -s "$SECS" "$RATE" "$1" "$2"
    cleanup
}

inner() { # BIN ROUND, in a fresh PID and mount namespace
    local bin=$1 round=$2 port c0 ch0 t0 t1 c1 ch1 out conns errs el tag keep
    NS=$CHURN_CPU_NS
    # Only the churn namespace stays visible under /run/netns.
    keep=$(mktemp)
    mount --bind "/run/netns/$NS" "$keep"
    mount -t tmpfs tmpfs /run/netns
    touch "/run/netns/$NS"
    mount --bind "$keep" "/run/netns/$NS"
    NS= # deleted by the outer script
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    TCPWATCH_LOG=warn "$bin" daemon --no-pin --set "daemon.listen=\"127.0.0.1:$port\"" \
        >/dev/null 2>&1 &
    DPID=$!
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "$bin: daemon not ready" >&2; exit 1; }
    sleep 3
    if [ -n "${WARM:-}" ]; then
        churn "$CHURN_CPU_NS" -1 "$WARM" 1 >/dev/null
        sleep 2
    fi
    ch0=$(changes "$port")
    tag=$(basename "$bin")
    if [ -n "${PERF:-}" ]; then
        perf record -q --call-graph dwarf,16384 -F 499 -p "$DPID" \
            -o "$PERF/perf-$tag-$round.data" >/dev/null 2>&1 &
        PPID_PERF=$!
        sleep 0.5
    fi
    c0=$(cpu "$DPID")
    t0=$(date +%s.%N)
    out=$(churn "$CHURN_CPU_NS" "$RATE" "$SECS")
    c1=$(cpu "$DPID")
    t1=$(date +%s.%N)
    if [ -n "$PPID_PERF" ]; then
        kill -INT "$PPID_PERF"
        wait "$PPID_PERF" 2>/dev/null || true
        PPID_PERF=
    fi
    sleep 1.5 # the daemon reads the kernel's counters once per sweep
    ch1=$(changes "$port")
    read -r conns errs el <<<"$out"
    python3 - "$tag" "$round" "$c0" "$c1" "$t0" "$t1" "$ch0" "$ch1" "$conns" "$errs" "$HZ" <<'EOF'
import sys
tag, rnd = sys.argv[1], sys.argv[2]
c0, c1, t0, t1, ch0, ch1, conns, errs, hz = map(float, sys.argv[3:])
secs = t1 - t0
print(f"{tag:<24} round {rnd}: {(c1 - c0) / hz / secs * 100:6.2f} % CPU over {secs:5.1f} s; "
      f"{conns / secs:6.0f} conn/s ({errs:.0f} failed), daemon counted "
      f"{(ch1 - ch0) / secs:7.0f} state changes/s")
EOF
    cleanup
    umount "/run/netns/$CHURN_CPU_NS" /run/netns "$keep" 2>/dev/null || true
    rm -f "$keep"
}

if [ -n "${CHURN_CPU_INNER:-}" ]; then
    inner "${BINS[0]}" "${BINS[1]}"
    exit 0
fi

for r in $(seq 1 "$ROUNDS"); do
    order=("${BINS[@]}")
    if [ $((r % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do order+=("${BINS[$i]}"); done
    fi
    for b in "${order[@]}"; do
        measure "$b" "$r"
    done
done
