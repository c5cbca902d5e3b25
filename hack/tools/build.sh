#!/usr/bin/env bash
# Builds the pinned Go tools skylet tests and benchmarks run against, each into
# a versioned directory under $SKYLET_CACHE, and skips whatever is already there.
#
#   hack/tools/build.sh [k8s] [etcd] [metrics-server] [kwok] [virtual-kubelet] [helm] [jaeger] [coredns]
#   hack/tools/build.sh --bin TOOL     print TOOL's bin directory (builds nothing)
#
# With no arguments it builds what the test suite needs (k8s, etcd,
# metrics-server, kwok). Everything comes from the Go module proxy; nothing
# from the wider network.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HELM_VERSION=v4.3.2
HELM_BIN=$SKYLET_CACHE/helm-$HELM_VERSION/bin
JAEGER_VERSION=v1.75.0
JAEGER_BIN=$SKYLET_CACHE/jaeger-$JAEGER_VERSION/bin

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

# build_module NAME DIR BIN_DIR LDFLAGS PKG...: go build the packages of the
# wrapper module in DIR into BIN_DIR, unless a stamp with the same go.sum is there.
build_module() {
  local name=$1 dir=$2 out=$3 ldflags=$4
  shift 4
  local stamp="$out/.stamp" want
  want=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "$name: cached in $out"
    return
  fi
  log "$name: building into $out (cold: several minutes on 2 cores)"
  local start=$SECONDS
  mkdir -p "$out"
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/" "$@")
  echo "$want" > "$stamp"
  log "$name: built in $((SECONDS - start))s"
}

# go_install NAME MODULE@VERSION BIN_DIR: go install a module that needs no wrapper.
go_install() {
  local name=$1 mod=$2 out=$3
  if [[ -f $out/.stamp ]]; then
    log "$name: cached in $out"
    return
  fi
  log "$name: installing $mod into $out"
  local start=$SECONDS
  mkdir -p "$out"
  GOBIN=$out go install -trimpath "$mod"
  touch "$out/.stamp"
  log "$name: built in $((SECONDS - start))s"
}

build_k8s() {
  local v=${K8S_VERSION#v} vpkg=k8s.io/component-base/version
  local minor=${v#*.}; minor=${minor%%.*}
  build_module kubernetes "$HACK_DIR/tools/k8s" "$K8S_BIN" \
    "-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=${v%%.*} -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  build_module etcd "$HACK_DIR/tools/etcd" "$ETCD_BIN" "-s -w" \
    go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
  # go names the binary of go.etcd.io/etcd/server/v3 "server"
  if [[ -x $ETCD_BIN/server ]]; then mv "$ETCD_BIN/server" "$ETCD_BIN/etcd"; fi
  [[ -x $ETCD_BIN/etcd ]] || die "etcd binary missing in $ETCD_BIN"
}

build_kwok() {
  build_module kwok "$HACK_DIR/tools/kwok" "$KWOK_BIN" "-s -w" sigs.k8s.io/kwok/cmd/kwok
}

build_metrics_server() {
  build_module metrics-server "$HACK_DIR/tools/metrics-server" "$METRICS_SERVER_BIN" \
    "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
    sigs.k8s.io/metrics-server/cmd/metrics-server
}

# helm's own version variable; without it `helm version` says v4.3
build_helm() {
  build_module helm "$HACK_DIR/tools/helm" "$HELM_BIN" \
    "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm.sh/helm/v4/cmd/helm
}

# CoreDNS from a main of our own that links only the plugins hack/node's
# cluster DNS uses (hack/tools/coredns/main.go); its version is the module's
build_coredns() {
  build_module coredns "$HACK_DIR/tools/coredns" "$COREDNS_BIN" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" .
}

build_jaeger() {
  build_module jaeger "$HACK_DIR/tools/jaeger" "$JAEGER_BIN" \
    "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION" \
    github.com/jaegertracing/jaeger/cmd/jaeger
}

if [[ ${1:-} == --bin ]]; then
  case ${2:-} in
    k8s) echo "$K8S_BIN" ;;
    helm) echo "$HELM_BIN" ;;
    jaeger) echo "$JAEGER_BIN" ;;
    coredns) echo "$COREDNS_BIN" ;;
    *) die "--bin: unknown tool '${2:-}'" ;;
  esac
  exit 0
fi

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(k8s etcd metrics-server kwok)
for t in "${targets[@]}"; do
  case $t in
    k8s) build_k8s ;;
    etcd) build_etcd ;;
    metrics-server) build_metrics_server ;;
    kwok) build_kwok ;;
    helm) build_helm ;;
    jaeger) build_jaeger ;;
    coredns) build_coredns ;;
    virtual-kubelet) go_install virtual-kubelet \
      "github.com/virtual-kubelet/virtual-kubelet/cmd/virtual-kubelet@$VK_VERSION" "$VK_BIN" ;;
    *) die "unknown tool '$t'" ;;
  esac
done
