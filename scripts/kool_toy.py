"""Toy task of Kool, Maddison & Mnih (2021): does an unbiased router find the right expert?

Task (ours; the paper's toy is not available to us). Datapoints come from K = E clusters,
x = mu_c + noise_std * N(0, I). The E experts are fixed GELU FFNs that share part of their
weights, W_e = sqrt(rho) W_shared + sqrt(1 - rho) W_own,e, and the target of a datapoint of
cluster c is expert c's output h_c(x): only expert c solves cluster c, but every other
expert is partly right (``--similarity`` rho), so a router that greedily reinforces its
current choice can settle on a wrong expert. Only the router (x W, d x E) is trained, with
the shared train step (AdamW), on batches of T tokens with capacity factor 1.0.
Per-token loss l_t = mean_d (y_t - h_c(x_t))^2, the experts scaled so that the targets
have unit mean square (y = 0 gives about 1); the layer output is y_t = p_{t e} h_e(x_t) for
the token's expert e (0 if dropped).

Methods: ``skip`` and ``balanced`` (unbiased estimators, score term added with a moving
average baseline), ``skip_naive`` and ``balanced_naive`` (``correction: false``), ``skip_loo``
and ``balanced_token`` (the language-model settings of configs/skip.yaml and balanced.yaml:
leave-one-out baseline, balanced with ``reward: token``; the moving average then cancels), ``switch`` and
``topk`` (top-2, renormalised) with ``dispatch: capacity`` (deterministic, biased: drops
and no exploration), all with the Switch balance loss where the router has one.
Reported per method over ``--seeds`` task instances: success = fraction of held-out
datapoints whose most probable expert is their cluster's, solved = share of seeds with
success >= 0.95, loss = held-out loss routing every datapoint to its most probable expert
(no capacity), train = mean training task loss over the last 10% of steps (each run also
returns its per-step training task loss as ``curve``).

    .venv/bin/python scripts/kool_toy.py --backend torch --json /tmp/kool_toy.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.train_step import make_train_step  # noqa: E402
from core.params import init_params  # noqa: E402
from models.moe_config import MoEConfig  # noqa: E402
from models.moe_layer import MoELayer  # noqa: E402

METHODS = {
    "skip": dict(router="skip", top_k=1),
    "balanced": dict(router="balanced", top_k=1),
    "skip_naive": dict(router="skip", top_k=1, router_options={"correction": False}),
    "balanced_naive": dict(router="balanced", top_k=1, router_options={"correction": False}),
    "skip_loo": dict(router="skip", top_k=1, router_options={"baseline": "leave_one_out"}),
    "balanced_token": dict(router="balanced", top_k=1, router_options={"reward": "token", "baseline": "leave_one_out"}),
    "switch": dict(router="switch", top_k=1, dispatch="capacity"),
    "topk": dict(router="topk", top_k=2, dispatch="capacity"),
}


class FrozenExpertsModel:
    """A MoE layer whose experts are fixed: only the router's parameters are trainable."""

    def __init__(self, layer: MoELayer) -> None:
        self.layer = layer

    def param_specs(self):
        specs = self.layer.param_specs()
        return {name: (spec if name.startswith("router.") else replace(spec, trainable=False))
                for name, spec in specs.items()}

    def check_inputs(self, x) -> None:
        self.layer.check_inputs(x)

    def forward(self, F, params: dict, x):
        return self.layer.forward(F, params, x)


def objective(F, outputs, target, baseline):
    """Mean token loss + router losses + the score term of stochastic routers:
    mean_t stop_gradient(l_t - baseline) * routing_log_prob[t]."""
    y, aux = outputs
    token_loss = F.mean((y - target) * (y - target), -1)
    loss = F.mean(token_loss) + aux["loss"]
    if "routing_log_prob" in aux:
        loss = loss + F.mean(F.stop_gradient(token_loss - baseline) * aux["routing_log_prob"])
    return loss, {"task": F.mean(token_loss), "dropped_fraction": aux["dropped_fraction"]}


def build_module(backend: str, component, values, seed: int):
    """The backend's module, after seeding the framework RNG (the routing noise of skip and
    balanced comes from F.uniform), so a run repeats on the same backend."""
    if backend == "torch":
        from backends.torch_shell import TorchModule, seed_everything
        seed_everything(seed)
        return TorchModule(component, values=values)
    from backends.mindspore_shell import MindSporeModule, seed_everything
    seed_everything(seed)
    return MindSporeModule(component, values=values)


def gelu(z: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


class Task:
    """One instance: cluster centres, fixed experts, the target scale."""

    def __init__(self, args, seed: int) -> None:
        rng = np.random.default_rng(seed)
        d, f, e = args.d_model, args.ffn_hidden, args.experts
        centres = rng.standard_normal((e, d))
        self.centres = args.separation * centres / np.linalg.norm(centres, axis=1, keepdims=True)
        rho = args.similarity

        def mix(shape):
            """sqrt(rho) * (one matrix for all experts) + sqrt(1 - rho) * (one per expert)."""
            own = np.sqrt(1 - rho) * rng.standard_normal(shape)
            return ((np.sqrt(rho) * rng.standard_normal(shape[1:]) + own) / np.sqrt(shape[1])).astype(np.float32)

        self.experts = {"experts.w_up": mix((e, d, f)), "experts.w_down": mix((e, f, d))}
        self.noise_std = args.noise_std
        x, cluster = self.sample(rng, 4096)
        self.experts["experts.w_down"] /= np.sqrt(np.mean(self.targets(x, cluster) ** 2))

    def sample(self, rng: np.random.Generator, n: int):
        cluster = rng.integers(0, len(self.centres), n)
        x = self.centres[cluster] + self.noise_std * rng.standard_normal((n, self.centres.shape[1]))
        return x.astype(np.float32), cluster

    def expert_outputs(self, x: np.ndarray) -> np.ndarray:
        """h_e(x) for every expert: [E, n, d]."""
        return np.einsum("enf,efd->end", gelu(np.einsum("nd,edf->enf", x, self.experts["experts.w_up"])),
                         self.experts["experts.w_down"])

    def targets(self, x: np.ndarray, cluster: np.ndarray) -> np.ndarray:
        return self.expert_outputs(x)[cluster, np.arange(len(x))]


def evaluate(task: Task, router_weight: np.ndarray, x: np.ndarray, cluster: np.ndarray):
    """(success, loss) with every datapoint routed to its most probable expert, no capacity."""
    logits = x @ router_weight
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    best = probs.argmax(-1)
    rows = np.arange(len(x))
    y = probs[rows, best][:, None] * task.expert_outputs(x)[best, rows]
    return float((best == cluster).mean()), float(np.mean((y - task.targets(x, cluster)) ** 2, -1).mean())


def run(args, backend: str, method: str, seed: int) -> Dict[str, object]:
    task = Task(args, seed)
    config = MoEConfig(d_model=args.d_model, ffn_hidden=args.ffn_hidden, num_experts=args.experts,
                       expert_type="gelu", capacity_factor=1.0, router_init_std=args.router_init_std,
                       **METHODS[method])
    model = FrozenExpertsModel(MoELayer(config))
    values = init_params(model.param_specs(), seed + 1000)
    values.update(task.experts)
    module = build_module(backend, model, values, seed + 4000)
    step = make_train_step(backend, module, objective, lr=args.lr)
    rng = np.random.default_rng(seed + 2000)
    baseline, history, drops = 1.0, [], []
    for _ in range(args.steps):
        x, cluster = task.sample(rng, args.tokens)
        target = task.targets(x, cluster).astype(np.float32)
        _, metrics, _ = step.step((x,), (target, np.asarray(baseline, np.float32)), args.lr)
        history.append(float(metrics["task"]))
        drops.append(float(metrics["dropped_fraction"]))
        baseline = 0.9 * baseline + 0.1 * history[-1]
    x, cluster = task.sample(np.random.default_rng(seed + 3000), 4096)
    weight = module.numpy_params()["router.weight"]
    success, loss = evaluate(task, weight, x, cluster)
    tail = max(1, args.steps // 10)
    return {"success": success, "loss": loss, "train": float(np.mean(history[-tail:])),
            "dropped": float(np.mean(drops[-tail:])), "curve": history}


def table(results: Dict[str, List[Dict[str, float]]], threshold: float) -> str:
    lines = ["| method | success (mean ± sd) | solved | held-out loss | train loss | dropped |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method, runs in results.items():
        s = np.array([r["success"] for r in runs])
        lines.append(f"| {method} | {s.mean():.3f} ± {s.std():.3f} | {int((s >= threshold).sum())}/{len(s)} | "
                     f"{np.mean([r['loss'] for r in runs]):.3f} | {np.mean([r['train'] for r in runs]):.3f} | "
                     f"{np.mean([r['dropped'] for r in runs]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per batch (a multiple of --experts)")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=8)
    parser.add_argument("--ffn-hidden", type=int, default=16)
    parser.add_argument("--similarity", type=float, default=0.6, help="rho: weight share common to all experts")
    parser.add_argument("--separation", type=float, default=3.0, help="distance of cluster centres from 0")
    parser.add_argument("--noise-std", type=float, default=0.5)
    parser.add_argument("--router-init-std", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--solved", type=float, default=0.95, help="success rate that counts as solved")
    parser.add_argument("--json", help="write per-run results and the settings here")
    args = parser.parse_args()
    if args.backend == "mindspore":
        from backends.mindspore_shell import select_device
        select_device("cpu")
    results = {method: [run(args, args.backend, method, seed) for seed in range(args.seeds)]
               for method in args.methods}
    print(table(results, args.solved))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
