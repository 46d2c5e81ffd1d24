"""Where one MoE layer's forward+backward time goes, on torch and MindSpore alike: the layer
is timed cut after each phase (prefixes of the same code path, ``models/`` unchanged), and a
phase's cost is the difference between consecutive prefixes.

  route    router logits, softmax, top-k, aux losses  -> out = the [T, k] weights
  permute  + the dropless plan (sort by expert) and the row gather -> out = rows [kT, d]
  experts  + the three grouped matmuls and SwiGLU   -> out = expert outputs [kT, d]
  combine  + weighting and the scatter-add back to tokens (the full layer) -> y [T, d]

(In the permute and experts prefixes the router's gradient comes from the aux losses
only; the backward through the top-k weights is counted in combine, where it starts.)

Each prefix's loss is sum(out * c) + aux loss with a fixed random c of out's shape, so
every prefix runs its full backward too. Prefixes are timed round-robin in one process.

    PYTHONPATH=. .venv/bin/python -m scripts.bench.phases --framework torch --tokens 4096
    PYTHONPATH=. .venv/bin/python -m scripts.bench.phases --framework ms-graph --tokens 4096
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
from typing import Callable, Dict, List

import numpy as np

from models.dispatch.dropless import dropless_plan
from models.moe_layer import MoELayer
from models.routers.context import routing_context
from scripts.bench.common import BenchSettings, Case, inputs, layer_weights, time_round_robin
from scripts.bench.environment import MALLOC_MODES, worker_environment
from scripts.bench.mindspore_cases import fwd_bwd_step

PHASES = ("route", "permute", "experts", "combine")


class LayerPrefix:
    """The dropless MoE layer cut after ``phase``; parameters and names as ``MoELayer``."""

    def __init__(self, settings: BenchSettings, phase: str) -> None:
        self.layer = MoELayer(settings.moe_config("dropless"))
        self.phase = phase

    def param_specs(self):
        return self.layer.param_specs()

    def check_inputs(self, x) -> None:
        return None

    def forward(self, F, params: dict, x):
        layer = self.layer
        if self.phase == "combine":
            return layer.forward(F, params, x)
        c = layer.config
        routing = layer.router.route(F, params, x, routing_context())
        coefs = layer.router.loss_coefs()
        aux = {"loss": sum(coefs[name] * value for name, value in routing["losses"].items())}
        if self.phase == "route":
            return routing["expert_weight"], aux
        plan = dropless_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts, c.num_slots)
        rows = F.gather_rows(x, plan["token"])
        if self.phase == "permute":
            return rows, aux
        return layer.experts.grouped(F, params, rows, plan["tokens_per_expert"]), aux


def out_shape(settings: BenchSettings, phase: str):
    k_rows = settings.tokens * settings.top_k
    return {"route": (settings.tokens, settings.top_k), "permute": (k_rows, settings.d_model),
            "experts": (k_rows, settings.d_model), "combine": (settings.tokens, settings.d_model)}[phase]


def torch_steps(settings: BenchSettings) -> List[Case]:
    import torch

    from backends.torch_shell import TorchModule
    x = torch.tensor(inputs(settings)[0], requires_grad=True)
    cases = []
    for phase in PHASES:
        module = TorchModule(LayerPrefix(settings, phase), values=layer_weights(settings))
        cot = torch.tensor(np.random.default_rng(5).standard_normal(out_shape(settings, phase)).astype(np.float32))

        def step(module=module, cot=cot):
            for p in list(module.parameters()) + [x]:
                p.grad = None
            out, aux = module(x)
            ((out * cot).sum() + aux["loss"]).backward()
            return out.detach().numpy()
        cases.append(Case(phase, "torch", "dropless", step))
    return cases


def mindspore_steps(settings: BenchSettings, mode: str) -> List[Case]:
    import mindspore as ms

    from backends.mindspore_shell import MindSporeModule, select_device
    os.environ.setdefault("GLOG_v", "3")
    select_device("cpu", graph_mode=(mode == "graph"))
    x = ms.Tensor(inputs(settings)[0])
    cases = []
    for phase in PHASES:
        module = MindSporeModule(LayerPrefix(settings, phase), values=layer_weights(settings))
        cot = ms.Tensor(np.random.default_rng(5).standard_normal(out_shape(settings, phase)).astype(np.float32))
        cases.append(Case(phase, f"ms-{mode}", "dropless", fwd_bwd_step(module, x, cot)))
    return cases


def phase_table(rows: List[Dict], faults_per_step: float) -> str:
    """Median fwd+bwd ms of each prefix, the phase's own share (difference), and its percent."""
    medians = {row["name"]: row["median_ms"] for row in rows if "median_ms" in row}
    lines = [f"{'phase':<9} {'prefix ms':>10} {'phase ms':>9} {'share':>6}"]
    previous, total = 0.0, medians.get("combine", float("nan"))
    for phase in PHASES:
        if phase not in medians:
            error = next((row["error"] for row in rows if row["name"] == phase), "")
            lines.append(f"{phase:<9} {'-':>10}  {error}")
            continue
        own = medians[phase] - previous
        lines.append(f"{phase:<9} {medians[phase]:>10.1f} {own:>9.1f} {100 * own / total:>5.0f}%")
        previous = medians[phase]
    lines.append(f"minor page faults per step (all prefixes): {faults_per_step:.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("torch", "ms-graph", "ms-pynative"), default="torch")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--ffn-hidden", type=int, default=2048)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="heap")
    parser.add_argument("--reexec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    environment = worker_environment(args.malloc, "PASSIVE")
    if not args.reexec:  # glibc reads the malloc settings at start-up: start again with them
        os.execv(sys.executable, [sys.executable, "-m", "scripts.bench.phases", "--reexec"] + sys.argv[1:])
    settings = BenchSettings(d_model=args.d_model, ffn_hidden=args.ffn_hidden, num_experts=args.experts,
                             tokens=args.tokens, warmup=2, repeats=args.repeats)
    build: Callable = torch_steps if args.framework == "torch" else (
        lambda s: mindspore_steps(s, args.framework.split("-", 1)[1]))
    cases = build(settings)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rows = time_round_robin(cases, settings)
    steps = len(cases) * (settings.warmup + settings.repeats)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
    print(f"{args.framework}: d={args.d_model} ffn={args.ffn_hidden} experts={args.experts} top-2 "
          f"tokens={args.tokens}, {args.repeats} rounds, {' '.join(f'{k}={v}' for k, v in environment.items())}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(phase_table(rows, faults))
    return 0


if __name__ == "__main__":
    sys.exit(main())
