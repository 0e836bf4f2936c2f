#!/usr/bin/env bash
# gpu-bundle.sh packs what the GPU end to end (integration/gpu/run.sh)
# and bench.sh carry to the GPU machine, which has no package registry: containerd,
# ctr, the runc shim, runc, CRIU, this shim, the shared libraries CRIU
# and runc link besides libc, and for bench.sh's registry step the
# distribution registry (make deps builds it) with a TLS certificate for
# 127.0.0.1 made here. Output: .carry/bundle.tar.xz (under the device
# tool's 64 MiB limit: about 50 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/lib" "$tmp/tls" .carry
for b in /usr/local/bin/containerd /usr/local/bin/ctr /usr/local/bin/containerd-shim-runc-v2 "$(command -v runc)" "$(command -v criu)" "$(command -v registry)"; do
  cp "$b" "$tmp/bin/"
done
export CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/containerd-shim-snapshot-v2" ./cmd/containerd-shim-snapshot-v2
# gpusnap: inspect the checkpoints there (processes, page bytes per process).
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/gpusnap" ./cmd/gpusnap
# make bench-gpu's baseline and floor tools.
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/cudactl" ./integration/gpu/cudactl
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/floor" ./integration/floor/cmd/floor
# bench -mode transfer: the registry's push and pulls against the floor.
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/bench" ./integration/bench
for lib in $(ldd "$(command -v criu)" "$(command -v runc)" | awk '/=>/ {print $3}' | sort -u | grep -v '/libc\.so'); do
  cp -L "$lib" "$tmp/lib/"
done
# The registry serves TLS on loopback, as registries do; the certificate is
# its own CA (hosts.toml names it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=gpusnap-bench-registry -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$tmp/tls/key.pem" -out "$tmp/tls/cert.pem" 2>/dev/null
tar -C "$tmp" -cJf .carry/bundle.tar.xz bin lib tls
ls -la .carry/bundle.tar.xz
