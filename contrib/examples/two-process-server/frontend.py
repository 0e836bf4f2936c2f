"""A two-process server, the shape of vLLM's API server and engine core.

This front end never touches CUDA: it starts the engine (engine.py) as a
separate process, passes each request to it through a shared-memory ring in
/dev/shm and a Unix socket that carries only "slot ready" notices, and
answers HTTP GET / with the engine's result. The engine holds the GPU.

Environment: WEIGHTS_GIB (engine weights, default 2), PORT (default 8000),
CONTROL_DIR (the shim's control directory).
"""
import json
import os
import socket
import subprocess
import sys
import time
from multiprocessing import shared_memory

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from snapshot_hooks import serve  # noqa: E402
from ring import Ring  # noqa: E402

T0 = time.time()
SOCK = "/tmp/engine.sock"
SHM = "snapshot-example-ring"

ring = Ring(shared_memory.SharedMemory(name=SHM, create=True, size=Ring.SIZE))
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if os.path.exists(SOCK):
    os.unlink(SOCK)
listener.bind(SOCK)
listener.listen(1)
engine = subprocess.Popen([sys.executable, os.path.join(HERE, "engine.py"), SOCK, SHM])
conn, _ = listener.accept()
hello = json.loads(conn.recv(4096).decode())  # the engine says it is warm
seq = 0


def answer():
    """One request: prompt into the ring, a notice over the socket, the
    result back through the ring."""
    global seq
    seq += 1
    ring.put(json.dumps({"seq": seq, "prompt": [1, 2, 3, 4]}).encode())
    conn.sendall(b"R")
    if conn.recv(1) != b"D":
        raise RuntimeError("engine went away")
    reply = json.loads(ring.get().decode())
    return {"result": reply["result"], "engine_pid_seen": reply["pid"] > 0}


info = {"start_to_warm_s": round(time.time() - T0, 2), "engine": hello}
print("warm: %s" % json.dumps(info), flush=True)
serve(answer, info)
