"""A transformers causal-LM server, the shape of a real inference worker.

At start it imports torch and transformers, loads a Qwen3-style model from
safetensors on disk (MODEL_DIR), compiles its forward pass with
torch.compile under PyTorch's default settings (inductor's default mode, its
parallel compile workers on: they stay beside the server, holding the GPU's
device files), warms up with a static KV cache, and answers HTTP GET / with
the greedy generation of a fixed prompt. The weights are random, written once by write_model.py;
what matters is the work a cold start does, not what the model says.

Environment: MODEL_DIR (default /models/qwen3), NEW_TOKENS (default 32),
COMPILE_MODE (default "default"; see below for reduce-overhead),
PORT (default 8000), CONTROL_DIR (the shim's control directory: it writes
ready-for-checkpoint there once warm and, when the shim asks before a
checkpoint, hands the allocator's free reserve back: common/snapshot_hooks.py).
"""
import json
import os
import sys
import time

T0 = time.time()
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from snapshot_hooks import serve  # noqa: E402

T_IMPORT = time.time()


def progress(what):
    """One line per start-up phase, so a slow cold start shows where it is."""
    print("%7.1f s  %s" % (time.time() - T0, what), flush=True)


progress("imported torch %s" % torch.__version__)
MODEL_DIR = os.environ.get("MODEL_DIR", "/models/qwen3")
NEW_TOKENS = int(os.environ.get("NEW_TOKENS", "32"))
# A fixed prompt of token ids: no tokenizer is needed to tell answers apart.
PROMPT = torch.tensor([[151644, 872, 198, 3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644, 77091, 198]])

model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.bfloat16, device_map="cuda")
model.eval()
torch.cuda.synchronize()
T_WEIGHTS = time.time()
progress("weights on the GPU")
model.generation_config.cache_implementation = "static"
# One compile, ours: transformers would otherwise compile the static-cache
# decode step itself as well.
model.generation_config.disable_compile = True
# inductor's default mode. "reduce-overhead" (CUDA graph trees) refuses
# transformers 5's StaticCache: its layers update a cumulative_length tensor
# in place, cudagraphs skip the 108 mutated inputs of a 36-layer model and the
# next generation fails with "accessing tensor output of CUDAGraphs that has
# been overwritten" (H100, torch 2.11, 2026-12-05). COMPILE_MODE picks another.
COMPILE_MODE = os.environ.get("COMPILE_MODE", "default")


def generate():
    with torch.inference_mode():
        out = model.generate(PROMPT.to("cuda"), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    return out[0, PROMPT.shape[1]:].tolist()


def compile_and_warm(mode):
    """Compile the forward pass in mode and run it until every shape it
    serves is compiled (and, under reduce-overhead, its CUDA graphs recorded
    and replayed)."""
    model.forward = torch.compile(eager_forward, mode=None if mode == "default" else mode)
    for i in range(3):  # compile (prefill and decode shapes), then run compiled
        generate()
        progress("compiled generation %d (mode %s)" % (i + 1, mode))


# One eager generation first: the static KV cache is then allocated outside
# the compiled region (under reduce-overhead it would otherwise be the output
# of a CUDA graph that the next replay overwrites).
eager_forward = model.forward
generate()
progress("eager generation")
compile_and_warm(COMPILE_MODE)
T_WARM = time.time()
TIMES = {"import_s": round(T_IMPORT - T0, 2), "weights_s": round(T_WEIGHTS - T_IMPORT, 2),
         "compile_and_warmup_s": round(T_WARM - T_WEIGHTS, 2), "start_to_warm_s": round(T_WARM - T0, 2),
         "compiled_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
         "compile_threads": torch._inductor.config.compile_threads, "compile_mode": COMPILE_MODE}
print("warm: %s" % json.dumps(TIMES), flush=True)

RELEASE_COMPILE_POOL = os.environ.get("RELEASE_COMPILE_POOL", "1") != "0"


def release():
    """Before a checkpoint: hand the caching allocator's free reserve back to
    the driver, so the checkpoint does not carry it; it regrows on demand.
    Unless RELEASE_COMPILE_POOL=0, also shut inductor's compile pool down
    (its processes and their memory leave the checkpoint; a later compile
    starts a new pool)."""
    before = torch.cuda.memory_reserved()
    torch.cuda.empty_cache()
    out = {"reserved_before": before, "reserved_after": torch.cuda.memory_reserved(),
           "allocated": torch.cuda.memory_allocated()}
    if RELEASE_COMPILE_POOL:
        from torch._inductor import async_compile
        t = time.time()
        async_compile.shutdown_compile_workers()
        out["compile_pool_shutdown_s"] = round(time.time() - t, 2)
    return out


serve(lambda: {"tokens": generate()}, TIMES, release=release)
