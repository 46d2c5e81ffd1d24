"""The byte accounting of a run on the simulated cluster: the all-to-all bytes from the
library's row counters (``parallel.traffic``), gloo's ring all-reduce bytes across nodes,
the share of assignments kept on their node, and what the accounting needs from a config."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from parallel.traffic import ELEMENT_BYTES, step_bytes
from scripts.cluster_sim.network import WORLD


def ring_cross_edges(world: int, ranks_per_node: int) -> int:
    """Edges r -> r+1 (mod world) of the all-reduce ring whose ends are on different nodes."""
    return sum((r // ranks_per_node) != (((r + 1) % world) // ranks_per_node) for r in range(world))


def ring_allreduce_cross_bytes(grad_bytes: float, world: int, ranks_per_node: int) -> float:
    """Bytes a ring all-reduce of ``grad_bytes`` per rank sends across nodes (both directions):
    every edge carries reduce-scatter + all-gather = 2 (W-1)/W of the buffer."""
    return 2 * (world - 1) / world * grad_bytes * ring_cross_edges(world, ranks_per_node)


def a2a_cross_bytes(records: Sequence[dict], first_step: int, d_model: int, element_bytes: int, world: int) -> float:
    """All-to-all bytes across nodes, forward + backward, summed over ranks, for the steps
    after ``first_step`` (``parallel.traffic.step_bytes`` of their rows): every train record
    holds the mean over its interval of the per-rank (rank-averaged) a2a_cross_node_rows."""
    total, previous = 0.0, first_step
    for record in records:
        if record["step"] > first_step:
            total += record.get("a2a_cross_node_rows", 0.0) * (record["step"] - previous)
            previous = record["step"]
    return step_bytes(total, d_model, element_bytes, world)


def kept_share(record: dict, dropless: bool, tokens_per_rank: int, top_k: int, moe_layers: int) -> Optional[float]:
    """Share of assignments that stay on their token's node: the router's own_node_share, or
    from the counters for dropless dispatch (a cross-node assignment is a dispatch + combine
    pair of rows); None when neither says."""
    if record.get("own_node_share") is not None:
        return float(record["own_node_share"])
    if not dropless:
        return None
    assignments = tokens_per_rank * top_k * moe_layers
    return 1.0 - record.get("a2a_cross_node_rows", 0.0) / 2 / assignments


@dataclass(frozen=True)
class Model:
    """What the byte accounting needs from a router's config."""

    d_model: int
    element_bytes: int  # of the run's dtype: activations and gradients
    top_k: int
    dropless: bool
    moe_layers: int
    tokens_per_rank: int
    grad_bytes: int  # replicated (non-expert) trainable parameters


def model_facts(config_path: Path, overrides: Sequence[str]) -> Model:
    """Read the config and count the replicated parameters (framework-free)."""
    import numpy as np

    from models.transformer import Transformer
    from training.config import load_config, transformer_config
    config = load_config(config_path, list(overrides))
    vocab = config.model.vocab_size or config.data.vocab_size
    model = Transformer(transformer_config(config, vocab))
    replicated = sum(int(np.prod(s.shape)) for s in model.param_specs().values() if s.trainable and not s.expert_sharded)
    element_bytes = ELEMENT_BYTES[config.dtype]
    return Model(config.model.d_model, element_bytes, config.moe.top_k, config.moe.dispatch == "dropless",
                 len(model.moe_layers), config.train.batch_size // WORLD * config.data.seq_len,
                 replicated * element_bytes)
