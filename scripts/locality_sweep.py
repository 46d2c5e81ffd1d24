"""LocMoE and PanGu-Sigma where locality exists: the simulated two-node cluster with each node
its own corpus (``data.node_domains``) against the same-data control.

    sudo .venv/bin/python scripts/locality_sweep.py [--routers switch,hash,rre,locmoe,locmoe_learned,locmoe_plus]
        [--experts 8,16] [--mbit 200] [--seeds 0] [--steps 40] [--mu 0.3]
        [--json FILE] [--markdown FILE] [--plot FILE]
    .venv/bin/python scripts/locality_sweep.py --from-json a.json b.json [--json/--markdown/--plot FILE]

Root only (``scripts/sim_cluster.py`` builds the cluster and measures each run: step time,
link and all-to-all bytes per step, kept on node). Every run trains on shakespeare and bible
(1M characters each), dropless dispatch (locmoe_plus keeps its expert-choice slots), with

- ``placed``: node 0 reads shakespeare, node 1 bible (``[[shakespeare], [bible]]``); rre
  with ``domains_by_node: true`` (its group of a domain on that domain's node);
- ``same`` (the control, today's setting): both nodes read both corpora, each its own stream.

Routers: each one's config from configs/ at ``--experts`` experts; ``locmoe_learned`` is
locmoe with ``gate: learned`` (the ablation of the paper's GrAP gate); the locality routers
get ``locality_coef`` ``--mu``. Validation: ``train.eval_batches`` batches of each domain.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.cluster_sim.network import Cluster  # noqa: E402
from scripts.cluster_sim.one_run import run_once  # noqa: E402
from scripts.cluster_sim.options import parse_ints, parse_list  # noqa: E402
from scripts.cluster_sim.outcome import Failure  # noqa: E402
from scripts.cluster_sim.sweep import sweep  # noqa: E402
from scripts.reporting.figures import pyplot, save_figure  # noqa: E402
from scripts.reporting.stats import stats  # noqa: E402
from scripts.reporting.tables import markdown_table  # noqa: E402
from training.metrics_log import read_records  # noqa: E402

ROUTERS = ("switch", "hash", "rre", "locmoe", "locmoe_learned", "locmoe_plus")
DATA = {"placed": "[[shakespeare],[bible]]", "same": "[[shakespeare,bible],[shakespeare,bible]]"}
DOMAINS = ("shakespeare", "bible")


def overrides(router: str, data: str, experts: int, mu: float) -> List[str]:
    """train.py ``--set`` values of one run (besides sim_cluster's own)."""
    sets = ["data.corpora=[shakespeare,bible]", "data.files=[]", "data.max_chars_per_corpus=1000000",
            f"data.node_domains={DATA[data]}", f"moe.num_experts={experts}", "train.eval_batches=2"]
    if router != "locmoe_plus":
        sets.append("moe.dispatch=dropless")
    if router == "rre":
        sets += ["moe.router_options.num_domains=2", f"moe.router_options.domains_by_node={str(data == 'placed').lower()}"]
    if router.startswith("locmoe"):
        sets += [f"moe.router_options.locality_coef={mu}", "moe.router_options.topology={nodes: 2, devices_per_node: 2}"]
    if router == "locmoe_learned":
        sets.append("moe.router_options.gate=learned")
    return sets


def domain_losses(run_dir: Path) -> Dict[str, float]:
    """The last validation's loss per domain."""
    last = [r for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "val"][-1]
    return {name: last[f"val_loss/{name}"] for name in DOMAINS}


COLUMNS = ("experts", "Mbit/s", "router", "data", "seeds", "step s", "link MB/step", "a2a MB/step", "kept on node",
           "val shakespeare", "val bible")


def aggregate(runs: Sequence[dict]) -> List[dict]:
    """One row per (experts, Mbit/s, router, data): means over seeds, step time's spread."""
    groups: Dict[tuple, List[dict]] = {}
    for run in runs:
        groups.setdefault((run["experts"], run["mbit"], run["label"], run["data"]), []).append(run)
    rows = []
    for (n, mbit, label, data), group in sorted(groups.items(), key=lambda item: (
            item[0][0], item[0][1], ROUTERS.index(item[0][2]), item[0][3])):
        mean = {key: stats([r[key] for r in group])["mean"]
                for key in ("link_bytes", "a2a_bytes", "kept_on_node", "val_shakespeare", "val_bible")}
        step = stats([r["step_s"] for r in group])
        rows.append({"experts": n, "mbit": mbit, "label": label, "data": data, "seeds": len(group),
                     "step_s": step["mean"], "step_s_sd": step["sd"], **mean})
    return rows


def cells(row: dict) -> List[str]:
    kept = "n/a" if row["kept_on_node"] is None else f"{row['kept_on_node']:.3f}"
    spread = f" ± {row['step_s_sd']:.3f}" if row["seeds"] > 1 else ""
    return [str(row["experts"]), str(row["mbit"]), row["label"], row["data"], str(row["seeds"]),
            f"{row['step_s']:.3f}{spread}", f"{row['link_bytes'] / 1e6:.2f}", f"{row['a2a_bytes'] / 1e6:.2f}", kept,
            f"{row['val_shakespeare']:.3f}", f"{row['val_bible']:.3f}"]


def figure(rows: Sequence[dict], mbit: int):
    """At ``mbit``, per expert count: kept on node, cross-node all-to-all MB and step time per
    router, placed beside same."""
    rows = [r for r in rows if r["mbit"] == mbit]
    experts = sorted({r["experts"] for r in rows})
    panels = (("kept_on_node", 1, "kept on node"), ("a2a_bytes", 1e-6, "cross-node a2a MB/step"),
              ("step_s", 1, "step time (s)"))
    fig, axes = pyplot().subplots(len(panels), len(experts), figsize=(6 * len(experts), 10), squeeze=False)
    for col, n in enumerate(experts):
        labels = [label for label in ROUTERS if any(r["label"] == label and r["experts"] == n for r in rows)]
        for row_index, (key, scale, title) in enumerate(panels):
            ax = axes[row_index][col]
            for offset, data in ((-0.2, "placed"), (0.2, "same")):
                found = {r["label"]: (r[key] or 0) * scale for r in rows if (r["experts"], r["data"]) == (n, data)}
                ax.bar([i + offset for i in range(len(labels))], [found.get(label, 0) for label in labels], 0.4,
                       label=f"{data} data")
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
            ax.set(title=f"{n} experts, {mbit} Mbit/s: {title}")
            ax.legend(fontsize=8)
    return fig


def write_report(runs: Sequence[dict], json_path: Optional[Path], markdown_path: Optional[Path],
                 plot_path: Optional[Path], plot_mbit: int) -> None:
    """The table on stdout and the files asked for."""
    rows = aggregate(runs)
    table = markdown_table(COLUMNS, [cells(r) for r in rows], align="llllr" + "r" * (len(COLUMNS) - 5))
    print(table)
    if json_path:
        json_path.write_text(json.dumps({"runs": list(runs), "table": rows}, indent=2))
    if markdown_path:
        markdown_path.write_text(table + "\n")
    if plot_path:
        save_figure(figure(rows, plot_mbit), plot_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--data", default="placed,same")
    parser.add_argument("--experts", default="8,16")
    parser.add_argument("--mbit", type=int, default=200)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mu", type=float, default=0.3)
    parser.add_argument("--run-timeout", type=int, default=400)
    parser.add_argument("--port", type=int, default=29900)
    parser.add_argument("--prefix", default="locsweep")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="FILE",
                        help="report the runs of earlier --json files together instead of running")
    args = parser.parse_args(argv)
    if args.from_json:
        runs = [run for path in args.from_json for run in json.loads(path.read_text())["runs"]]
        write_report(runs, args.json, args.markdown, args.plot, args.mbit)
        return 0
    try:
        routers = parse_list(args.routers, ROUTERS, "--routers")
        datas = parse_list(args.data, tuple(DATA), "--data")
        experts = parse_ints(args.experts, "--experts", 4)
        seeds = parse_ints(args.seeds, "--seeds", 0)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    plan = [(n, router, data, seed) for n in experts for router in routers for data in datas for seed in seeds]

    def one(cluster: Cluster, scratch: Path, index: int, item: Tuple[int, str, str, int]) -> dict:
        n, label, data, seed = item
        started = time.monotonic()
        folder = scratch / f"{label}_{data}_{n}_{seed}"
        folder.mkdir()
        result = run_once(cluster, "torch", "locmoe" if label == "locmoe_learned" else label, None, args.mbit, seed,
                          args.steps, args.port + index, folder, args.run_timeout, 2, overrides(label, data, n, args.mu))
        losses = domain_losses(next(folder.glob("*/run")))
        print(f"[{index + 1}/{len(plan)}] {n} experts {label} {data} seed {seed}: step {result.step_s:.3f} s, "
              f"a2a {result.a2a_bytes / 1e6:.2f} MB/step, kept {result.kept_on_node} "
              f"({time.monotonic() - started:.0f}s)", flush=True)
        return {"experts": n, "label": label, "data": data, **asdict(result),
                **{f"val_{name}": value for name, value in losses.items()}}

    runs, status = sweep(args.prefix, plan, one, "locality_sweep_")
    if runs:
        write_report(runs, args.json, args.markdown, args.plot, args.mbit)
    return status


if __name__ == "__main__":
    sys.exit(main())
