# Shared by the GPU scripts (run.sh, bench.sh); sourced from the repository
# root on the GPU machine after `make gpu-bundle` here. Sets up a private
# containerd with this shim and a rootfs assembled from the machine's own
# /usr, /etc, /opt (read-only binds), and offers run_worker / first_answer.
S=/opt/snap
W=/tmp/snapgpu
REPO=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
now() { date +%s.%N; }
dt() { python3 -c "print(round($2 - $1, 2))"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

cleanup_earlier() {
  pkill -9 -f "containerd-shim-snapshot-v2" 2>/dev/null; pkill -9 -f "/app/server.py" 2>/dev/null; pkill -9 -f "/examples/" 2>/dev/null
  pkill -9 -f "contrib/examples/pytorch-server/server.py" 2>/dev/null; pkill -x registry 2>/dev/null; pkill -f "containerd --config $W" 2>/dev/null
  sleep 1; grep " $W" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l; rm -rf $W
}

unpack_bundle() {
  mkdir -p $S/wrap && tar -C $S -xJf .carry/bundle.tar.xz || return 1
  for b in runc criu; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/bin/%s "$@"\n' $S $S $b >$S/wrap/$b
    chmod +x $S/wrap/$b
  done
  export PATH=$S/wrap:$S/bin:$PATH
  mkdir -p /etc/criu
  # No iptables here: CRIU's network lock is skipped (runc reads this file).
  echo "network-lock skip" >/etc/criu/runc.conf
  criu --version | sed -n 1p; criu check
  nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total --format=csv
}

start_containerd() {
  mkdir -p $W/root $W/state $W/store $W/rootfs
  cat >$W/config.toml <<CFG
version = 3
root = "$W/root"
state = "$W/state"
[grpc]
  address = "$W/containerd.sock"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
CFG
  printf 'store = "%s"\n' $W/store >$W/handler.toml
  SNAPSHOT_LIBCUDA=/usr/local/nvidia/lib64/libcuda.so.1 containerd --config $W/config.toml --log-level debug >$OUT/containerd.log 2>&1 &
  for i in $(seq 50); do command ctr --address $W/containerd.sock version >/dev/null 2>&1 && break; sleep 0.2; done
  # rootfs: mount points and the usual symlinks; content comes from binds.
  (cd $W/rootfs && mkdir -p usr etc opt proc sys dev tmp run root var app && for l in bin lib lib64 sbin; do [ -L /$l ] && ln -sfn "$(readlink /$l)" $l; done)
}
ctr() { command ctr --address $W/containerd.sock --namespace gpu "$@"; }
# CTR is ctr for commands run under timeout(1), which cannot call functions.
CTR="ctr --address $W/containerd.sock --namespace gpu"

# run_worker ID GPU [ENV=value...]: the PyTorch example in a container given
# GPU index GPU (its device node and NVIDIA_VISIBLE_DEVICES), with the
# handler options in $HANDLER (default $W/handler.toml).
run_worker() {
  local id=$1 gpu=$2; shift 2
  local extra=()
  for e in "$@"; do extra+=(--env "$e"); done
  ctr run -d --runtime io.containerd.snapshot.v2 --runtime-config-path ${HANDLER:-$W/handler.toml} --net-host \
    --mount type=bind,src=/usr,dst=/usr,options=bind:ro --mount type=bind,src=/etc,dst=/etc,options=bind:ro \
    --mount type=bind,src=/opt,dst=/opt,options=bind:ro --mount type=bind,src=/var,dst=/var,options=bind:ro \
    --mount type=bind,src=/usr/local/nvidia,dst=/usr/local/nvidia,options=bind:ro \
    --mount type=bind,src=$REPO/contrib/examples/pytorch-server,dst=/app,options=rbind:ro \
    --mount type=tmpfs,src=tmpfs,dst=/tmp,options=rw \
    --device /dev/nvidia$gpu --device /dev/nvidiactl --device /dev/nvidia-uvm --device /dev/nvidia-uvm-tools \
    --env PATH=/opt/torch/.venv/bin:/usr/local/bin:/usr/bin:/bin --env LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
    --env HOME=/tmp --env PYTHONUNBUFFERED=1 --env WEIGHTS_GIB=$WEIGHTS_GIB --env NVIDIA_VISIBLE_DEVICES=$gpu \
    "${extra[@]}" --rootfs $W/rootfs "$id" python3 /app/server.py
}

# run_example ID GPU SCRIPT [ENV=value...]: an example of contrib/examples
# (SCRIPT relative to it, e.g. two-process-server/frontend.py) in a
# container given GPU index GPU, with contrib/examples at /examples and
# $MODELS (written by transformers-server/write_model.py) at /models.
run_example() {
  local id=$1 gpu=$2 script=$3; shift 3
  local extra=()
  for e in "$@"; do extra+=(--env "$e"); done
  mkdir -p $MODELS $OUT/logs
  ctr run -d --log-uri file://$OUT/logs/$id.log --runtime io.containerd.snapshot.v2 --runtime-config-path ${HANDLER:-$W/handler.toml} --net-host \
    --mount type=bind,src=/usr,dst=/usr,options=bind:ro --mount type=bind,src=/etc,dst=/etc,options=bind:ro \
    --mount type=bind,src=/opt,dst=/opt,options=bind:ro --mount type=bind,src=/var,dst=/var,options=bind:ro \
    --mount type=bind,src=/usr/local/nvidia,dst=/usr/local/nvidia,options=bind:ro \
    --mount type=bind,src=$REPO/contrib/examples,dst=/examples,options=rbind:ro \
    --mount type=bind,src=$MODELS,dst=/models,options=rbind:ro \
    --mount type=tmpfs,src=tmpfs,dst=/tmp,options=rw \
    --device /dev/nvidia$gpu --device /dev/nvidiactl --device /dev/nvidia-uvm --device /dev/nvidia-uvm-tools \
    --env PATH=/opt/torch/.venv/bin:/usr/local/bin:/usr/bin:/bin --env LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
    --env HOME=/tmp --env PYTHONUNBUFFERED=1 --env NVIDIA_VISIBLE_DEVICES=$gpu \
    "${extra[@]}" --rootfs $W/rootfs "$id" python3 /examples/$script
}
MODELS=${MODELS:-/var/tmp/snapmodels}

# first_answer [PORT]: waits up to $FIRST_ANSWER_TIMEOUT s (120) for the worker's first answer,
# asking every 10 ms from one process (a new python per attempt and 0.1 s
# between attempts added up to 0.15 s to the times measured). With
# WATCH_PID set, it gives up as soon as that process is gone.
first_answer() {
  python3 - "${1:-8000}" "${FIRST_ANSWER_TIMEOUT:-120}" "${WATCH_PID:-}" <<'PY'
import os, sys, time, urllib.request
url, deadline, watch = "http://127.0.0.1:%s/" % sys.argv[1], time.time() + float(sys.argv[2]), sys.argv[3]
while time.time() < deadline:
    if watch and not os.path.exists("/proc/" + watch):
        sys.exit(2)
    try:
        print(urllib.request.urlopen(url, timeout=2).read().decode())
        sys.exit(0)
    except Exception:
        time.sleep(0.01)
sys.exit(1)
PY
}

# remove_worker ID: kills and deletes a container.
remove_worker() {
  ctr t kill -s 9 "$1" 2>/dev/null
  for i in $(seq 50); do ctr t ls | grep -q "^$1 .*RUNNING" || break; sleep 0.2; done
  ctr t rm "$1" 2>/dev/null; ctr c rm "$1" 2>/dev/null
}

# status_of ID: the shim's snapshot-status of a running container.
status_of() { cat /run/containerd-shim-snapshot/$1/snapshot-status 2>/dev/null; }

# restored ID: whether the shim logged a restore of ID.
restored() { grep -q "msg=\"snapshot: restored\" id=$1" $OUT/containerd.log; }

# task_pid ID: the host pid of container ID's first process.
task_pid() { ctr t ls | awk -v id="$1" '$1 == id {print $2}'; }

collect_logs() {
  cp $W/state/io.containerd.runtime.v2.task/gpu/*/*.log "$OUT/" 2>/dev/null
  for f in $(find $W -name "*.log" -path "*criu*" 2>/dev/null | head -4); do cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done
}

stop_containerd() { pkill -f "containerd --config $W" 2>/dev/null; }

# ckpt_bytes: bytes of the store's checkpoint (all files).
ckpt_bytes() { du -sb $W/store/*/ | awk '{s+=$1} END {print s}'; }
