#!/usr/bin/env bash
# Boots one vm-test kernel again and again under QEMU TCG with a given CPU model, and counts
# the boots that crash: the experiment behind vm-test's `-cpu max,-cx16` (docs/kernels.md).
#
#   xtask/scripts/vm_cpu_model.sh KERNEL_DIR_NAME CPU_MODEL [BOOTS]
#   e.g. xtask/scripts/vm_cpu_model.sh 6.12 max 12; ... 6.12 max,-cx16 14
#
# Needs a `cargo xtask vm-test --kernel K` run first (it leaves the kernel under
# target/vm-test/kernels/ and the initramfs with all scenarios under target/vm-test/work/K/).
# Each boot runs every scenario (about 30-70 s) and is killed after 300 s. Prints one line per
# boot (VMTEST-DONE summary, CRASH with the crashing task and RIP, or OTHER) and a total; the
# serial logs stay in target/vm-test/cpu-model/.
set -euo pipefail
K=${1:?kernel: 5.10, 6.1 or 6.12}
CPU=${2:?cpu model, e.g. max or max,-cx16}
N=${3:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
INITRD=$ROOT/target/vm-test/work/$K/initrd.gz
case $K in
  5.10) PAT='linux-image-5.10*' ;;
  6.1) PAT='linux-image-6.1.*' ;;
  6.12) PAT='linux-image-6.12*' ;;
  *) echo "unknown kernel $K: 5.10, 6.1 or 6.12" >&2; exit 2 ;;
esac
VMLINUZ=$(ls -d "$ROOT"/target/vm-test/kernels/$PAT/vmlinuz 2>/dev/null | head -1)
if [[ -z $VMLINUZ || ! -f $INITRD ]]; then
  echo "no kernel or initramfs for $K under target/vm-test: run cargo xtask vm-test --kernel $K first" >&2
  exit 1
fi
OUT=$ROOT/target/vm-test/cpu-model
mkdir -p "$OUT"
crashed=0
for i in $(seq 1 "$N"); do
  log=$OUT/$K-${CPU//,/_}-$i.log
  timeout 300 qemu-system-x86_64 -accel tcg -cpu "$CPU" -m 1024 -smp 1 -nodefaults \
    -no-user-config -display none -serial stdio -no-reboot -kernel "$VMLINUZ" \
    -initrd "$INITRD" -append "console=ttyS0 panic=-1 quiet" </dev/null >"$log" 2>&1 || true
  if grep -q VMTEST-DONE "$log"; then
    r=$(grep -m1 VMTEST-DONE "$log")
  elif grep -q -E 'Kernel panic|BUG:|Oops' "$log"; then
    crashed=$((crashed + 1))
    r="CRASH $(grep -m1 -oE 'Comm: [^ ]+' "$log" || true) $(grep -m1 -oE 'RIP: 0010:[^ ]+' "$log" || true)"
  else
    r="OTHER (see $log)"
  fi
  echo "$K -cpu $CPU boot $i: $r"
done
echo "$K -cpu $CPU: $crashed of $N boots crashed"
