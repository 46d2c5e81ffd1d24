"""The toy of Kool, Maddison & Mnih (2021) with seeds: does each router find every cluster's
right expert? Unbiased (skip, balanced) against their uncorrected versions and the biased
capacity routers (switch, top-2).

Runs scripts/experiments/kool_task.py's task (its options in configs/experiments/kool.yaml) for every method
(or ``--methods``) and seed on one backend (MindSpore in PyNative, as kool_toy.py does), keeps
every result in docs/results/kool.json (a later call for another backend or other methods adds
to it, replacing what it reruns) and redraws the table
(_table.md: success mean ± sd, seeds solved, held-out and training loss, drops, per backend) and
the plot (.png: success per seed, and the training task loss over steps, mean over seeds).

    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend torch --methods skip balanced skip_naive
    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend torch --methods balanced_naive switch topk
    PYTHONPATH=. .venv/bin/python scripts/experiments/kool.py --backend mindspore
    ... --seeds 1 --set steps=10 --name dry   # a dry run
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.experiments.kool_task import ToySettings, run, summary_cells, summary_headers  # noqa: E402
from scripts.experiments.lm_runs import read_spec  # noqa: E402
from scripts.reporting.figures import pyplot  # noqa: E402
from scripts.reporting.provenance import ROOT, command_line, machine  # noqa: E402
from scripts.reporting.results_files import load_payload, write_results  # noqa: E402
from scripts.reporting.tables import markdown_table  # noqa: E402

NAME = "kool"
SPEC = ROOT / "configs" / "experiments" / f"{NAME}.yaml"


def toy_settings(settings: Dict[str, Any]) -> ToySettings:
    """The task's options from the spec's ``toy`` mapping: every field of ToySettings, no other."""
    names = {option.name for option in fields(ToySettings)}
    if set(settings) != names:
        raise SystemExit(f"{SPEC}: toy options must be exactly {', '.join(sorted(names))}; "
                         f"missing {sorted(names - set(settings))}, unknown {sorted(set(settings) - names)}")
    return ToySettings(**settings)


def table(payload: Dict[str, Any]) -> str:
    """A row per backend and method: ``kool_task.summary_cells`` over its seeds."""
    solved = payload["toy"]["solved"]
    rows = [[backend, f"`{method}`", *summary_cells(runs, solved)]
            for backend, methods in payload["results"].items() for method, runs in methods.items()]
    return markdown_table(["backend", "method", *summary_headers(solved)], rows, align="llrrrrr")


def figure(payload: Dict[str, Any]):
    """Per backend: success per seed and method, and the training task loss over steps."""
    backends = list(payload["results"])
    fig, axes = pyplot().subplots(len(backends), 2, figsize=(11, 3.8 * len(backends)), squeeze=False)
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
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), required=True)
    parser.add_argument("--methods", nargs="+", help="a subset of the spec's methods (results of the others are kept)")
    parser.add_argument("--seeds", type=int, help="task instances per method (default: the spec's)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="OPTION=VALUE",
                        help="change one toy option (a dry run: --set steps=10)")
    parser.add_argument("--name", default=NAME, help="results file stem under docs/results (dry runs: another)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = read_spec(SPEC)
    from backends.runtime import Runtime
    from training.yaml_io import parse_yaml
    toy = toy_settings({**spec["toy"], **{k: parse_yaml(v, f"--set {k}")
                                          for k, v in (e.split("=", 1) for e in args.extra)}})
    runtime = Runtime(args.backend, "cpu", graph_mode=False)
    payload = load_payload(args.name)
    results = payload["results"].setdefault(args.backend, {})
    payload["runs"].append({**machine(), "command": command_line(argv)})
    payload.update(toy=asdict(toy), spec=str(SPEC.relative_to(ROOT)))
    for method in args.methods or spec["methods"]:
        started = time.perf_counter()
        results[method] = [{**r, "curve": [round(v, 4) for v in r["curve"]]}
                           for r in (run(toy, runtime, method, seed) for seed in range(args.seeds or spec["seeds"]))]
        print(f"{args.backend} {method}: success {[round(r['success'], 3) for r in results[method]]} "
              f"({time.perf_counter() - started:.0f}s)", flush=True)
        payload["results"][args.backend] = {m: results[m] for m in spec["methods"] if m in results}
        payload["runs"][-1].update(machine())  # the load average after the latest method
        # after every method: a cut run keeps its part
        write_results(args.name, payload, table(payload), figure(payload), calls=payload["runs"])
    print(table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
