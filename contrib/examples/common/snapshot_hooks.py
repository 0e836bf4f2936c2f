"""The workload side of the snapshot shim's control directory, for the
examples: serve answers over HTTP, say when warm, and (optionally) shrink
before a checkpoint and grow back after it.

The shim bind-mounts a per-container directory at its handler's control_dir
and names it to the workload through CONTROL_DIR here. Files:
  ready-for-checkpoint   workload -> shim: warm; auto_checkpoint = "on-ready" checkpoints now
  prepare-on-checkpoint  workload -> shim: ask me to prepare before each checkpoint
  checkpoint-prepare     shim -> workload: a checkpoint is about to start
  checkpoint-prepared    workload -> shim: memory released, go ahead
  checkpoint-done        shim -> workload: the checkpoint ended, the source goes on
  restore-complete       shim -> workload: this process was restored from a checkpoint
A workload that ignores all of them still checkpoints and restores.
"""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL = os.environ.get("CONTROL_DIR", "")


def _path(name):
    return os.path.join(CONTROL, name)


def _write(name, text):
    tmp = _path("." + name)
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, _path(name))


def _watch(release, resume, stats):
    """Answers each checkpoint-prepare: release(), then wait for the end."""
    while True:
        if not os.path.exists(_path("checkpoint-prepare")) or os.path.exists(_path("checkpoint-prepared")):
            time.sleep(0.05)
            continue
        freed = release() if release else None
        stats["last_release"] = freed
        _write("checkpoint-prepared", json.dumps({"released": freed}) + "\n")
        while not (os.path.exists(_path("checkpoint-done")) or os.path.exists(_path("restore-complete"))):
            time.sleep(0.05)
        if resume:
            resume()


def serve(answer, info, release=None, resume=None, port=None):
    """Serves GET / with answer() as JSON (GET /info: info), tells the shim
    it is warm, and runs the prepare exchange when release is given."""
    stats = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/info":
                body = dict(info, **stats)
            else:
                with lock:
                    body = answer()
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), port or int(os.environ.get("PORT", "8000"))), Handler)
    if CONTROL and os.path.isdir(CONTROL):
        if release:
            _write("prepare-on-checkpoint", "\n")
            threading.Thread(target=_watch, args=(release, resume, stats), daemon=True).start()
        _write("ready-for-checkpoint", json.dumps(info) + "\n")
    server.serve_forever()
