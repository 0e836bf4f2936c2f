#!/usr/bin/env bash
# GPU end to end, run on the GPU machine from the repository root:
#   make gpu-bundle (here), then on the GPU machine: make test-gpu
# Starts a private containerd with this shim, runs the PyTorch example
# (contrib/examples/pytorch-server) in a container assembled from the
# machine's own /usr, /etc, /opt (read-only binds) with the GPU device nodes,
# checkpoints it through the shim into a store (--exit), starts a second
# container of the same identity, which the shim restores, and compares the
# first answers. Logs go to $OUT (or /tmp/gpu-out).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
REPO=$(pwd)
S=/opt/snap
W=/tmp/snapgpu
WEIGHTS_GIB=${WEIGHTS_GIB:-2}

step() { printf '\n==> %s\n' "$*"; }
now() { date +%s.%N; }
dt() { python3 -c "print(round($2 - $1, 2))"; }

step "clean up an earlier run on this machine"
pkill -9 -f "containerd-shim-snapshot-v2" 2>/dev/null; pkill -9 -f "/app/server.py" 2>/dev/null; pkill -f "containerd --config $W" 2>/dev/null
sleep 1; grep " $W" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l; rm -rf $W

step "unpack carried binaries"
mkdir -p $S/wrap && tar -C $S -xJf .carry/bundle.tar.xz || exit 1
for b in runc criu; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/bin/%s "$@"\n' $S $S $b >$S/wrap/$b
  chmod +x $S/wrap/$b
done
export PATH=$S/wrap:$S/bin:$PATH
mkdir -p /etc/criu
# No iptables here: CRIU's network lock is skipped (runc reads this file).
echo "network-lock skip" >/etc/criu/runc.conf
criu --version | sed -n 1p; criu check; nvidia-smi --query-gpu=name,uuid,driver_version,memory.total --format=csv

step "start containerd"
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
for i in $(seq 50); do ctr --address $W/containerd.sock version >/dev/null 2>&1 && break; sleep 0.2; done
ctr() { command ctr --address $W/containerd.sock --namespace gpu "$@"; }

# rootfs: mount points and the usual symlinks; content comes from binds.
cd $W/rootfs && mkdir -p usr etc opt proc sys dev tmp run root var app && for l in bin lib lib64 sbin; do [ -L /$l ] && ln -sfn "$(readlink /$l)" $l; done; cd "$REPO"
run_worker() {
  local id=$1
  ctr run -d --runtime io.containerd.snapshot.v2 --runtime-config-path $W/handler.toml --net-host \
    --mount type=bind,src=/usr,dst=/usr,options=bind:ro --mount type=bind,src=/etc,dst=/etc,options=bind:ro \
    --mount type=bind,src=/opt,dst=/opt,options=bind:ro --mount type=bind,src=/var,dst=/var,options=bind:ro \
    --mount type=bind,src=/usr/local/nvidia,dst=/usr/local/nvidia,options=bind:ro \
    --mount type=bind,src=$REPO/contrib/examples/pytorch-server,dst=/app,options=rbind:ro \
    --mount type=tmpfs,src=tmpfs,dst=/tmp,options=rw \
    --device /dev/nvidia0 --device /dev/nvidiactl --device /dev/nvidia-uvm --device /dev/nvidia-uvm-tools \
    --env PATH=/opt/torch/.venv/bin:/usr/local/bin:/usr/bin:/bin --env LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
    --env HOME=/tmp --env PYTHONUNBUFFERED=1 --env WEIGHTS_GIB=$WEIGHTS_GIB --env NVIDIA_VISIBLE_DEVICES=0 \
    --rootfs $W/rootfs "$id" python3 /app/server.py
}
first_answer() {
  for i in $(seq 1200); do
    a=$(python3 -c 'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:8000/",timeout=2).read().decode())' 2>/dev/null) && { echo "$a"; return 0; }
    sleep 0.1
  done
  return 1
}

step "cold start"
t0=$(now); run_worker gpu-src || exit 1
A1=$(first_answer) || { echo "no answer from the cold worker"; ctr t ls; exit 1; }
t1=$(now); echo "cold start to first answer: $(dt $t0 $t1) s: $A1"
nvidia-smi --query-gpu=memory.used --format=csv

step "checkpoint through the shim (--exit)"
t0=$(now); timeout 180 ctr --address $W/containerd.sock --namespace gpu t checkpoint --exit gpu-src; rc=$?; t1=$(now)
echo "checkpoint rc=$rc in $(dt $t0 $t1) s"; du -sh $W/store; ls -la $W/store/*/ 2>/dev/null | head
[ $rc = 0 ] || ctr t kill -s 9 gpu-src
for i in $(seq 50); do ctr t ls | grep -q gpu-src.*RUNNING || break; sleep 0.2; done
ctr t rm gpu-src; ctr c rm gpu-src
cat $W/store/*/manifest.json 2>/dev/null | head -60

step "restore through the shim"
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now); run_worker gpu-dst || exit 1
A2=$(first_answer); t1=$(now)
echo "restore to first answer: $(dt $t0 $t1) s: $A2"
grep -h "snapshot:" $OUT/containerd.log | tail -5
if ! grep -q 'msg="snapshot: restored" id=gpu-dst' $OUT/containerd.log; then
  echo "RESULT: FAIL: gpu-dst was not restored"
elif [ -n "$A2" ] && [ "$A1" = "$A2" ]; then
  echo "RESULT: PASS: restored worker gave the same answer as before the checkpoint"
else
  echo "RESULT: FAIL: answers differ: before $A1, after $A2"
fi
ctr t kill -s 9 gpu-dst; sleep 1; ctr t rm gpu-dst; ctr c rm gpu-dst
cp $W/state/io.containerd.runtime.v2.task/gpu/*/*.log "$OUT/" 2>/dev/null
for f in $(find $W -name "*.log" -path "*criu*" 2>/dev/null | head -4); do cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done
kill %1 2>/dev/null
