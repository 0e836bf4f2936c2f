#!/usr/bin/env bash
# deps-k8s.sh installs a real single-node Kubernetes control plane for
# integration/kube: kube-apiserver, kubelet, kube-scheduler and
# kube-controller-manager built from the Go module proxy, and etcd 3.5 from
# Debian trixie's etcd-server package.
#
# The kubernetes binaries are built inside a scratch module that requires
# k8s.io/kubernetes and replaces each staging module (the `=> ./staging/...`
# lines of kubernetes' own go.mod, read from the module cache) with its
# published v0.X.Y release, since the module zip does not carry staging/.
#
# Idempotent: binaries are cached in $SNAPSHOT_CACHE/k8s/bin, keyed by
# version, and installed into $PREFIX/bin; a second run only re-checks
# versions. Package hosts are never named here: the Debian archive URI is
# read from this machine's own apt sources.
set -euo pipefail

CACHE=${SNAPSHOT_CACHE:-/var/cache/containerd-shim-snapshot}/k8s
PREFIX=${PREFIX:-/usr/local}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
# Staging modules are published as v0.<minor>.<patch> of the same release.
STAGING_VERSION=v0.${K8S_VERSION#v1.}
ETCD_VERSION=${ETCD_VERSION:-3.5.16}
ETCD_SUITE=trixie

export PATH=/usr/local/go/bin:$PATH
export GOFLAGS=-mod=mod
mkdir -p "$CACHE/bin"

log() { printf '[deps-k8s] %s\n' "$*" >&2; }

# archive_uri prints the Debian archive URI this machine already uses.
archive_uri() {
  cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ && $2 !~ /security/ {print $2}' | head -n1 || true
}

# KUBE_BINARIES are the kubernetes commands built, each from
# k8s.io/kubernetes/cmd/NAME and cached as NAME-VERSION: the apiserver and
# kubelet, and the scheduler and controller-manager so that Deployments
# (ReplicaSets, scheduling) work in the test cluster.
KUBE_BINARIES=(kube-apiserver kubelet kube-scheduler kube-controller-manager)

# build_kube builds the binaries of KUBE_BINARIES that are not cached yet,
# one go build each so the log says what each took (they share most
# packages through the build cache: the first one pays for most of them).
build_kube() {
  local missing=() name
  for name in "${KUBE_BINARIES[@]}"; do
    [[ -x $CACHE/bin/$name-$K8S_VERSION ]] || missing+=("$name")
  done
  ((${#missing[@]} > 0)) || return 0
  local m=$CACHE/build-$K8S_VERSION
  rm -rf "$m" && mkdir -p "$m/out"
  log "kubernetes $K8S_VERSION: preparing the scratch module"
  (
    cd "$m"
    go mod init k8sbuild >/dev/null 2>&1
    # kubernetes' own go.mod, from the module cache (downloaded if needed).
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    [[ -f $gomod ]] || { log "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
    local staging=() mod
    while read -r mod; do staging+=("$mod"); done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
    ((${#staging[@]} > 0)) || { log "no staging replace lines in $gomod"; exit 1; }
    log "kubernetes $K8S_VERSION: replacing ${#staging[@]} staging modules with $STAGING_VERSION"
    local edits=(-require "k8s.io/kubernetes@$K8S_VERSION")
    for mod in "${staging[@]}"; do
      edits+=(-replace "$mod=$mod@$STAGING_VERSION")
    done
    go mod edit "${edits[@]}"
    {
      printf 'package k8sbuild\n\nimport (\n'
      for name in "${KUBE_BINARIES[@]}"; do
        printf '\t_ "k8s.io/kubernetes/cmd/%s/app"\n' "$name"
      done
      printf ')\n'
    } >tools.go
    go mod tidy >mod.log 2>&1 || { tail -30 mod.log >&2; exit 1; }
    # Version stamps, as kubernetes' hack/lib/version.sh sets them.
    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
      ldflags+=" -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    local start
    for name in "${missing[@]}"; do
      log "kubernetes $K8S_VERSION: building $name (from an empty build cache on 2 cores: kube-apiserver 7 to 15 minutes, kubelet 2 to 4, the others under 2)"
      start=$SECONDS
      CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o out/ "k8s.io/kubernetes/cmd/$name" >"build-$name.log" 2>&1 ||
        { tail -30 "build-$name.log" >&2; exit 1; }
      log "kubernetes $K8S_VERSION: $name built in $((SECONDS - start)) s"
    done
  )
  for name in "${missing[@]}"; do
    install -m 0755 "$m/out/$name" "$CACHE/bin/$name-$K8S_VERSION"
  done
  rm -rf "$m"
}

# fetch_etcd takes etcd from Debian trixie's etcd-server package (bookworm's
# is 3.4): a private source list and apt state, the machine's apt setup is
# untouched. apt checks the package against the signed index.
fetch_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  if [[ -x $out ]]; then
    return
  fi
  local dir=$CACHE/etcd-apt uri
  rm -rf "$dir" && mkdir -p "$dir/lists/partial" "$dir/deb" "$dir/x"
  uri=$(archive_uri)
  [[ -n $uri ]] || { log "no Debian archive URI in /etc/apt sources"; exit 1; }
  printf 'deb %s %s main\n' "$uri" "$ETCD_SUITE" >"$dir/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o APT::Sandbox::User=root)
  mkdir -p "$dir/cache/archives/partial"
  log "etcd: looking up etcd-server $ETCD_VERSION in Debian $ETCD_SUITE"
  apt-get "${opts[@]}" update -qq
  local ver
  ver=$(apt-cache "${opts[@]}" madison etcd-server | awk -F'|' -v v="$ETCD_VERSION" '{gsub(/ /, "", $2)} index($2, v"-") == 1 || index($2, v"+") == 1 {print $2; exit}')
  [[ -n $ver ]] || {
    log "etcd: Debian $ETCD_SUITE has no etcd-server $ETCD_VERSION; it has:"
    apt-cache "${opts[@]}" madison etcd-server >&2
    exit 1
  }
  (cd "$dir/deb" && apt-get "${opts[@]}" download "etcd-server=$ver" >/dev/null)
  dpkg -x "$dir"/deb/etcd-server_*.deb "$dir/x"
  install -m 0755 "$dir/x/usr/bin/etcd" "$out"
  rm -rf "$dir"
}

# install_bin SRC NAME installs a cached binary into $PREFIX/bin, unless it is there already.
install_bin() {
  cmp -s "$1" "$PREFIX/bin/$2" || install -m 0755 "$1" "$PREFIX/bin/$2"
}

# check NAME WANT: the binary's --version must contain WANT.
check() {
  local out
  out=$("$PREFIX/bin/$1" --version 2>&1 | sed -n 1p)
  printf '  %s\n' "$out" >&2
  [[ $out == *"$2"* ]] || { log "$1 is not $2"; exit 1; }
}

start=$SECONDS
build_kube
fetch_etcd
for name in "${KUBE_BINARIES[@]}"; do
  install_bin "$CACHE/bin/$name-$K8S_VERSION" "$name"
done
install_bin "$CACHE/bin/etcd-$ETCD_VERSION" etcd
log "versions:"
for name in "${KUBE_BINARIES[@]}"; do
  check "$name" "Kubernetes $K8S_VERSION"
done
check etcd "etcd Version: $ETCD_VERSION"
log "done in $((SECONDS - start)) s"
