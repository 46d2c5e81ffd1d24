"""LocMoE / LocMoE+ capacity policies: what the measured bound does to tokens per expert,
drops and the task loss, against moe.capacity_factor and a Switch baseline.

Trains a tiny layer with the toy loop (scripts/experiments/toy_loop.py) on N(0, I) tokens
(target 0.8 tanh(x)); after every step the router's ``after_step`` gets the step's metrics,
and when its ``static_key`` changes (a new capacity, hence new shapes) the train step is
rebuilt with the optimizer state carried over. LocMoE uses its default gate, the paper's ReLU(GrAP(x) + eps). First
prints what Theorem 1's bound gives under each ``bound_unit`` reading in the paper's regime
(d = 5120, n = 16, delta ~ 0.03) and in ours; then, per router, ``capacity_policy`` and
``bound_unit``: the bound (or factor) in use at the end, the slots per expert it gives, the
measured cosine, tokens per expert (mean over experts and the last 10 steps), the dropped
fraction and the held-out MSE, each the mean over ``--seeds`` runs. With
``--thresholds``, a second table sweeps LocMoE+'s token-choice threshold (top_k = n, cf 1):
experts chosen per token, tokens per expert, drops and MSE.

    .venv/bin/python scripts/capacity_experiment.py --backend torch
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.runtime import Runtime  # noqa: E402
from core.params import init_params  # noqa: E402
from models.capacity_bound import capacity_bound, device_capacity, device_capacity_in_tokens, large_d_capacity_bound  # noqa: E402
from models.moe_config import MoEConfig  # noqa: E402
from models.moe_layer import MoELayer  # noqa: E402
from scripts.experiments.toy_loop import Batch, ToyLoop  # noqa: E402
from scripts.reporting.stats import mean_of  # noqa: E402

D_MODEL, EXPERTS, ROWS, SEQ = 32, 4, 4, 32
CASES = [("switch", None, None), ("locmoe", "factor", None), ("locmoe", "bound", "factor"),
         ("locmoe", "bound", "tokens"), ("locmoe_plus", "factor", None), ("locmoe_plus", "bound", "factor"),
         ("locmoe_plus", "bound", "tokens")]
PAPER_REGIME = (5120, 16, 0.03)  # d, n and the measured delta of LocMoE's experiments
MEASURED = {"locmoe": "affinity_delta", "locmoe_plus": "affinity_max"}


def batch(rng: np.random.Generator) -> Batch:
    """((x,), (target,)): x [ROWS, SEQ, d] N(0, I), target 0.8 tanh(x)."""
    x = rng.standard_normal((ROWS, SEQ, D_MODEL)).astype(np.float32)
    return (x,), ((0.8 * np.tanh(x)).astype(np.float32),)


def objective(F, outputs, target):
    y, aux = outputs
    error = y - target
    mse = F.mean(error * error)
    metrics = {"mse": mse, "tokens_per_expert": aux["tokens_per_expert"], "dropped_fraction": aux["dropped_fraction"],
               "experts_per_token": aux["mean_true_experts_per_token"]}
    for key in MEASURED.values():
        if key in aux:
            metrics[key] = aux[key]
    return mse + aux["loss"], metrics


def capacity_run(runtime: Runtime, router: str, options: dict, steps: int, seed: int, top_k: int = 1,
                 lr: float = 2e-2) -> Dict[str, float]:
    """Train one layer with capacity dispatch for ``steps`` steps, the router's host-side
    capacity updated after every step; the numbers of one row of the tables (``main``)."""
    layer = MoELayer(MoEConfig(d_model=D_MODEL, ffn_hidden=16, num_experts=EXPERTS, top_k=top_k, router=router,
                               dispatch="capacity", capacity_factor=1.0, expert_init_std=0.2,
                               router_options=options))
    loop = ToyLoop(runtime, layer, init_params(layer.param_specs(), seed), objective, lr, router=layer.router)
    rng = np.random.default_rng(seed)
    history = loop.train(steps, lambda previous: batch(rng))
    last = history[-10:]
    held_out = np.random.default_rng(seed + 10_000)
    mse = float(np.mean([m["mse"] for m in loop.evaluate(batch(held_out) for _ in range(4))]))
    measured = [float(m[MEASURED[router]]) for m in history] if router in MEASURED else []
    factor = layer.config.capacity_factor if router == "switch" else layer.router.capacity_factor
    slots = layer.config.capacity(ROWS * SEQ) if router == "switch" else (
        layer.router.capacity(ROWS * SEQ) if router == "locmoe_plus" else layer.router.capacity_per_device(ROWS * SEQ))
    return {"capacity_factor": factor, "slots": slots, "measured": float(np.mean(measured)) if measured else float("nan"),
            "tokens_per_expert": float(np.mean([float(np.mean(m["tokens_per_expert"])) for m in last])),
            "dropped": float(np.mean([float(m["dropped_fraction"]) for m in last])), "mse": mse,
            "experts_per_token": float(np.mean([float(m["experts_per_token"]) for m in last]))}


def options_for(router: str, policy, unit) -> dict:
    options = {} if policy is None else {"capacity_policy": policy}
    if unit is not None:
        options.update(bound_unit=unit)
    if router == "locmoe_plus":
        options.update(capacity_interval=10)
    return options


def bound_readings(d: int, n: int, delta: float, tokens: int) -> str:
    """One line: Theorem 1's ec_min and the large-d form at (d, n, delta), and the slots per
    expert each reading gives for a batch of ``tokens`` on one device."""
    exact, large_d = capacity_bound(delta, d, n), large_d_capacity_bound(delta, d, n)
    return (f"d={d:>5} n={n:>3} delta={delta:.3f}: ec_min={exact:.3f} (large-d form {large_d:.3f}); "
            f"T={tokens}: as a factor ec=ceil(T*ec_min/n)={device_capacity(tokens, exact, 1, n)} "
            f"(balanced share {tokens / n:g}), as tokens ec=ceil(ec_min)={device_capacity_in_tokens(tokens, exact, 1)}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--mode", choices=("pynative", "graph"), default="graph", help="MindSpore execution mode")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[], help="LocMoE+ token_threshold sweep")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    runtime = Runtime(args.backend, "cpu", graph_mode=args.mode == "graph")
    tokens = ROWS * SEQ
    print("Theorem 1 under both readings of ec_min (bound_unit: factor | tokens):")
    print("  paper: " + bound_readings(*PAPER_REGIME, tokens=4096))  # T: an example batch per device
    print(f"backend={args.backend} d={D_MODEL} n={EXPERTS} T={tokens} (cf=1 share: {tokens // EXPERTS} tokens "
          f"per expert) steps={args.steps} seeds={args.seeds}")
    print(f"{'router':>12} {'policy':>7} {'unit':>7} {'final':>7} {'slots':>6} {'measured':>9} {'tokens/expert':>14} "
          f"{'dropped':>8} {'mse':>8}")
    measured = {}
    for router, policy, unit in CASES:
        mean = mean_of([capacity_run(runtime, router, options_for(router, policy, unit), args.steps, seed)
                        for seed in range(args.seeds)])
        print(f"{router:>12} {policy or '-':>7} {unit or '-':>7} {mean['capacity_factor']:>7.3f} {mean['slots']:>6.1f} "
              f"{mean['measured']:>9.3f} {mean['tokens_per_expert']:>14.2f} {mean['dropped']:>8.3f} {mean['mse']:>8.4f}")
        if router == "locmoe" and policy == "bound":
            measured[router] = mean["measured"]
    if "locmoe" in measured:
        print("  ours:  " + bound_readings(D_MODEL, EXPERTS, measured["locmoe"], tokens=tokens))
    if args.thresholds:
        print(f"{'threshold':>10} {'experts/token':>14} {'tokens/expert':>14} {'dropped':>8} {'mse':>8}")
    for threshold in args.thresholds:
        options = {"capacity_policy": "factor", "token_threshold": threshold}
        mean = mean_of([capacity_run(runtime, "locmoe_plus", options, args.steps, seed, top_k=EXPERTS)
                        for seed in range(args.seeds)])
        print(f"{threshold:>10g} {mean['experts_per_token']:>14.2f} {mean['tokens_per_expert']:>14.2f} "
              f"{mean['dropped']:>8.3f} {mean['mse']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
