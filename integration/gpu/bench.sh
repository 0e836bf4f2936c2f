#!/usr/bin/env bash
# make bench-gpu, run on the GPU machine from the repository root after
# `make gpu-bundle` here. For the PyTorch example with WEIGHTS_GIB of weights
# (default 8), in one run:
#   - cold start to first answer;
#   - the checkpoint the shim takes when the workload says it is warm
#     (auto_checkpoint = on-ready, leave running) and image sizes;
#   - restore through the shim to first answer, with the page cache dropped
#     (checkpoint on the store's disk) and with the checkpoint in the page
#     cache (a warm node-local copy), each with the shim's phase timings,
#     with restore_huge_pages off and on (the default for GPU checkpoints); with the page cache warm
#     also with restore_threads = 1 (CRIU's single page reader; from the
#     dropped page cache too) and 16 against the default (one per CPU, at
#     most 16), and with huge pages and restore_populate = true (CRIU's
#     readers populate each run before reading into it, patch 0004; off by
#     default with huge pages);
#   - the baseline: plain CRIU + driver checkpoint API on a host process
#     (cudactl + criu dump/restore), cold and warm cache;
#   - through a registry (BENCH_REGISTRY=1, the default when the bundle
#     carries one): gpusnap push to a distribution registry on loopback
#     (TLS), then a fresh node's first restore: a handler whose store is
#     empty pulls on demand and restores, with the registry's blobs in the
#     page cache and with the page cache dropped;
#   - the floor: read bandwidth of the store's disk (O_DIRECT, 1 and 8
#     streams) and of the page cache, memory copy, and host-to-device copy
#     (pinned and pageable), measured here and now.
# Writes $OUT/bench-gpu.json (raw results) and prints a table. With
# BENCH_QUICK=1 (the size sweep) only the cold start, the checkpoint, the
# warm restores with 4 KiB pages, with huge pages and with huge pages
# populated, and the floor are measured, plus EXTRA_THREADS.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/bench.log") 2>&1
WEIGHTS_GIB=${WEIGHTS_GIB:-8}
BENCH_QUICK=${BENCH_QUICK:-0}
# BENCH_PLAIN=1: the plain CRIU baseline (a second cold start); on unless quick.
BENCH_PLAIN=${BENCH_PLAIN:-$([ "$BENCH_QUICK" = 1 ] && echo 0 || echo 1)}
# STORE_TMPFS=1: the store on a tmpfs, for weights whose image does not fit
# the machine's disk beside the weights' other copies (40 GiB on a 64 GiB
# disk); restores then read memory, as from the page cache.
STORE_TMPFS=${STORE_TMPFS:-0}
BENCH_REGISTRY=${BENCH_REGISTRY:-$(tar -tJf .carry/bundle.tar.xz bin/registry >/dev/null 2>&1 && echo 1 || echo 0)}
. integration/gpu/lib.sh
R=$OUT/bench-gpu.json
declare -A T
record() { T[$1]=$2; echo "  $1 = $2"; }

step "clean up an earlier run on this machine"; cleanup_earlier
step "unpack carried binaries"; unpack_bundle || exit 1
step "start containerd"; start_containerd
[ "$STORE_TMPFS" = 1 ] && mount -t tmpfs -o size=90%,mode=0755 tmpfs $W/store
cat /sys/kernel/mm/transparent_hugepage/enabled

# The workload says when it is warm (ready-for-checkpoint in its control
# directory) and the shim checkpoints it then, leaving it running: the
# production path, and no archive through containerd's content store.
# The rows without a setting in their name restore into 4 KiB pages: huge
# pages are the default for GPU checkpoints since 2026-12-06, and these
# rows keep the comparison (and their meaning in earlier results).
printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nauto_checkpoint = "on-ready"\nrestore_huge_pages = false\n' $W/store >$W/handler.toml
printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nrestore_huge_pages = true\n' $W/store >$W/handler-huge.toml
printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nrestore_huge_pages = true\nrestore_populate = true\n' $W/store >$W/handler-huge-populate.toml
# EXTRA_THREADS: more restore_threads values to time warm, with huge pages
# (shim_restore_warm_huge_N_threads), in either mode.
EXTRA_THREADS=${EXTRA_THREADS:-}
for n in 1 16 $EXTRA_THREADS; do
  printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nrestore_huge_pages = true\nrestore_threads = %d\n' $W/store $n >$W/handler-huge-$n.toml
done
record restore_threads $(( $(nproc) < 16 ? $(nproc) : 16 ))  # restore_threads = 0: one per CPU, at most 16
ENV=(CONTROL_DIR=/run/gpusnap)

step "cold start (page cache dropped), checkpoint on ready"
drop_caches
t0=$(now); run_worker bench-src 0 "${ENV[@]}" || exit 1
A1=$(first_answer) || { echo "no answer from the cold worker"; exit 1; }
t1=$(now); record cold_s $(dt $t0 $t1); echo "  answer $A1"
for i in $(seq 600); do
  ls $W/store/*/manifest.json >/dev/null 2>&1 && break
  grep -q checkpoint-failed /run/containerd-shim-snapshot/bench-src/snapshot-status 2>/dev/null && break
  sleep 0.5
done
t2=$(now); record checkpoint_after_answer_s $(dt $t1 $t2)
status_of bench-src; echo
if ! ls $W/store/*/manifest.json >/dev/null 2>&1; then
  echo "FAIL: no checkpoint"; tail -40 $W/state/io.containerd.runtime.v2.task/gpu/bench-src/criu-dump.log
  collect_logs; exit 1
fi
[ "$(first_answer)" = "$A1" ] && echo "  source still answers the same after its checkpoint" || echo "FAIL: source answers differently after its checkpoint"
remove_worker bench-src
CK=$(ls -d $W/store/*/)
record image_bytes $(ckpt_bytes)
record pages_bytes $(du -cb $CK/checkpoint/pages-*.img | tail -1 | cut -f1)
python3 -c "import json;print('  checkpoint phases', json.load(open('$CK/manifest.json')).get('phases'))"

# shim_restore NAME: restore through the shim, record time and phases.
shim_restore() {
  local id=bench-$1 t0 t1 a
  t0=$(now); run_worker $id 0 "${ENV[@]}" || return 1
  a=$(first_answer); t1=$(now)
  restored $id && [ "$a" = "$A1" ] || { echo "FAIL: $id not restored or wrong answer: $a"; status_of $id; return 1; }
  record ${1}_s $(dt $t0 $t1)
  status_of $id >$OUT/status-$1.json
  python3 - "$OUT/status-$1.json" "$1" <<'PY'
import json, sys
for k, v in json.load(open(sys.argv[1])).get("phases_seconds", {}).items():
    print("  %s_phase_%s = %.3f" % (sys.argv[2], k, v))
PY
  grep AnonHugePages /proc/$(pgrep -f /app/server.py | head -1)/smaps_rollup
  remove_worker $id
}
if [ "$BENCH_QUICK" != 1 ]; then
  step "restore through the shim, page cache dropped"; drop_caches; shim_restore shim_restore_cold
  step "the same with restore_huge_pages = true"; drop_caches; HANDLER=$W/handler-huge.toml shim_restore shim_restore_cold_huge
  step "the same with restore_threads = 1 (CRIU's single reader)"; drop_caches; HANDLER=$W/handler-huge-1.toml shim_restore shim_restore_cold_huge_one_thread
fi
step "restore through the shim, checkpoint in the page cache"; cat $CK/checkpoint/* >/dev/null; shim_restore shim_restore_warm
step "the same with restore_huge_pages = true"; HANDLER=$W/handler-huge.toml shim_restore shim_restore_warm_huge
step "the same with restore_populate = true (readers populate each run before reading into it)"; HANDLER=$W/handler-huge-populate.toml shim_restore shim_restore_warm_huge_populate
if [ "$BENCH_QUICK" != 1 ]; then
  step "the same with restore_threads = 1 (CRIU's single reader)"; HANDLER=$W/handler-huge-1.toml shim_restore shim_restore_warm_huge_one_thread
  step "the same with restore_threads = 16"; HANDLER=$W/handler-huge-16.toml shim_restore shim_restore_warm_huge_16_threads
  step "again with huge pages and the default threads (order effects)"; HANDLER=$W/handler-huge.toml shim_restore shim_restore_warm_huge_again
fi
for n in $EXTRA_THREADS; do
  step "the same with restore_threads = $n"; HANDLER=$W/handler-huge-$n.toml shim_restore shim_restore_warm_huge_${n}_threads
done

if [ "$BENCH_PLAIN" = 1 ]; then
step "baseline: plain CRIU + driver API on a host process"
P=$W/plain; mkdir -p $P/images
(cd $P && PORT=8001 WEIGHTS_GIB=$WEIGHTS_GIB PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
  setsid /opt/torch/.venv/bin/python3 $REPO/contrib/examples/pytorch-server/server.py </dev/null >$P/server.log 2>&1 &)
B1=$(first_answer 8001) || { echo "plain worker gave no answer"; cat $P/server.log; exit 1; }
PID=$(pgrep -f "contrib/examples/pytorch-server/server.py" | head -1)
t0=$(now); SNAPSHOT_LIBCUDA=/usr/local/nvidia/lib64/libcuda.so.1 cudactl checkpoint $PID && criu dump -t $PID -D $P/images -o dump.log || { tail $P/images/dump.log; exit 1; }
t1=$(now); record plain_checkpoint_s $(dt $t0 $t1)
plain_restore() {
  local t0 t1 a pid
  local tc tg
  t0=$(now)
  env -u CRIU_RESTORE_THREADS -u CRIU_RESTORE_HUGEPAGES -u CRIU_RESTORE_POPULATE criu restore -d -D $P/images -o restore.log || { tail $P/images/restore.log; return 1; }
  pid=$(pgrep -f "contrib/examples/pytorch-server/server.py" | head -1)
  tc=$(now); SNAPSHOT_LIBCUDA=/usr/local/nvidia/lib64/libcuda.so.1 cudactl restore $pid || return 1
  tg=$(now); a=$(first_answer 8001); t1=$(now)
  [ "$a" = "$B1" ] || echo "plain restore answered $a, before $B1"
  record $1 $(dt $t0 $t1)
  # The two phases apart: the driver's own restore is what the shim's
  # cuda_restore phase is held against.
  record ${1%_s}_criu_s $(dt $t0 $tc); record ${1%_s}_cuda_s $(dt $tc $tg)
  kill -9 $pid; sleep 1
}
drop_caches; plain_restore plain_restore_cold_s
cat $P/images/* >/dev/null; plain_restore plain_restore_warm_s
fi

if [ "$BENCH_REGISTRY" = 1 ]; then
step "registry: push, then a fresh node's first restore pulls on demand"
rm -rf $W/plain/images  # room on the disk for the registry's copy and the fresh node's
G=$W/registry; H=127.0.0.1:5443
mkdir -p $G/data $G/certs.d/$H
cat >$G/config.yml <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $G/data}
http:
  addr: $H
  tls: {certificate: $S/tls/cert.pem, key: $S/tls/key.pem}
YML
printf 'server = "https://%s"\nca = "%s"\n' $H $S/tls/cert.pem >$G/certs.d/$H/hosts.toml
registry serve $G/config.yml >$OUT/registry.log 2>&1 &
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/5443) 2>/dev/null && break; sleep 0.2; done
t0=$(now); gpusnap push -store $W/store -hosts-dir $G/certs.d -json "$(basename $CK)" $H/bench >$OUT/push.json || { cat $OUT/push.json; exit 1; }
t1=$(now); record registry_push_s $(dt $t0 $t1); tr -d "\n " <$OUT/push.json | cut -c1-400; echo
# registry_restore NAME: a fresh node (an empty store) restores through the
# registry; the pull is the status's phase "pull".
registry_restore() {
  rm -rf $W/store-fresh; mkdir -p $W/store-fresh
  # 4 KiB pages, as shim_restore_warm, which the report adds to the pull.
  printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nrestore_huge_pages = false\nregistry = "%s/bench"\nregistry_hosts_dir = "%s"\npull = "on-demand"\n' \
    $W/store-fresh $H $G/certs.d >$W/handler-registry.toml
  HANDLER=$W/handler-registry.toml shim_restore $1
}
step "a fresh node's first restore, the registry's blobs in the page cache"; registry_restore shim_restore_registry_warm
step "the same with the page cache dropped (the registry reads its disk)"; drop_caches; registry_restore shim_restore_registry_cold
pkill -x registry; rm -rf $W/store-fresh $G/data
fi

step "floor"
floor -json -path $CK/checkpoint -streams 8 >$OUT/floor.json && python3 -c "
import json; f=json.load(open('$OUT/floor.json'))
for r in f['results']: print('  %-16s %8.2f GB/s  %s' % (r['name'], r['gbps'], r.get('note','')))"
python3 - <<'PY' >$OUT/h2d.json
import json, time, torch
n = 2 << 30
out = {}
for name, pin in (("h2d_pageable", False), ("h2d_pinned", True)):
    src = torch.empty(n, dtype=torch.uint8, pin_memory=pin); src.fill_(1)
    dst = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst.copy_(src); torch.cuda.synchronize()
    t = time.time(); dst.copy_(src); torch.cuda.synchronize()
    out[name] = n / (time.time() - t) / 1e9
print(json.dumps(out))
PY
cat $OUT/h2d.json

step "results"
{
  echo "{"
  echo "\"kind\": \"gpu-restore\", \"command\": \"integration/gpu/bench.sh (make bench-gpu), WEIGHTS_GIB=$WEIGHTS_GIB BENCH_QUICK=$BENCH_QUICK BENCH_PLAIN=$BENCH_PLAIN BENCH_REGISTRY=$BENCH_REGISTRY STORE_TMPFS=$STORE_TMPFS\","
  echo "\"machine\": \"$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(nvidia-smi -L | wc -l) GPU(s)\","
  echo "\"date\": \"$(date -u +%FT%TZ)\", \"weights_gib\": $WEIGHTS_GIB,"
  echo "\"gpu\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0)\", \"driver\": \"$(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0)\","
  echo "\"kernel\": \"$(uname -r)\", \"thp\": \"$(cat /sys/kernel/mm/transparent_hugepage/enabled)\","
  for k in "${!T[@]}"; do echo "\"$k\": ${T[$k]},"; done
  echo "\"checkpoint_phases\": $(python3 -c "import json;print(json.dumps(json.load(open('$CK/manifest.json')).get('phases')))"),"
  for n in cold cold_huge cold_huge_one_thread warm warm_huge warm_huge_again warm_huge_one_thread warm_huge_16_threads warm_huge_populate warm_huge_no_populate registry_warm registry_cold $(printf 'warm_huge_%s_threads ' $EXTRA_THREADS); do
    echo "\"status_shim_restore_$n\": $(cat $OUT/status-shim_restore_$n.json 2>/dev/null | grep . || echo null),"
  done
  echo "\"floor\": $(cat $OUT/floor.json 2>/dev/null || echo null),"
  echo "\"h2d\": $(cat $OUT/h2d.json 2>/dev/null || echo null)"
  echo "}"
} >$R
python3 -m json.tool $R >/dev/null && echo "wrote $R"
collect_logs
stop_containerd
