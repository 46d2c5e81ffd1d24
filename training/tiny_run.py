"""A complete language-model run small enough for seconds on one CPU: a seeded text corpus
and a two-layer MoE run config on it (the kill campaign, scripts/kill_campaign.py, and the
trainer tests run it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

WORDS = ("the king queen lord lady speaks walks sings loves fears a an old young good bad castle forest "
         "river night day light dark and but or with without my thy his her our noble gentle sword crown "
         "heart song storm sea wind fire stone").split()


def write_corpus(path: Path, sentences: int = 1500, seed: int = 0) -> Path:
    """A text file of seeded pseudo-sentences (learnable word statistics); returns ``path``."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(sentences):
        words = rng.choice(WORDS, size=int(rng.integers(4, 10)))
        lines.append(" ".join(words).capitalize() + ".")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_run_config(run_dir, corpus: Path, backend: str, graph_mode: bool = True, **sections) -> Dict[str, Any]:
    """A raw run config (for ``training.config.config_from_dict``) of a two-layer MoE LM on
    the text file ``corpus`` (tokenizer cache beside it); ``sections`` update the sections
    (e.g. train={"steps": 4}). Runs on the same corpus path see the same batches."""
    raw = {"backend": backend, "device": "cpu", "seed": 3, "run_dir": str(run_dir),
           "model": {"d_model": 16, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "ffn_hidden": 32,
                     "max_seq_len": 16, "moe_every": 2},
           "moe": {"ffn_hidden": 16, "num_experts": 4, "top_k": 2},
           "data": {"corpora": [], "files": [str(corpus)], "vocab_size": 300, "seq_len": 16,
                    "cache_dir": str(corpus.parent / "cache")},
           "train": {"steps": 6, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2, "eval_every": 0,
                     "eval_batches": 2, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 3,
                     "graph_mode": graph_mode}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    return raw
