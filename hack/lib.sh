# shellcheck shell=bash
# Shared settings and helpers for hack/ scripts. Source it; do not run it.
# The variables are for the scripts that source this file:
# shellcheck disable=SC2034
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# where cargo puts binaries: honours CARGO_TARGET_DIR as cargo does
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
SKYLET_CACHE=${SKYLET_CACHE:-$HOME/.cache/skylet}

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
METRICS_SERVER_VERSION=v0.8.0
KWOK_VERSION=v0.8.0
VK_VERSION=v1.13.0
COREDNS_VERSION=v1.15.0
MOTO_VERSION=5.2.5
CARGO_DENY_VERSION=0.20.2
RUFF_VERSION=0.17.5

K8S_BIN=$SKYLET_CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$SKYLET_CACHE/etcd-$ETCD_VERSION/bin
METRICS_SERVER_BIN=$SKYLET_CACHE/metrics-server-$METRICS_SERVER_VERSION/bin
KWOK_BIN=$SKYLET_CACHE/kwok-$KWOK_VERSION/bin
VK_BIN=$SKYLET_CACHE/virtual-kubelet-$VK_VERSION/bin
COREDNS_BIN=$SKYLET_CACHE/coredns-$COREDNS_VERSION/bin
# virtualenvs (hack/moto, hack/lint) and a cargo install root (hack/lint)
MOTO_HOME=$SKYLET_CACHE/moto-$MOTO_VERSION
RUFF_HOME=$SKYLET_CACHE/ruff-$RUFF_VERSION
CARGO_DENY_HOME=$SKYLET_CACHE/cargo-deny-$CARGO_DENY_VERSION

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_pid PID [TENTHS]: SIGTERM, up to TENTHS tenths of a second (default 50)
# for the process to exit, then SIGKILL. Quiet when it is already gone.
stop_pid() {
  local pid=$1 tenths=${2:-50}
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# stop_pidfile FILE [TENTHS]: stop_pid the PID in FILE, then remove FILE.
stop_pidfile() {
  [[ -f $1 ]] || return 0
  stop_pid "$(cat "$1")" "${2:-50}"
  rm -f "$1"
}

# watch_owner OWNER_PID LOG CMD...: in the background, run CMD once process
# OWNER_PID has exited (test harnesses pass their PID so nothing leaks).
watch_owner() {
  local owner=$1 logfile=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by the inner bash
  nohup bash -c 'owner=$1; shift; while kill -0 "$owner" 2>/dev/null; do sleep 1; done; exec "$@"' _ \
    "$owner" "$@" > "$logfile" 2>&1 < /dev/null &
}

# instance_args DEFAULT [NAME] [--owner-pid PID]: sets NAME (default DEFAULT)
# and OWNER_PID (default empty), as `hack/cluster up` and `hack/moto up` take them.
instance_args() {
  NAME=$1 OWNER_PID=''
  shift
  while [[ $# -gt 0 ]]; do
    case $1 in
      --owner-pid) OWNER_PID=${2:?--owner-pid needs a PID}; shift 2 ;;
      *) NAME=$1; shift ;;
    esac
  done
}

# venv_install DIR PIP_ARGS...: a virtualenv in DIR with PIP_ARGS installed.
# Redone when PIP_ARGS or the requirement files they name change; the stamp
# is written last, so a half-finished install is redone too.
venv_install() {
  local dir=$1 want a
  shift
  # the stamp: the arguments, with each requirement file by its content, not its path
  want=$(for a in "$@"; do if [[ -f $a ]]; then cat "$a"; else echo "$a"; fi; done | sha256sum | cut -c1-16)
  if [[ -f $dir/.installed && $(cat "$dir/.installed") == "$want" ]]; then
    log "$(basename "$dir"): cached in $dir"
    return
  fi
  command -v python3 >/dev/null || die "python3 is required"
  log "$(basename "$dir"): installing $* into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$want" > "$dir/.installed"
}
