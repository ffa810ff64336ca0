#!/usr/bin/env bash
# Builds a FROM-scratch tcpwatch image from a local binary and runs it with exactly the
# privileges of deploy/kubernetes/daemonset.yaml (capabilities, uid, read-only root, host PID,
# the same host mounts), with podman + runc. No registry is needed.
#
# Used by tcpwatch/tests/container.rs (which creates the workload and checks the API); usable by
# hand:
#   deploy/container-test.sh caps                       # the DaemonSet's capability list
#   deploy/container-test.sh build target/release/tcpwatch localhost/tcpwatch:dev
#   deploy/container-test.sh run localhost/tcpwatch:dev tcpwatch-dev CAP_SYS_ADMIN,CAP_SYS_PTRACE \
#       --set 'daemon.listen="127.0.0.1:9977"'
#   curl -s 127.0.0.1:9977/readyz; podman logs tcpwatch-dev; podman rm -f tcpwatch-dev
#
# Differences from the pod, on purpose: --network=host (the test reaches the API on loopback;
# in the pod the API listens on the pod IP) and the config comes from --set instead of the
# ConfigMap. Everything that decides privileges is the same.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DAEMONSET="$HERE/kubernetes/daemonset.yaml"
# The DaemonSet's securityContext.runAsUser (see docs/operations.md for why it is 0).
RUN_AS_USER="${RUN_AS_USER:-0}"

die() { echo "container-test.sh: $*" >&2; exit 1; }

need_podman() {
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
        [ "$(id -u)" = 0 ] || die "podman and runc are missing (apt-get install -y podman runc as root)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >&2 \
            || die "could not install podman and runc"
    fi
}

# The `add:` list of the DaemonSet's capabilities, as CAP_A,CAP_B.
caps() {
    awk '
        /^ *add:/ { inadd = 1; next }
        inadd && /^ *- / { gsub(/[- "]/, ""); out = out (out ? "," : "") "CAP_" $0; next }
        inadd { inadd = 0 }
        END { print out }
    ' "$DAEMONSET"
}

# build BINARY TAG: the binary at /tcpwatch plus the shared libraries ldd lists, FROM scratch.
build() {
    local bin="$1" tag="$2" ctx lib
    [ -x "$bin" ] || die "no executable at $bin"
    need_podman
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' RETURN
    mkdir -p "$ctx/rootfs/tmp"
    cp "$bin" "$ctx/rootfs/tcpwatch"
    # Every absolute path ldd prints: libc, libgcc_s, libm, the dynamic loader, ...
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    cat >"$ctx/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
USER 0
ENTRYPOINT ["/tcpwatch", "daemon"]
EOF
    podman build --quiet --runtime runc -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
}

# run TAG NAME CAPS [daemon args...]: detached, with the DaemonSet's privileges.
run() {
    local tag="$1" name="$2" caps="$3"
    shift 3
    need_podman
    local capargs=(--cap-drop=all)
    [ -n "$caps" ] && capargs+=("--cap-add=$caps")
    mkdir -p /run/netns
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    podman --runtime runc run -d --name "$name" \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        "${capargs[@]}" \
        --user "$RUN_AS_USER" \
        --read-only \
        --security-opt no-new-privileges \
        --pid=host --network=host \
        -v /sys/kernel/btf:/sys/kernel/btf:ro \
        -v /sys/fs/bpf:/sys/fs/bpf \
        -v /run/netns:/run/netns:ro,rslave \
        "$tag" "$@"
}

case "${1:-}" in
    caps) caps ;;
    build) shift; build "$@" ;;
    run) shift; run "$@" ;;
    *) die "usage: $0 caps | build BINARY TAG | run TAG NAME CAPS [daemon args...]" ;;
esac
