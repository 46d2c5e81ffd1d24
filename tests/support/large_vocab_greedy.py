"""Run in a fresh process by tests/backend/test_generation.py: greedy generation with a
200,000-token vocabulary (a tiny model) on one backend, and the memory it took.

    python -m tests.support.large_vocab_greedy torch|mindspore [auto|compiled|eager]

Prints one JSON line: ``rows`` (the greedy generation), ``argmax_rows`` (the argmax of the
full forward's logits, position by position, over those rows), ``peak_growth_mb`` (the
process's peak resident memory during the timed generation, minus its resident memory just
before: Linux's VmHWM, reset through /proc/self/clear_refs after an identical warm-up
generation, in which MindSpore compiles its step) and ``vocab``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

VOCAB = 200_000
PROMPTS = [[3, 199_999, 17], [150_000, 5, 42]]
NEW_TOKENS = 6


def memory_kb(field: str) -> int:
    """VmRSS or VmHWM of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(backend: str, execution: str = "auto") -> None:
    from backends.runtime import Runtime
    from models.transformer import Transformer
    from models.transformer_config import TransformerConfig
    from tests.support.harness import numpy_weights
    from training.generation import Decoder

    config = TransformerConfig(vocab_size=VOCAB, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1,
                               ffn_hidden=32, max_seq_len=16, init_std=0.5, moe_every=0)
    model = Transformer(config)
    runtime = Runtime(backend, "cpu", graph_mode=False)
    decoder = Decoder(model, runtime.module(model, numpy_weights(model, seed=0)), execution)
    decoder.generate(PROMPTS, NEW_TOKENS, temperature=0)  # warm-up: compiles where the backend compiles
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident memory
    before = memory_kb("VmRSS")
    rows = np.stack(decoder.generate(PROMPTS, NEW_TOKENS, temperature=0).rows)
    growth = memory_kb("VmHWM") - before
    logits, _, _ = decoder.step(rows[:, :-1])
    print(json.dumps({"rows": rows.tolist(), "argmax_rows": logits.argmax(-1).tolist(),
                      "peak_growth_mb": growth / 1024, "vocab": VOCAB}))


if __name__ == "__main__":
    main(*sys.argv[1:])
