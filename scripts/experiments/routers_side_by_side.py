"""Every router side by side: the same data, model and step budget, on torch and on MindSpore.

Trains configs/<router>.yaml for each router of configs/experiments/routers_side_by_side.yaml
with that file's overrides, once per seed, reads each run's metrics.jsonl and reports the
final validation loss, the dropped fraction, the load balance (max / mean tokens per expert,
averaged over MoE layers) and experts per token over the last half of the steps, and the
median tokens/s, each as mean ± sd over the seeds run, and the validation loss minus the dense
model's at the same seed (the seed moves every router's loss alike). Every (backend, router, seed) result
is kept in docs/results/routers_side_by_side.json (a later call adds to it), and the table
(_table.md) and plot (.png) are redrawn from all of them.

    PYTHONPATH=. .venv/bin/python scripts/experiments/routers_side_by_side.py --backend torch --seeds 0
    PYTHONPATH=. .venv/bin/python scripts/experiments/routers_side_by_side.py --backend mindspore --seeds 0
    ... --backend torch --report-only   # redraw the table and plot from the JSON
    ... --routers switch topk --set train.steps=2 --set train.warmup_steps=1 --name dry   # a dry run, seconds per router
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.experiments.lm_runs import add_spec_arguments, as_overrides, read_spec, train  # noqa: E402
from scripts.experiments.run_metrics import summarise  # noqa: E402
from scripts.reporting.figures import pyplot  # noqa: E402
from scripts.reporting.provenance import ROOT, command_line, machine  # noqa: E402
from scripts.reporting.results_files import load_payload, merge_runs, write_results  # noqa: E402
from scripts.reporting.stats import paired_difference, stats  # noqa: E402
from scripts.reporting.tables import fmt_mean_sd, markdown_table  # noqa: E402

NAME = "routers_side_by_side"
SPEC = ROOT / "configs" / "experiments" / f"{NAME}.yaml"
DELTA = "val_loss_vs_dense"  # per seed: the router's val loss minus the dense model's (same seed and backend)
COLUMNS = (("val_loss", "val loss", 3), (DELTA, "Δ val loss vs dense, same seed", 3), ("dropped_fraction", "dropped", 3), ("load_max_over_mean", "max/mean load", 2),
           ("experts_per_token", "experts/token", 2), ("tokens_per_s", "tokens/s", 0))


def run_backend(spec: Dict[str, Any], backend: str, routers, seeds, extra, out_dir: Path) -> Dict[str, Dict]:
    """{router: {seed: summary, or {"error": last line}}} for one backend."""
    results: Dict[str, Dict] = {}
    for seed in seeds:
        for router in routers:
            overrides = (as_overrides(spec["overrides"]) + as_overrides(spec.get("router_overrides", {}).get(router))
                         + [f"seed={seed}"] + list(extra))
            started = time.perf_counter()
            try:
                records = train(ROOT / "configs" / f"{router}.yaml", overrides,
                                out_dir / backend / f"{router}_seed{seed}", backend)
                result = summarise(records)
            except RuntimeError as error:
                result = {"error": str(error).splitlines()[-1]}
            results.setdefault(router, {})[str(seed)] = result
            print(f"{backend} {router} seed {seed}: {result} ({time.perf_counter() - started:.0f}s)", flush=True)
    return results


def router_stats(payload: Dict[str, Any], backend: str, router: str, key: str) -> Dict[str, Any]:
    """``stats`` over the router's seeds of ``key``, or of DELTA over the seeds the dense model
    also ran (the seed moves every router's loss alike; the difference removes that)."""
    runs = payload["results"].get(backend, {})
    if key == DELTA:
        return paired_difference(runs.get(router, {}), runs.get("dense", {}))
    return stats([run.get(key) for run in runs.get(router, {}).values() if "error" not in run])


def table(payload: Dict[str, Any]) -> str:
    """One row per router and backend (the backends of a router next to each other)."""
    backends = [b for b in ("torch", "mindspore") if b in payload["results"]]
    rows = []
    for router in payload["routers"]:
        for backend in backends:
            runs = payload["results"][backend].get(router, {})
            if not runs:
                continue
            failed = [run["error"] for run in runs.values() if "error" in run]
            seeds = f"{len(runs) - len(failed)}" + (f" ({len(failed)} failed: {failed[0]})" if failed else "")
            rows.append([f"`{router}`", backend] + [fmt_mean_sd(router_stats(payload, backend, router, key), digits)
                                                    for key, _, digits in COLUMNS] + [seeds])
    return markdown_table(["router", "backend"] + [label for _, label, _ in COLUMNS] + ["seeds"], rows,
                          align="ll" + "r" * (len(COLUMNS) + 1))


def figure(payload: Dict[str, Any]):
    """A bar panel per column (mean ± sd over seeds), the backends side by side."""
    import numpy as np
    routers = payload["routers"]
    backends = [b for b in ("torch", "mindspore") if b in payload["results"]]
    panels = (("val_loss", "validation loss (lower is better)"), (DELTA, "val loss - dense's, same seed"),
              ("dropped_fraction", "dropped fraction"),
              ("load_max_over_mean", "max / mean expert load"), ("tokens_per_s", "tokens/s"))
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), sharey=True)
    y = np.arange(len(routers))
    height = 0.8 / max(1, len(backends))
    for ax, (key, title) in zip(axes, panels):
        for i, backend in enumerate(backends):
            values = [router_stats(payload, backend, r, key) for r in routers]
            ax.barh(y + (i - (len(backends) - 1) / 2) * height, [np.nan if v["mean"] is None else v["mean"]
                                                                 for v in values],
                    height, xerr=[v["sd"] or 0.0 for v in values], label=backend)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if key == DELTA:  # linear within ±0.1 nats (the routers that train), compressed beyond
            ax.set_xscale("symlog", linthresh=0.1, linscale=2.0)
            ax.axvline(0.0, color="grey", lw=0.8)
        if key == "val_loss":
            finite = [v["mean"] for b in backends for v in (router_stats(payload, b, r, key) for r in routers)
                      if v["mean"] is not None]
            if finite:
                ax.set_xlim(min(finite) - 0.1, max(finite) + 0.1)
    axes[0].set_yticks(y, routers)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Routers side by side: {payload['budget']}", fontsize=10)
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), required=True)
    parser.add_argument("--routers", nargs="+", help="a subset of the spec's routers")
    add_spec_arguments(parser, NAME)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = read_spec(SPEC)
    routers = args.routers or spec["routers"]
    if not args.report_only:
        new = run_backend(spec, args.backend, routers, args.seeds or spec["seeds"], args.extra, args.out)
    payload = load_payload(args.name)  # read after training: another call may have added to it meanwhile
    if not args.report_only:
        merge_runs(payload["results"].setdefault(args.backend, {}), new)
        payload["runs"].append({**machine(), "command": command_line(argv)})
    o = {**spec["overrides"], **dict(e.split("=", 1) for e in args.extra)}
    payload.update(routers=spec["routers"], spec=str(SPEC.relative_to(ROOT)),
                   budget=(f"{o['train.steps']} steps x {o['train.batch_size']} x {o['data.seq_len']} tokens, "
                           f"d_model {o['model.d_model']}"))
    write_results(args.name, payload, table(payload), figure(payload), calls=payload["runs"])
    print(table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
