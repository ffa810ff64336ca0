#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml against the Kubernetes OpenAPI schemas, offline, with
# kubernetes-validate (PyPI; bundles the schemas). It is installed in a virtualenv on first
# use (TCPWATCH_KV_VENV, default ~/.cache/tcpwatch/kubernetes-validate). The PodMonitor and
# PrometheusRule are CRDs it has no schema for: their required fields are checked by hand.
# Exit 0: valid; 1: invalid; 3: the validator could not be installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$HERE/kubernetes"
VENV="${TCPWATCH_KV_VENV:-$HOME/.cache/tcpwatch/kubernetes-validate}"
KV="$VENV/bin/kubernetes-validate"

if [ ! -x "$KV" ]; then
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q kubernetes-validate; } >&2 \
        || { echo "validate-manifests.sh: cannot install kubernetes-validate (python3-venv, PyPI)" >&2; exit 3; }
fi

# The resources kustomization.yaml lists, in order.
mapfile -t files < <(awk '/^resources:/ { r = 1; next } r && /^ *- / { print $2; next } r { r = 0 }' "$DIR/kustomization.yaml")
[ "${#files[@]}" -gt 0 ] || { echo "no resources in kustomization.yaml" >&2; exit 1; }

status=0
for f in "${files[@]}"; do
    path="$DIR/$f"
    if [ ! -f "$path" ]; then
        echo "FAIL $f: listed in kustomization.yaml but missing" >&2
        status=1
        continue
    fi
    kind="$(awk '/^kind:/ { print $2; exit }' "$path")"
    case "$kind" in
        PodMonitor | PrometheusRule)
            # CRDs: the fields the Prometheus Operator requires.
            for want in '^apiVersion: monitoring.coreos.com/v1$' '^  name: ' '^  namespace: ' '^spec:'; do
                grep -q "$want" "$path" || { echo "FAIL $f: no line matching $want" >&2; status=1; }
            done
            if [ "$kind" = PodMonitor ]; then
                grep -q '^  selector:' "$path" && grep -q 'podMetricsEndpoints:' "$path" \
                    || { echo "FAIL $f: PodMonitor needs spec.selector and spec.podMetricsEndpoints" >&2; status=1; }
            else
                grep -q '^  groups:' "$path" || { echo "FAIL $f: PrometheusRule needs spec.groups" >&2; status=1; }
            fi
            [ "$status" = 0 ] && echo "INFO $f passed the hand check for $kind"
            ;;
        *)
            "$KV" --strict --quiet "$path" || status=1
            [ "$status" = 0 ] && echo "INFO $f passed (kubernetes-validate --strict)"
            ;;
    esac
done
exit "$status"
