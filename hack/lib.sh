# shellcheck shell=bash
# Shared settings for hack/ scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
SKYLET_CACHE=${SKYLET_CACHE:-$HOME/.cache/skylet}

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
METRICS_SERVER_VERSION=v0.8.0
KWOK_VERSION=v0.8.0
VK_VERSION=v1.13.0
MOTO_VERSION=5.2.5

K8S_BIN=$SKYLET_CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$SKYLET_CACHE/etcd-$ETCD_VERSION/bin
METRICS_SERVER_BIN=$SKYLET_CACHE/metrics-server-$METRICS_SERVER_VERSION/bin
KWOK_BIN=$SKYLET_CACHE/kwok-$KWOK_VERSION/bin
VK_BIN=$SKYLET_CACHE/virtual-kubelet-$VK_VERSION/bin

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
