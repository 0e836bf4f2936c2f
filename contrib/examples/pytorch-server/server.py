"""Example inference worker for the snapshot shim.

Loads WEIGHTS_GIB of bf16 weights (from a safetensors file when WEIGHTS_FILE
names one, else generated from a fixed seed), warms up, captures a CUDA graph
of its forward pass and answers HTTP GET / with a deterministic result.
With CONTROL_DIR set it writes ready-for-checkpoint there once warm.
"""
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch

START = time.time()
GIB = float(os.environ.get("WEIGHTS_GIB", "1"))
DIM = 8192
device = torch.device("cuda")


def load_weights():
    path = os.environ.get("WEIGHTS_FILE")
    if path and os.path.exists(path):
        from safetensors.torch import load_file
        return [t.to(device) for _, t in sorted(load_file(path).items())]
    gen = torch.Generator(device="cpu").manual_seed(1234)
    per_layer = DIM * DIM * 2
    layers = max(1, int(GIB * (1 << 30) // per_layer))
    return [(torch.randn(DIM, DIM, generator=gen) / DIM ** 0.5).to(torch.bfloat16).to(device) for _ in range(layers)]


weights = load_weights()
x_static = torch.ones(16, DIM, dtype=torch.bfloat16, device=device)


def forward(x):
    for w in weights:
        x = torch.tanh(x @ w)
    return x


for _ in range(3):
    forward(x_static)
torch.cuda.synchronize()
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    y_static = forward(x_static)
graph.replay()
torch.cuda.synchronize()
WARM = time.time() - START


def answer():
    graph.replay()
    torch.cuda.synchronize()
    return {"checksum": float(y_static.float().sum().item()), "layers": len(weights)}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(answer()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


control = os.environ.get("CONTROL_DIR")
if control:
    with open(os.path.join(control, "ready-for-checkpoint"), "w") as f:
        f.write("warm after %.1fs\n" % WARM)
print("warm after %.1fs, %d layers" % (WARM, len(weights)), flush=True)
HTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
