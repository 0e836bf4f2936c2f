# containerd-shim-snapshot-v2: build, install the real components, test, benchmark.
GO        ?= go
BIN       ?= bin
# go-nvml's header trips deprecation warnings in every cgo build; they are harmless.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deps deps-k8s test test-unit fuzz test-integration test-kube soak bench benchmarks bench-cold bench-encryption bench-registry bench-transfer gpu-bundle test-gpu bench-gpu bench-gpu-synthetic demo clean

all: build

build:
	$(GO) build -trimpath -o $(BIN)/containerd-shim-snapshot-v2 ./cmd/containerd-shim-snapshot-v2

## deps: install CRIU, containerd, ctr, runc, crictl, CNI plugins (cached, idempotent)
deps:
	contrib/scripts/deps.sh

## deps-k8s: build kube-apiserver, kubelet, kube-scheduler, kube-controller-manager v1.37.2, fetch etcd 3.5 (cached, idempotent)
deps-k8s:
	contrib/scripts/deps-k8s.sh

## test: unit tests, fuzzing, the integration suite against a private containerd,
## then the same shim under a real kubelet (root)
test: deps test-unit fuzz test-integration test-kube

## fuzz: each parser's fuzz target (manifests, handler options, rootfs diffs) for a
## number of executions (5-20 s each on a 2-core machine); FUZZTIME=30s (or
## 5000x) overrides all three. Counts, not durations: Go 1.26's fuzz
## coordinator can fail a duration run at its deadline with "context deadline
## exceeded" and no failing input (golang/go#75804; seen here with an empty
## fuzz cache).
FUZZTIME ?=
fuzz:
	$(GO) test ./storage/ -run='^$$' -fuzz='^FuzzDecodeManifest$$' -fuzztime=$(or $(FUZZTIME),200000x) -fuzzminimizetime=2s
	$(GO) test ./shim/options/ -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(or $(FUZZTIME),100000x) -fuzzminimizetime=2s
	$(GO) test ./rootfs/ -run='^$$' -fuzz='^FuzzApplyDiff$$' -fuzztime=$(or $(FUZZTIME),5000x) -fuzzminimizetime=2s

test-unit:
	$(GO) vet ./...
	$(GO) test -short -count=1 ./...

test-integration:
	$(GO) test -count=1 -timeout 30m -v ./integration/... ./registry/

## test-kube: a real single-node Kubernetes (etcd, kube-apiserver, scheduler, controller-manager, kubelet) on a private containerd (root)
test-kube: deps deps-k8s
	SNAPSHOT_KUBE=1 $(GO) test ./integration/kube/ -count=1 -timeout 20m -v

## soak: SOAK_CYCLES restore/kill cycles of one checkpoint; the node must hold
## the same mounts, shims, cgroups, namespaces, fds and disk bytes afterwards
## (the integration suite runs 20)
SOAK_CYCLES ?= 500
soak: deps
	SNAPSHOT_SOAK=$(SOAK_CYCLES) $(GO) test ./integration/ -run '^TestSoakRestoreKill$$' -count=1 -timeout 60m -v

## bench: CPU restore against cold start and plain criu restore (2 GiB state, 20 s warm-up)
bench:
	$(GO) run ./integration/bench -mode restore -state-mb 2048 -warmup 20 \
		-out bench/results/$$(date -u +%Y-%m-%dT%H%M)-$$(hostname)-cpu-restore.json
	$(MAKE) benchmarks

## benchmarks: regenerate BENCHMARKS.md and its plot from bench/results/*.json
benchmarks:
	$(GO) run ./integration/bench/report -results bench/results -out BENCHMARKS.md -plot docs/restore-vs-size.svg

## bench-cold: 30 interleaved `ctr run --rm` through runc and this shim
bench-cold:
	$(GO) run ./integration/bench -mode cold -runs 30

## bench-encryption: checkpoint and restore of 2 GiB of state in the clear against encrypted at rest
bench-encryption:
	$(GO) run ./integration/bench -mode encryption -state-mb 2048 -warmup 20

## bench-registry: checkpoints through a real registry on loopback: push, a fresh node's pull + restore, concurrent pulls, against the floor
bench-registry:
	$(GO) run ./integration/bench -mode registry -state-mb 2048 -warmup 20 \
		-out bench/results/$$(date -u +%Y-%m-%dT%H%M)-$$(hostname)-registry.json
	$(MAKE) benchmarks

## bench-transfer: only the registry's push and pulls, of a synthetic 2 GiB page image (no containerd; SIZE_MB to change it), against the floor
SIZE_MB ?= 2048
bench-transfer:
	$(GO) run ./integration/bench -mode transfer -size-mb $(SIZE_MB) \
		-out bench/results/$$(date -u +%Y-%m-%dT%H%M)-$$(hostname)-transfer.json
	$(MAKE) benchmarks

## gpu-bundle: pack the binaries integration/gpu/run.sh carries to the GPU machine
gpu-bundle:
	contrib/scripts/gpu-bundle.sh

## test-gpu: the GPU end to end (the synthetic worker on one and two GPUs, then
## every example of contrib/examples); run it ON the GPU machine, after make gpu-bundle here
test-gpu:
	integration/gpu/run.sh
	integration/gpu/examples.sh

## bench-gpu: the transformers server (torch.compile, weights from disk): cold start
## against restore from disk and from the page cache, with phases; ON the GPU machine
## (copy its $$OUT/examples.json into bench/results/, then make benchmarks)
bench-gpu:
	integration/gpu/examples.sh transformers

## bench-gpu-synthetic: the synthetic worker's size sweep against plain CRIU and the floor
bench-gpu-synthetic:
	integration/gpu/bench.sh

## demo: start a private containerd with the shim and run a container through it
demo: deps
	$(GO) run ./integration/demo

clean:
	rm -rf $(BIN)
