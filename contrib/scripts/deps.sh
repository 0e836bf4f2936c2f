#!/usr/bin/env bash
# deps.sh installs every real component the shim and its tests run against:
# CRIU (built from Debian's source tarball), containerd, ctr, the runc shim,
# runc, crictl, CNI plugins and the Debian packages they need.
#
# Idempotent: build outputs are cached in $SNAPSHOT_CACHE (outside the clone),
# so a second run only re-checks versions. Package hosts are never named here:
# the Debian archive URI is read from this machine's own apt sources.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)

CACHE=${SNAPSHOT_CACHE:-/var/cache/containerd-shim-snapshot}
PREFIX=${PREFIX:-/usr/local}
CRIU_VERSION=4.2.1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.2
CRICTL_VERSION=v1.37.0
HELM_VERSION=v3.22.0 # renders contrib/helm in the tests (offline: helm template)
DISTRIBUTION_VERSION=v3.1.2 # the OCI registry the registry tests push checkpoints to

export PATH=/usr/local/go/bin:$PATH
export GOFLAGS=-mod=mod
mkdir -p "$CACHE/bin"

log() { printf '[deps] %s\n' "$*" >&2; }

# Debian packages: CRIU's build and run deps, iptables (CRIU's network lock),
# libseccomp (runc), CNI plugins (CRI pods in their own netns), busybox-static
# (the local test image), iproute2 and procps (tests).
DEB_PACKAGES=(build-essential pkg-config libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler
  protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev
  libbsd-dev libgnutls28-dev libnftables-dev uuid-dev libseccomp-dev iptables
  containernetworking-plugins busybox-static iproute2 procps xz-utils patch
  dpkg-dev util-linux e2fsprogs)

install_debs() {
  local missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# archive_uri prints the Debian archive URI this machine already uses.
archive_uri() {
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ && $2 !~ /security/ {print $2}' | head -n1 || true
}

fetch_criu_source() {
  local dir=$CACHE/criu-src tarball=criu_${CRIU_VERSION}.orig.tar.xz uri
  mkdir -p "$dir/lists/partial"
  if [[ ! -f $dir/$tarball ]]; then
    uri=$(archive_uri)
    [[ -n $uri ]] || { log "no Debian archive URI in /etc/apt sources"; exit 1; }
    # A private source list and state dir: the machine's apt setup is untouched.
    printf 'deb-src %s sid main\n' "$uri" >"$dir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o "Dir::State::Lists=$dir/lists" -o APT::Sandbox::User=root)
    log "criu: fetching Debian source $CRIU_VERSION"
    apt-get "${opts[@]}" update -qq
    (cd "$dir" && apt-get "${opts[@]}" source --download-only "criu=${CRIU_VERSION}-1" >/dev/null 2>&1 || true)
    [[ -f $dir/$tarball ]] || { log "criu: $tarball did not arrive"; exit 1; }
  fi
  echo "$CRIU_SHA256  $dir/$tarball" | sha256sum -c --quiet - || { log "criu: checksum mismatch for $tarball"; rm -f "$dir/$tarball"; exit 1; }
}

# build_criu builds CRIU with the project's patches (contrib/criu/*.patch,
# applied in name order); the cached binary is named after their digest, so
# a changed patch rebuilds.
build_criu() {
  local patches=("$REPO"/contrib/criu/*.patch)
  local tag
  tag=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
  local out=$CACHE/bin/criu-$CRIU_VERSION-$tag
  if [[ ! -x $out ]]; then
    fetch_criu_source
    local b=$CACHE/criu-build
    rm -rf "$b" && mkdir -p "$b"
    tar -C "$b" -xf "$CACHE/criu-src/criu_${CRIU_VERSION}.orig.tar.xz"
    local src=("$b"/criu-*)
    for p in "${patches[@]}"; do
      log "criu: applying $(basename "$p")"
      patch -d "${src[0]}" -p1 --quiet <"$p" || { log "criu: $p does not apply"; exit 1; }
    done
    log "criu: building (about a minute)"
    make -C "${src[0]}" -j"$(nproc)" criu >"$b/build.log" 2>&1 || { tail -30 "$b/build.log"; exit 1; }
    install -m 0755 "${src[0]}/criu/criu" "$out"
    rm -rf "$b"
  fi
  install -m 0755 "$out" "$PREFIX/sbin/criu"
}

# go_tool NAME MODULE@VERSION [LDFLAGS]: go install into the cache, once per version.
go_tool() {
  local name=$1 pkg=$2 ver=${2##*@} ldflags=${3:-}
  local out=$CACHE/bin/$name-$ver
  if [[ ! -x $out ]]; then
    log "$name: go install $pkg"
    GOBIN=$CACHE/gobin go install -trimpath -ldflags="-s -w $ldflags" "$pkg"
    mv "$CACHE/gobin/$name" "$out"
  fi
  install -m 0755 "$out" "$PREFIX/bin/$name"
}

# runc's go.mod cannot be go-installed directly; build it from a scratch module.
build_runc() {
  local out=$CACHE/bin/runc-$RUNC_VERSION
  if [[ ! -x $out ]]; then
    local m=$CACHE/runc-mod
    rm -rf "$m" && mkdir -p "$m"
    log "runc: building $RUNC_VERSION"
    (cd "$m" && go mod init runcbuild >/dev/null 2>&1 &&
      printf 'package main\nimport _ "github.com/opencontainers/runc"\n' >tools.go &&
      go get "github.com/opencontainers/runc@$RUNC_VERSION" >/dev/null 2>&1 &&
      go build -trimpath -tags seccomp -ldflags="-s -w -X main.version=${RUNC_VERSION#v}" -o "$out" github.com/opencontainers/runc)
    rm -rf "$m"
  fi
  install -m 0755 "$out" "$PREFIX/sbin/runc"
}

verify() {
  log "versions:"
  criu --version | sed -n 1p
  "$PREFIX/bin/containerd" --version
  "$PREFIX/bin/ctr" --version
  runc --version | sed -n 1p
  crictl --version
  helm version --short
  registry --version
  ls /usr/lib/cni/bridge /usr/lib/cni/loopback /usr/lib/cni/host-local >/dev/null
  criu check || { log "criu check failed"; exit 1; }
}

install_debs
build_criu
go_tool containerd "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION"
go_tool ctr "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
go_tool containerd-shim-runc-v2 "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
go_tool crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
go_tool registry "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"
go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build_runc
verify
log "done"
