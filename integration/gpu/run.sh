#!/usr/bin/env bash
# GPU end to end, run on the GPU machine from the repository root:
#   make gpu-bundle (here), then on the GPU machine: make test-gpu
# Cold-starts the PyTorch example (contrib/examples/pytorch-server) on GPU 0
# through this shim, checkpoints it into a store (ctr t checkpoint --exit),
# restores it into a new container on GPU 0 and, on a machine with two GPUs,
# into another on GPU 1 (the driver remaps the GPU UUID), comparing each
# first answer with the one given before the checkpoint. Prints one
# "RESULT: PASS|FAIL" line per check and exits non-zero on any FAIL. Logs go
# to $OUT (or /tmp/gpu-out).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
WEIGHTS_GIB=${WEIGHTS_GIB:-2}
. integration/gpu/lib.sh
failed=0
result() { if [ "$1" = PASS ]; then echo "RESULT: PASS: $2"; else echo "RESULT: FAIL: $2"; failed=1; fi; }

step "clean up an earlier run on this machine"; cleanup_earlier
step "unpack carried binaries"; unpack_bundle || exit 1
step "start containerd"; start_containerd
GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)

step "cold start on GPU 0"
t0=$(now); run_worker gpu-src 0 || exit 1
A1=$(first_answer) || { echo "no answer from the cold worker"; ctr t ls; exit 1; }
t1=$(now); echo "cold start to first answer: $(dt $t0 $t1) s: $A1"

step "checkpoint through the shim (--exit)"
t0=$(now); timeout 300 $CTR t checkpoint --exit gpu-src; rc=$?; t1=$(now)
echo "checkpoint rc=$rc in $(dt $t0 $t1) s"; du -sh $W/store
remove_worker gpu-src
M=$(cat $W/store/*/manifest.json 2>/dev/null)
echo "$M" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(json.dumps({k: m.get(k) for k in ("name","identity","gpus","driver_version","phases")}, indent=1))'
SRC_UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
if echo "$M" | grep -q "\"uuid\": *\"$SRC_UUID\"" && echo "$M" | grep -q '"driver_version": *"5'; then
  result PASS "manifest records GPU 0 ($SRC_UUID) and the driver version"
else
  result FAIL "manifest lacks GPU 0's UUID or the driver version"
fi

# restore_on ID GPU: restores into a new container on GPU and compares.
restore_on() {
  drop_caches
  local t0 t1 a
  t0=$(now); run_worker "$1" "$2" || { result FAIL "ctr run $1"; return; }
  a=$(first_answer); t1=$(now)
  echo "restore to first answer on GPU $2: $(dt $t0 $t1) s: $a"
  status_of "$1"; echo
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
  if ! restored "$1"; then
    result FAIL "$1 was not restored: $(status_of "$1")"
  elif [ -n "$a" ] && [ "$A1" = "$a" ]; then
    result PASS "restored onto GPU $2, same answer as before the checkpoint"
  else
    result FAIL "restored onto GPU $2, answers differ: before $A1, after $a"
  fi
  remove_worker "$1"
}

step "restore through the shim onto GPU 0"; restore_on gpu-dst 0
if [ "$GPUS" -ge 2 ]; then
  step "restore through the shim onto GPU 1 (checkpointed on GPU 0)"; restore_on gpu-dst1 1
else
  echo "one GPU: the cross-GPU restore needs nvidia-h100-x2"
fi
collect_logs
stop_containerd
exit $failed
