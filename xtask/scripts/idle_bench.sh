#!/bin/bash
# Idle-daemon measurement at ~100 000 established sockets (50 000 pairs) in a private netns.
# usage: idle_bench.sh MEASURE_S BIN...   (each BIN measured in turn, same pool)
set -u
MEAS=$1; shift
XT=${XT:-target/debug/xtask}  # cargo build -p xtask
NS=idlebench_$$
ip netns add $NS && ip -n $NS link set lo up
HOLD=()
cleanup() { for p in "${HOLD[@]}"; do kill "$p" 2>/dev/null; done; sleep 1; ip netns del $NS; }
trap cleanup EXIT
for n in 18000 18000 18000 18000 18000 10000; do
  sleep 100000 | $XT bench --pool-helper /run/netns/$NS:$n > /tmp/idle_pool_$$_$n.out &
  HOLD+=($(jobs -p | tail -1))
done
# the sleeps hold stdin; wait until every helper said READY
for i in $(seq 1 120); do
  c=$(cat /tmp/idle_pool_$$_*.out 2>/dev/null | grep -c READY); [ "$c" -ge 2 ] && ss -N $NS -tan state established | wc -l | awk '{exit !($1>=100000)}' && break; sleep 1
done
echo "pool: $(ss -N $NS -tan state established | tail -n +2 | wc -l) established sockets"
for BIN in "$@"; do
  PORT=$((20000 + RANDOM % 20000))
  $BIN daemon --no-pin --set "daemon.listen=\"127.0.0.1:$PORT\"" --set daemon.sweep_interval_ms=1000 ${EXTRA:-} 2>/tmp/idle_daemon_$$.log >/dev/null &
  DP=$!
  for i in $(seq 1 120); do
    t=$(curl -s 127.0.0.1:$PORT/api/v1/status | jq -r '.table.connections // 0' 2>/dev/null)
    [ "${t:-0}" -ge 100000 ] 2>/dev/null && break; sleep 1
  done
  sleep 5
  TCK=$(getconf CLK_TCK)
  c0=$(awk '{print $14+$15}' /proc/$DP/stat); t0=$(date +%s.%N)
  R=()
  for i in $(seq 1 $MEAS); do sleep 1; R+=($(awk '/VmRSS/{print int($2/1024)}' /proc/$DP/status)); done
  c1=$(awk '{print $14+$15}' /proc/$DP/stat); t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/{print $2}' /proc/$DP/status)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$DP/status)
  echo "$BIN: tracked $t  cpu $(echo "scale=2; ($c1-$c0)*100/$TCK/($t1-$t0)" | bc) % of a core over ${MEAS}s  rss $((rss/1024)) MiB, range over window $(printf '%s\n' "${R[@]}" | sort -n | head -1)-$(printf '%s\n' "${R[@]}" | sort -n | tail -1) MiB (VmHWM $((hwm/1024)) MiB)  load $(cut -d' ' -f1 /proc/loadavg)"
  if [ -n "${PERF:-}" ]; then perf record --call-graph dwarf,16384 -F 300 -p $DP -o /tmp/idle_perf_$(basename $BIN).data -- sleep 6 >/dev/null 2>&1; fi
  for k in 1 2 3; do curl -s -o /dev/null -w "metrics %{time_total}s\n" 127.0.0.1:$PORT/metrics; curl -s -o /dev/null -w "exposure %{time_total}s\n" 127.0.0.1:$PORT/api/v1/exposure; done
  kill $DP; wait $DP 2>/dev/null
done
