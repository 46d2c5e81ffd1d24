"""Toy task of Kool, Maddison & Mnih (2021): does an unbiased router find the right expert?

Trains the task of scripts/experiments/kool_task.py (its docstring: the clusters, the fixed
experts, the methods and what is reported) for each of ``--methods`` over ``--seeds`` task
instances on one backend (MindSpore in PyNative), and prints a markdown table per method:
success (mean ± sd), seeds solved, held-out loss, training loss (last 10% of steps) and
dropped fraction. ``--json`` also writes every run (with its per-step training loss) and the
settings.

    .venv/bin/python scripts/kool_toy.py --backend torch --json /tmp/kool_toy.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.experiments.kool_task import METHODS, ToySettings, run, summary_cells, summary_headers  # noqa: E402
from scripts.reporting.tables import markdown_table  # noqa: E402

HELP = {"tokens": "tokens per batch (a multiple of --experts)",
        "similarity": "rho: weight share common to all experts",
        "separation": "distance of cluster centres from 0", "solved": "success rate that counts as solved"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    for option in fields(ToySettings):
        parser.add_argument("--" + option.name.replace("_", "-"), type=type(option.default), default=option.default,
                            help=HELP.get(option.name))
    parser.add_argument("--json", help="write per-run results and the settings here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from backends.runtime import Runtime
    runtime = Runtime(args.backend, "cpu", graph_mode=False)
    settings = ToySettings(**{option.name: getattr(args, option.name) for option in fields(ToySettings)})
    results = {method: [run(settings, runtime, method, seed) for seed in range(args.seeds)]
               for method in args.methods}
    print(markdown_table(["method", *summary_headers(settings.solved)],
                         [[method, *summary_cells(runs, settings.solved)] for method, runs in results.items()]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
