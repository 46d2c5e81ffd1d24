"""Toy task of Kool, Maddison & Mnih (2021): does an unbiased router find the right expert?
(scripts/kool_toy.py runs it, scripts/experiments/kool.py runs it for the Results.)

Task (ours; the paper's toy is not available to us). Datapoints come from K = E clusters,
x = mu_c + noise_std * N(0, I). The E experts are fixed GELU FFNs that share part of their
weights, W_e = sqrt(rho) W_shared + sqrt(1 - rho) W_own,e, and the target of a datapoint of
cluster c is expert c's output h_c(x): only expert c solves cluster c, but every other
expert is partly right (``similarity`` rho), so a router that greedily reinforces its
current choice can settle on a wrong expert. Only the router (x W, d x E) is trained, with
the shared train step (AdamW, ``toy_loop.ToyLoop``), on batches of T tokens with capacity
factor 1.0. Per-token loss l_t = mean_d (y_t - h_c(x_t))^2, the experts scaled so that the
targets have unit mean square (y = 0 gives about 1); the layer output is y_t = p_{t e}
h_e(x_t) for the token's expert e (0 if dropped).

Methods: ``skip`` and ``balanced`` (unbiased estimators, score term added with a moving
average baseline), ``skip_naive`` and ``balanced_naive`` (``correction: false``), ``skip_loo``
and ``balanced_token`` (the language-model settings of configs/skip.yaml and balanced.yaml:
leave-one-out baseline, balanced with ``reward: token``; the moving average then cancels), ``switch`` and
``topk`` (top-2, renormalised) with ``dispatch: capacity`` (deterministic, biased: drops
and no exploration), all with the Switch balance loss where the router has one.
Reported per method over seeds (task instances): success = fraction of held-out datapoints
whose most probable expert is their cluster's, solved = share of seeds with success >=
``solved``, loss = held-out loss routing every datapoint to its most probable expert (no
capacity), train = mean training task loss over the last 10% of steps (each run also
returns its per-step training task loss as ``curve``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from backends.runtime import Runtime
from core.params import init_params
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from scripts.experiments.toy_loop import Batch, Metrics, ToyLoop
from scripts.reporting.stats import stats
from scripts.reporting.tables import fmt_mean_sd

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


@dataclass(frozen=True)
class ToySettings:
    """One task's options (scripts/kool_toy.py's command line, the ``toy`` mapping of
    configs/experiments/kool.yaml): ``steps`` of ``tokens`` tokens, ``experts`` clusters and
    experts of width ``d_model`` -> ``ffn_hidden``, the experts' shared weight share
    ``similarity``, the clusters' ``separation`` from 0 and ``noise_std``, the router's
    ``router_init_std`` and ``lr``, and the success that counts as ``solved``."""

    steps: int = 400
    tokens: int = 64
    experts: int = 4
    d_model: int = 8
    ffn_hidden: int = 16
    similarity: float = 0.6
    separation: float = 3.0
    noise_std: float = 0.5
    router_init_std: float = 0.1
    lr: float = 0.03
    solved: float = 0.95


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


def gelu(z: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


class Task:
    """One instance: cluster centres, fixed experts, the target scale."""

    def __init__(self, settings: ToySettings, seed: int) -> None:
        rng = np.random.default_rng(seed)
        d, f, e = settings.d_model, settings.ffn_hidden, settings.experts
        centres = rng.standard_normal((e, d))
        self.centres = settings.separation * centres / np.linalg.norm(centres, axis=1, keepdims=True)
        rho = settings.similarity

        def mix(shape):
            """sqrt(rho) * (one matrix for all experts) + sqrt(1 - rho) * (one per expert)."""
            own = np.sqrt(1 - rho) * rng.standard_normal(shape)
            return ((np.sqrt(rho) * rng.standard_normal(shape[1:]) + own) / np.sqrt(shape[1])).astype(np.float32)

        self.experts = {"experts.w_up": mix((e, d, f)), "experts.w_down": mix((e, f, d))}
        self.noise_std = settings.noise_std
        x, cluster = self.sample(rng, 4096)
        self.experts["experts.w_down"] /= np.sqrt(np.mean(self.targets(x, cluster) ** 2))

    def sample(self, rng: np.random.Generator, n: int):
        """x [n, d] float32 and each point's cluster [n]."""
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


def run(settings: ToySettings, runtime: Runtime, method: str, seed: int) -> Dict[str, object]:
    """One task instance (``seed``) trained with ``method`` on ``runtime``
    (``backends.runtime.Runtime``): success, loss, train, dropped and curve (module docstring)."""
    task = Task(settings, seed)
    config = MoEConfig(d_model=settings.d_model, ffn_hidden=settings.ffn_hidden, num_experts=settings.experts,
                       expert_type="gelu", capacity_factor=1.0, router_init_std=settings.router_init_std,
                       **METHODS[method])
    model = FrozenExpertsModel(MoELayer(config))
    values = init_params(model.param_specs(), seed + 1000)
    values.update(task.experts)
    runtime.seed(seed + 4000)  # the routing noise of skip and balanced comes from F.uniform
    loop = ToyLoop(runtime, model, values, objective, settings.lr)
    rng = np.random.default_rng(seed + 2000)
    baseline = [1.0]  # moving average of the training task loss

    def draw(previous: Optional[Metrics]) -> Batch:
        if previous is not None:
            baseline[0] = 0.9 * baseline[0] + 0.1 * float(previous["task"])
        x, cluster = task.sample(rng, settings.tokens)
        return (x,), (task.targets(x, cluster).astype(np.float32), np.asarray(baseline[0], np.float32))

    history = loop.train(settings.steps, draw)
    curve = [float(m["task"]) for m in history]
    x, cluster = task.sample(np.random.default_rng(seed + 3000), 4096)
    success, loss = evaluate(task, loop.module.numpy_params()["router.weight"], x, cluster)
    tail = max(1, settings.steps // 10)
    return {"success": success, "loss": loss, "train": float(np.mean(curve[-tail:])),
            "dropped": float(np.mean([float(m["dropped_fraction"]) for m in history[-tail:]])), "curve": curve}


def summary_headers(solved: float) -> List[str]:
    """The columns of ``summary_cells``."""
    return ["success", f"solved (>= {solved})", "held-out loss", "train loss (last 10%)", "dropped"]


def summary_cells(runs: Sequence[Dict[str, object]], solved: float) -> List[str]:
    """One method's seeds: success, seeds solved, held-out loss, training loss and dropped
    fraction, each mean ± sd."""
    success = [r["success"] for r in runs]
    return [fmt_mean_sd(stats(success)), f"{sum(s >= solved for s in success)}/{len(success)}",
            fmt_mean_sd(stats([r["loss"] for r in runs])), fmt_mean_sd(stats([r["train"] for r in runs])),
            fmt_mean_sd(stats([r["dropped"] for r in runs]))]
