"""A tiny MoE regression problem for train-step tests: a fixed batch and an objective
(mean squared error plus the layer's router losses) written once on ``F``."""
from __future__ import annotations

import numpy as np

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer


def tiny_layer(**overrides) -> MoELayer:
    settings = dict(d_model=8, ffn_hidden=16, num_experts=4, top_k=2, expert_init_std=0.2)
    settings.update(overrides)
    return MoELayer(MoEConfig(**settings))


def regression_objective(F, outputs, target):
    """outputs = (y [B, S, d], aux), target [B, S, d] -> (mse + aux loss, metrics)."""
    y, aux = outputs
    error = y - target
    mse = F.mean(error * error)
    return mse + aux["loss"], {"mse": mse, "tokens_per_expert": aux["tokens_per_expert"],
                               "dropped_fraction": aux["dropped_fraction"]}


def fixed_batch(seed: int = 0, shape=(2, 6, 8)):
    """(x, target) float32 arrays; the target is a fixed function of x plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    target = (np.tanh(x) * 0.8 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return x, target


WORDS = ("the king queen lord lady speaks walks sings loves fears a an old young good bad castle forest "
         "river night day light dark and but or with without my thy his her our noble gentle sword crown "
         "heart song storm sea wind fire stone").split()


def write_corpus(path, sentences: int = 1500, seed: int = 0):
    """A text file of seeded pseudo-sentences (learnable word statistics) for trainer tests."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(sentences):
        words = rng.choice(WORDS, size=int(rng.integers(4, 10)))
        lines.append(" ".join(words).capitalize() + ".")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_run_config(run_dir, corpus, backend: str, graph_mode: bool = True, **sections) -> dict:
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
