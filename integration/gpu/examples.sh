#!/usr/bin/env bash
# The examples of contrib/examples end to end through the shim, run on the
# GPU machine from the repository root after `make gpu-bundle` here (part of
# make test-gpu; make bench-gpu runs it for the transformers server alone).
#   integration/gpu/examples.sh [two-process two-cuda transformers]
# For each example, in one run:
#   - cold start to ready (the workload says it is warm; its first answer
#     then waits for the on-ready checkpoint) with the page cache dropped (the
#     transformers server: import, weights from safetensors on disk,
#     torch.compile with PyTorch's default settings, warm-up), and the
#     server's own phase times;
#   - the checkpoint the shim takes when the workload says it is warm
#     (auto_checkpoint = on-ready, leave running); the source must answer the
#     same afterwards; image bytes against weight bytes;
#   - restore through the shim to first answer with the page cache dropped
#     (checkpoint on the store's disk) and with the checkpoint in the page
#     cache (a warm node-local copy), each with the shim's phases; answers
#     must equal the cold start's.
# Environment: MODEL_LAYERS (36), COLD_TIMEOUT (900 s to the cold start's
# first answer), EXAMPLE_ENV (more VAR=value for every container, such as
# TORCH_LOGS=recompiles). Container output goes to $OUT/logs/ID.log.
# Prints one "RESULT: PASS|FAIL" line per check, writes $OUT/examples.json
# and exits non-zero on any FAIL.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/examples.log") 2>&1
EXAMPLES=${*:-two-process two-cuda transformers}
MODEL_LAYERS=${MODEL_LAYERS:-36}
EXAMPLE_ENV=${EXAMPLE_ENV:-}
. integration/gpu/lib.sh
failed=0
result() { if [ "$1" = PASS ]; then echo "RESULT: PASS: $2"; else echo "RESULT: FAIL: $2"; failed=1; fi; }
R=$OUT/examples.json
echo "{" >$R
record() { echo "  $1 = $2"; echo "\"$1\": $2," >>$R; }

step "clean up an earlier run on this machine"; cleanup_earlier
step "unpack carried binaries"; unpack_bundle || exit 1
step "start containerd"; start_containerd

# script_of NAME: the example's entry point under contrib/examples.
script_of() {
  case $1 in
    two-process) echo two-process-server/frontend.py ;;
    two-cuda) echo two-cuda-processes/server.py ;;
    transformers) echo transformers-server/server.py ;;
  esac
}

# gpu_holders ID: every process of container ID with its anonymous memory
# (what CRIU dumps of it), what it holds of /dev/nvidia* and what the driver
# says of it (the leftovers question).
gpu_holders() {
  for pid in $(ctr t ps "$1" | awk 'NR>1 {print $1}'); do
    printf 'pid %s (%s): anon %s, maps %s, fds %s, driver: %s\n' "$pid" "$(cat /proc/$pid/comm)" \
      "$(awk '/^RssAnon/ {print $2 " " $3}' /proc/$pid/status)" \
      "$(grep -c /dev/nvidia /proc/$pid/maps)" "$(ls -l /proc/$pid/fd 2>/dev/null | grep -c /dev/nvidia)" \
      "$(SNAPSHOT_LIBCUDA=/usr/local/nvidia/lib64/libcuda.so.1 cudactl state $pid 2>&1 | tail -1)"
  done
}

# gpu_files_shared PID...: for every /dev/nvidia* fd of each pid, the fds
# of the other pids that are the same open file (kcmp), to tell inherited
# device files from a process's own.
gpu_files_shared() {
  python3 - "$@" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pids = [int(p) for p in sys.argv[1:]]
def fds(p):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % p):
        try: target = os.readlink("/proc/%d/fd/%s" % (p, fd))
        except OSError: continue
        if target.startswith("/dev/nvidia"): out[int(fd)] = target
    return out
held = {p: fds(p) for p in pids}
for p in pids:
    for fd, target in sorted(held[p].items()):
        same = ["%d:%d" % (q, qfd) for q in pids if q != p for qfd in held[q] if libc.syscall(312, p, q, 0, fd, qfd) == 0]
        print(p, fd, target, "same open file as", " ".join(same[:6]) or "none", "(%d)" % len(same))
PY
}

# wait_checkpoint ID: waits for the on-ready checkpoint of ID in its store.
wait_checkpoint() {
  for i in $(seq 1200); do
    ls $STORE/*/manifest.json >/dev/null 2>&1 && return 0
    grep -q checkpoint-failed /run/containerd-shim-snapshot/$1/snapshot-status 2>/dev/null && return 1
    sleep 0.5
  done
  return 1
}

# restore_example NAME CASE: a new container restored from the store.
restore_example() {
  local id=$1-$2 t0 t1 a
  t0=$(now); run_example $id 0 "$SCRIPT" CONTROL_DIR=/run/gpusnap MODEL_DIR=/models/qwen3 $EXAMPLE_ENV || { result FAIL "ctr run $id"; return; }
  a=$(first_answer); t1=$(now)
  record ${1}_restore_${2}_s $(dt $t0 $t1)
  status_of $id >$OUT/status-$id.json; echo "\"${1}_status_restore_${2}\": $(grep . $OUT/status-$id.json || echo null)," >>$R
  python3 -c "import json,sys; st=json.load(open(sys.argv[1])); print('  phases', st.get('phases_seconds'), 'criu', st.get('criu_stats'))" $OUT/status-$id.json 2>/dev/null
  if ! restored $id; then
    result FAIL "$1: $id was not restored: $(status_of $id)"
  elif [ -n "$a" ] && [ "$a" = "$A1" ]; then
    result PASS "$1: restored ($2 page cache) with the cold start's answer"
  else
    result FAIL "$1: restored ($2 page cache) but answers differ: before $A1, after $a"
  fi
  remove_worker $id
}

for NAME in $EXAMPLES; do
  SCRIPT=$(script_of $NAME)
  [ -n "$SCRIPT" ] || { result FAIL "unknown example $NAME"; continue; }
  STORE=$W/store-$NAME; mkdir -p $STORE
  HANDLER=$W/handler-$NAME.toml
  printf 'store = "%s"\ncontrol_dir = "/run/gpusnap"\nauto_checkpoint = "on-ready"\n' $STORE >$HANDLER
  if [ $NAME = transformers ]; then
    step "transformers: write the model once ($MODEL_LAYERS layers)"
    mkdir -p $MODELS; python3 contrib/examples/transformers-server/write_model.py $MODELS/qwen3 $MODEL_LAYERS || { result FAIL "write_model"; continue; }
    record transformers_weight_bytes $(du -cb $MODELS/qwen3/*.safetensors | tail -1 | cut -f1)
  fi

  step "$NAME: cold start (page cache dropped), checkpoint on ready"
  drop_caches
  t0=$(now); run_example $NAME-src 0 "$SCRIPT" CONTROL_DIR=/run/gpusnap MODEL_DIR=/models/qwen3 $EXAMPLE_ENV || { result FAIL "ctr run $NAME-src"; continue; }
  A1=$(WATCH_PID=$(task_pid $NAME-src) FIRST_ANSWER_TIMEOUT=${COLD_TIMEOUT:-900} first_answer) || {
    result FAIL "$NAME: no answer from the cold start"; ctr t ls; tail -20 $OUT/logs/$NAME-src.log; collect_logs; remove_worker $NAME-src; continue; }
  t1=$(now); record ${NAME}_cold_s $(dt $t0 $t1); echo "  answer $A1"
  # The workload says it is warm before it answers; the on-ready checkpoint
  # then pauses it, so the first answer above also waited for the checkpoint.
  record ${NAME}_cold_to_ready_s $(python3 -c "import os,sys; print(round(os.stat(sys.argv[1]).st_mtime - $t0, 2))" /run/containerd-shim-snapshot/$NAME-src/ready-for-checkpoint)
  echo "\"${NAME}_info\": $(curl -s http://127.0.0.1:8000/info || python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8000/info').read().decode())")," >>$R
  gpu_holders $NAME-src | tee $OUT/holders-$NAME.txt | head -8; echo "  ($(wc -l <$OUT/holders-$NAME.txt) processes)"
  if wait_checkpoint $NAME-src; then
    result PASS "$NAME: checkpointed on ready with PyTorch's default settings"
  else
    result FAIL "$NAME: no checkpoint: $(status_of $NAME-src)"
    gpu_files_shared $(ctr t ps $NAME-src | awk 'NR>1 {print $1}') >$OUT/shared-$NAME.txt 2>&1; head -20 $OUT/shared-$NAME.txt
    tail -30 $W/state/io.containerd.runtime.v2.task/gpu/$NAME-src/criu-dump.log 2>/dev/null
    grep -i "snapshot" $OUT/containerd.log | grep -i "refused\|failed\|error" | tail -5
    remove_worker $NAME-src; continue
  fi
  CK=$(ls -d $STORE/*/)
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print('  checkpoint phases', m.get('phases'), 'criu', m.get('criu_stats'))" $CK/manifest.json
  echo "\"${NAME}_checkpoint_criu_stats\": $(python3 -c "import json,sys;print(json.dumps(json.load(open(sys.argv[1])).get('criu_stats')))" $CK/manifest.json)," >>$R
  echo "\"${NAME}_checkpoint_phases\": $(python3 -c "import json,sys;print(json.dumps(json.load(open(sys.argv[1])).get('phases')))" $CK/manifest.json)," >>$R
  record ${NAME}_image_bytes $(du -sb $CK | cut -f1)
  record ${NAME}_pages_bytes $(du -cb $CK/checkpoint/pages-*.img | tail -1 | cut -f1)
  # What each process of the image carries.
  gpusnap --store $STORE inspect $(basename $CK) >$OUT/inspect-$NAME.txt 2>&1; grep -A25 "^Processes" $OUT/inspect-$NAME.txt | head -24
  grep -h "inherited-devices\|leftovers" $OUT/containerd.log | tail -2 | cut -c1-400
  sleep 1
  if [ "$(first_answer)" = "$A1" ]; then result PASS "$NAME: the source answers the same after its checkpoint"; else result FAIL "$NAME: the source answers differently after its checkpoint"; fi
  echo "\"${NAME}_prepare\": $(python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8000/info').read().decode())")," >>$R
  remove_worker $NAME-src

  step "$NAME: restore, page cache dropped"; drop_caches; restore_example $NAME cold
  step "$NAME: restore, checkpoint in the page cache"; cat $CK/checkpoint/* >/dev/null; restore_example $NAME warm
done

{
  echo "\"kind\": \"gpu-examples\", \"command\": \"integration/gpu/examples.sh $EXAMPLES\","
  echo "\"machine\": \"$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(nvidia-smi -L | wc -l) GPU(s)\","
  echo "\"gpu\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0)\", \"driver\": \"$(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0)\","
  echo "\"torch\": \"$(python3 -c 'import torch;print(torch.__version__)')\", \"kernel\": \"$(uname -r)\","
  echo "\"date\": \"$(date -u +%FT%TZ)\""
  echo "}"
} >>$R
python3 -m json.tool $R >/dev/null && echo "wrote $R"
collect_logs
stop_containerd
exit $failed
