"""Two CUDA processes in one container on one GPU: this process holds one
set of weights and serves HTTP; a worker process it starts holds another
and computes its half of every answer, over a pipe. Both have CUDA contexts
on the same GPU, so a checkpoint must lock both before it checkpoints
either, and a restore must bring both back.

Environment: WEIGHTS_GIB (per process, default 1), PORT (default 8000),
CONTROL_DIR (the shim's control directory).
"""
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from snapshot_hooks import serve  # noqa: E402

DIM = 4096


def make_weights(seed):
    layers = max(1, int(float(os.environ.get("WEIGHTS_GIB", "1")) * (1 << 30) // (DIM * DIM * 2)))
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [(torch.randn(DIM, DIM, generator=gen, device="cuda") / DIM ** 0.5).to(torch.bfloat16) for _ in range(layers)]


def forward(weights):
    x = torch.ones(8, DIM, dtype=torch.bfloat16, device="cuda")
    for w in weights:
        x = torch.tanh(x @ w)
    return float(x.float().sum().item())


if len(sys.argv) > 1 and sys.argv[1] == "worker":
    weights = make_weights(2)
    forward(weights)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps({"pid": os.getpid(), "sum": forward(weights)}), flush=True)
    sys.exit(0)

T0 = time.time()
worker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
weights = make_weights(1)
forward(weights)
if worker.stdout.readline().strip() != "ready":
    sys.exit("worker did not start")


def answer():
    worker.stdin.write("go\n")
    worker.stdin.flush()
    theirs = json.loads(worker.stdout.readline())
    return {"main": forward(weights), "worker": theirs["sum"]}


info = {"start_to_warm_s": round(time.time() - T0, 2), "worker_pid": worker.pid}
print("warm: %s" % json.dumps(info), flush=True)
serve(answer, info)
