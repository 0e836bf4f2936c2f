#!/usr/bin/env bash
# Experiment, run on the GPU machine right after bench.sh (it reuses that
# run's store): restores the bench checkpoint through the shim, from the page
# cache, with transparent huge pages at "madvise" and at "always", and prints
# the shim's restore phases for each. The THP setting is put back at the end.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/thp.log") 2>&1
WEIGHTS_GIB=${WEIGHTS_GIB:-8}
. integration/gpu/lib.sh
export PATH=$S/wrap:$S/bin:$PATH
[ -d $W/store ] || { echo "no store from bench.sh in $W"; exit 1; }
CK=$(ls -d $W/store/*/)
thp=/sys/kernel/mm/transparent_hugepage/enabled
orig=$(sed 's/.*\[\(.*\)\].*/\1/' $thp)
pkill -f "containerd --config $W"; sleep 1
SNAPSHOT_LIBCUDA=/usr/local/nvidia/lib64/libcuda.so.1 containerd --config $W/config.toml --log-level debug >$OUT/containerd-thp.log 2>&1 &
for i in $(seq 50); do command ctr --address $W/containerd.sock version >/dev/null 2>&1 && break; sleep 0.2; done
n=0
for mode in madvise always madvise always; do
  n=$((n+1)); echo $mode >$thp
  cat $CK/checkpoint/* >/dev/null
  t0=$(now); run_worker thp-$n 0 || exit 1; a=$(first_answer); t1=$(now)
  echo "thp=$mode restore to first answer $(dt $t0 $t1) s: $a"
  grep -o "msg=\"snapshot: restored\" id=thp-$n phases=\"[^\"]*\"" $OUT/containerd-thp.log
  grep -E "AnonHugePages" /proc/$(pgrep -f /app/server.py | head -1)/smaps_rollup
  remove_worker thp-$n
done
echo $orig >$thp
stop_containerd
