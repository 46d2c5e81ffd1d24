"""LocMoE locality loss: does raising mu raise the share of tokens kept on their own node?

A tiny LocMoE layer (the dense ``gate: learned`` ablation, 4 experts on 2 virtual nodes of 2
devices) is trained with the toy loop (scripts/experiments/toy_loop.py) on synthetic
regression data sharded by domain the way PanGu-Sigma places data: the batch rows of node j
are N(0, I) tokens shifted along a node-specific direction, so the gate can tell where a
token lives (with i.i.d. tokens on every node no shared gate could localise anything).
Prints, for each divergence and mu, the own-node share, the task MSE and the unweighted
locality and balance losses on held-out batches, each the mean over ``--seeds`` runs.

    .venv/bin/python scripts/locality_experiment.py --backend torch
    .venv/bin/python scripts/locality_experiment.py --backend mindspore --mu 0 0.1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.runtime import Runtime  # noqa: E402
from core.params import init_params  # noqa: E402
from models.moe_config import MoEConfig  # noqa: E402
from models.moe_layer import MoELayer  # noqa: E402
from scripts.experiments.toy_loop import Batch, ToyLoop  # noqa: E402
from scripts.reporting.stats import mean_of  # noqa: E402

D_MODEL, EXPERTS, ROWS, SEQ = 16, 4, 4, 16
TOPOLOGY = {"nodes": 2, "devices_per_node": 2}


def domain_batch(rng: np.random.Generator, directions: np.ndarray, shift: float):
    """(x, target) [ROWS, SEQ, d]: row r lives on node r * nodes // ROWS (contiguous chunks, as
    ``core.topology`` splits a batch) and is shifted by ``shift`` along that node's direction."""
    nodes = directions.shape[0]
    home = np.arange(ROWS) * nodes // ROWS
    x = rng.standard_normal((ROWS, SEQ, D_MODEL)) + shift * directions[home][:, None, :]
    return x.astype(np.float32), (0.8 * np.tanh(x)).astype(np.float32)


def objective(F, outputs, target):
    """MSE plus the layer's weighted router losses; metrics: routing and loss terms."""
    y, aux = outputs
    error = y - target
    mse = F.mean(error * error)
    metrics = {"mse": mse, "own_node_share": aux["own_node_share"], "balance_loss": aux["balance_loss"]}
    if "locality_loss" in aux:
        metrics["locality_loss"] = aux["locality_loss"]
    return mse + aux["loss"], metrics


def locality_run(runtime: Runtime, mu: float, divergence: str = "forward", steps: int = 40, seed: int = 0,
                 epsilon: float = 0.01, shift: float = 1.5, lr: float = 2e-2,
                 eval_batches: int = 4) -> Dict[str, float]:
    """Train one layer for ``steps`` steps on ``runtime`` (``backends.runtime.Runtime``);
    returns the held-out own_node_share, mse, locality_loss (unweighted; nan when mu = 0,
    where it is not computed) and balance_loss."""
    options = {"gate": "learned", "topology": dict(TOPOLOGY), "locality_coef": mu,
               "locality_divergence": divergence, "locality_epsilon": epsilon}
    layer = MoELayer(MoEConfig(d_model=D_MODEL, ffn_hidden=16, num_experts=EXPERTS, top_k=1, router="locmoe",
                               dispatch="dropless", expert_init_std=0.2, router_options=options))
    loop = ToyLoop(runtime, layer, init_params(layer.param_specs(), seed), objective, lr)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((TOPOLOGY["nodes"], D_MODEL))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    def batch(source: np.random.Generator) -> Batch:
        x, target = domain_batch(source, directions, shift)
        return (x,), (target,)

    loop.train(steps, lambda previous: batch(rng))
    held_out = np.random.default_rng(seed + 10_000)
    rows = loop.evaluate(batch(held_out) for _ in range(eval_batches))
    keys = ("own_node_share", "mse", "locality_loss", "balance_loss")
    return {k: float(np.mean([r[k] for r in rows])) if k in rows[0] else float("nan") for k in keys}


def table(runtime: Runtime, mus: Sequence[float], divergences: Sequence[str], epsilons: Sequence[float], seeds: int,
          steps: int) -> None:
    print(f"backend={runtime.backend} steps={steps} seeds={seeds} (held-out means; own-node share of an "
          f"untrained gate ~ {EXPERTS // TOPOLOGY['nodes']}/{EXPERTS} = 0.5)")
    print(f"{'divergence':>10} {'epsilon':>8} {'mu':>7} {'own_node_share':>15} {'mse':>8} {'locality_loss':>14} "
          f"{'balance_loss':>13}")
    settings = [(div, eps) for div in divergences for eps in (epsilons if div == "forward" else [None])]
    for divergence, epsilon in settings:
        for mu in mus:
            mean = mean_of([locality_run(runtime, mu, divergence, steps, seed, epsilon or 0.01)
                            for seed in range(seeds)])
            shown = "-" if epsilon is None else f"{epsilon:g}"
            print(f"{divergence:>10} {shown:>8} {mu:>7g} {mean['own_node_share']:>15.3f} {mean['mse']:>8.4f} "
                  f"{mean['locality_loss']:>14.4f} {mean['balance_loss']:>13.4f}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--mode", choices=("pynative", "graph"), default="graph", help="MindSpore execution mode")
    parser.add_argument("--mu", type=float, nargs="+", default=[0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--divergence", nargs="+", default=["forward", "reverse"])
    parser.add_argument("--epsilon", type=float, nargs="+", default=[0.01], help="forward-KL smoothing")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    runtime = Runtime(args.backend, "cpu", graph_mode=args.mode == "graph")
    table(runtime, args.mu, args.divergence, args.epsilon, args.seeds, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
