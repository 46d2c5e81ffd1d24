"""The toy of Kool, Maddison & Mnih (2021) with seeds: does each router find every cluster's
right expert? Unbiased (skip, balanced) against their uncorrected versions and the biased
capacity routers (switch, top-2).

Runs scripts/kool_toy.py's task (its options in configs/experiments/kool.yaml) for every method
(or ``--methods``) and seed on one backend (MindSpore in PyNative, as kool_toy.py does), keeps
every result in docs/results/kool.json (a later call for another backend or other methods adds
to it, replacing what it reruns) and redraws the table
(.md: success mean ± sd, seeds solved, held-out and training loss, drops, per backend) and
the plot (.png: success per seed, and the training task loss over steps, mean over seeds).

    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend torch --methods skip balanced skip_naive
    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend torch --methods balanced_naive switch topk
    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend mindspore
    ... --seeds 1 --set steps=10 --name dry   # a dry run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.experiments.common import (save_figure, RESULTS, ROOT, command_line, fmt_mean_sd, machine,  # noqa: E402
                                        markdown_table, mean_sd, read_spec, write_results)

NAME = "kool"
SPEC = ROOT / "configs" / "experiments" / f"{NAME}.yaml"


TOY_OPTIONS = ("steps", "tokens", "experts", "d_model", "ffn_hidden", "similarity", "separation", "noise_std",
               "router_init_std", "lr", "solved")  # what scripts/kool_toy.run reads


def toy_args(settings: Dict[str, Any]) -> argparse.Namespace:
    """kool_toy.py's options from the spec's ``toy`` mapping: every one of TOY_OPTIONS, no other."""
    if set(settings) != set(TOY_OPTIONS):
        raise SystemExit(f"{SPEC}: toy options must be exactly {', '.join(TOY_OPTIONS)}; "
                         f"missing {sorted(set(TOY_OPTIONS) - set(settings))}, unknown {sorted(set(settings) - set(TOY_OPTIONS))}")
    return argparse.Namespace(**settings)


def table(payload: Dict[str, Any]) -> str:
    rows = []
    for backend, methods in payload["results"].items():
        threshold = payload["toy"]["solved"]
        for method, runs in methods.items():
            success = [r["success"] for r in runs]
            rows.append([backend, f"`{method}`", fmt_mean_sd(mean_sd(success)),
                         f"{sum(s >= threshold for s in success)}/{len(success)}",
                         fmt_mean_sd(mean_sd([r["loss"] for r in runs])),
                         fmt_mean_sd(mean_sd([r["train"] for r in runs])),
                         fmt_mean_sd(mean_sd([r["dropped"] for r in runs]))])
    return markdown_table(["backend", "method", "success", f"solved (>= {payload['toy']['solved']})",
                           "held-out loss", "train loss (last 10%)", "dropped"], rows, align="llrrrrr")


def plot(payload: Dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backends = list(payload["results"])
    fig, axes = plt.subplots(len(backends), 2, figsize=(11, 3.8 * len(backends)), squeeze=False)
    for (dots, curves), backend in zip(axes, backends):
        methods = payload["results"][backend]
        for i, (method, runs) in enumerate(methods.items()):
            success = np.array([r["success"] for r in runs])
            jitter = np.linspace(-0.15, 0.15, len(success))
            dots.scatter(i + jitter, success, s=14, alpha=0.7)
            dots.errorbar(i + 0.3, success.mean(), yerr=success.std(), fmt="k_", capsize=3)
            curve = np.array([r["curve"] for r in runs]).mean(0)
            window = max(1, len(curve) // 40)
            curves.plot(np.convolve(curve, np.ones(window) / window, mode="valid"), label=method)
        dots.set_xticks(range(len(methods)), list(methods), rotation=15, fontsize=8)
        dots.axhline(payload["toy"]["solved"], color="grey", ls=":", lw=1)
        dots.set_ylabel("success (held-out, per seed)")
        dots.set_title(f"{backend}: right expert is the most probable", fontsize=10)
        curves.set_xlabel("step")
        curves.set_ylabel("training task loss (mean over seeds)")
        curves.set_title(f"{backend}: training", fontsize=10)
        curves.legend(fontsize=8)
        for ax in (dots, curves):
            ax.grid(alpha=0.3)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), required=True)
    parser.add_argument("--methods", nargs="+", help="a subset of the spec's methods (results of the others are kept)")
    parser.add_argument("--seeds", type=int, help="task instances per method (default: the spec's)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="OPTION=VALUE",
                        help="change one toy option (a dry run: --set steps=10)")
    parser.add_argument("--name", default=NAME, help="results file stem under docs/results (dry runs: another)")
    args = parser.parse_args()
    spec = read_spec(SPEC)
    from training.yaml_io import parse_yaml
    settings = {**spec["toy"], **{k: parse_yaml(v, f"--set {k}") for k, v in (e.split("=", 1) for e in args.extra)}}
    toy = toy_args(settings)
    if args.backend == "mindspore":
        from backends.mindspore_shell import select_device
        select_device("cpu")
    from scripts.kool_toy import run
    path = RESULTS / f"{args.name}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"results": {}, "runs": []}
    results = payload["results"].setdefault(args.backend, {})
    payload["runs"].append({**machine(), "command": command_line()})
    payload.update(toy=vars(toy), spec=str(SPEC.relative_to(ROOT)))
    for method in args.methods or spec["methods"]:
        started = time.perf_counter()
        results[method] = [{**r, "curve": [round(v, 4) for v in r["curve"]]}
                           for r in (run(toy, args.backend, method, seed) for seed in range(args.seeds or spec["seeds"]))]
        print(f"{args.backend} {method}: success {[round(r['success'], 3) for r in results[method]]} "
              f"({time.perf_counter() - started:.0f}s)", flush=True)
        payload["results"][args.backend] = {m: results[m] for m in spec["methods"] if m in results}
        payload["runs"][-1].update(machine())  # the load average after the latest method
        write_results(args.name, payload, table(payload), payload["runs"])  # after every method: a cut run keeps its part
        plot(payload, RESULTS / f"{args.name}.png")
    print(table(payload))


if __name__ == "__main__":
    main()
