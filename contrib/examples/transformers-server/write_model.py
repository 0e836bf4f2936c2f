"""Writes a Qwen3-style causal LM with random weights as safetensors, once.

Usage: write_model.py DIR [LAYERS]. 36 layers (Qwen3-4B's shape) give about
4.0e9 parameters, 7.5 GiB in bf16; more layers make bigger models for size
sweeps (each layer adds about 0.2 GiB). The weights are drawn on the GPU
from a fixed seed, so every run writes the same model.
"""
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, Qwen3Config

out = sys.argv[1]
layers = int(sys.argv[2]) if len(sys.argv) > 2 else 36
if os.path.exists(os.path.join(out, "config.json")):
    print("model already at", out)
    sys.exit(0)
t = time.time()
config = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=layers,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                     rope_theta=1000000.0, tie_word_embeddings=True, torch_dtype="bfloat16")
torch.manual_seed(1234)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
tmp = out + ".tmp"
model.save_pretrained(tmp)
os.rename(tmp, out)
n = sum(p.numel() for p in model.parameters())
print("wrote %s: %d layers, %.2fe9 parameters in %.1f s" % (out, layers, n / 1e9, time.time() - t))
