"""PNG of bench_layer's sweeps: time over the dense reference against tokens (one line per
case), and time over the fewest-experts time against the expert count. Also redraws a
saved run: ``python -m scripts.bench.plot RUN.json OUT.png``."""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping

from scripts.bench.report import DENSE_LIMIT, EXPERTS_LIMIT, expert_series
from scripts.reporting.figures import pyplot, save_figure


def sweep_title(settings: Mapping[str, Any], machine: Mapping[str, Any]) -> str:
    """d, ffn, top-k, CPUs and date of a bench_layer run (its first point's settings and its
    machine record; runs saved before scripts/reporting name the last two cpu_count and date)."""
    cores = machine.get("cores", machine.get("cpu_count"))
    date = machine.get("date_utc", machine.get("date", ""))
    return f"d={settings['d_model']} ffn={settings['ffn_hidden']} top-{settings['top_k']}, {cores} CPUs, {date[:10]}"


def plot_sweeps(points: List[Dict[str, Any]], path: Path, title: str) -> None:
    """The sweep figure of bench_layer's ``points`` (module docstring), written to ``path``."""
    import matplotlib.ticker
    plt = pyplot()
    first_experts = points[0]["settings"]["num_experts"]
    by_tokens: Dict[str, Dict[int, float]] = defaultdict(dict)
    for point in points:
        tokens, experts = point["settings"]["tokens"], point["settings"]["num_experts"]
        for row in point["rows"]:
            if row.get("vs_dense") is None or row["dispatch"] == "dense":
                continue
            if experts == first_experts:
                by_tokens[row["name"]][tokens] = row["vs_dense"]
    by_experts = {f"{name} ({tokens} tokens)": series for (tokens, name), series in expert_series(points).items()}
    sweep_experts = any(len(series) > 1 for series in by_experts.values())
    sweep_tokens = any(len(series) > 1 for series in by_tokens.values()) or not sweep_experts
    panels = int(sweep_tokens) + int(sweep_experts)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels + 1, 4.8), squeeze=False)
    if sweep_tokens:
        left = axes[0][0]
        for name, series in sorted(by_tokens.items()):
            xs = sorted(series)
            style = "-o" if name.startswith("ours") else "--x"
            left.plot(xs, [series[x] for x in xs], style, label=name,
                      linewidth=2 if name == "ours torch dropless" else 1)
        left.axhline(1.0, color="black", linewidth=0.8)
        left.axhline(DENSE_LIMIT, color="grey", linestyle=":", linewidth=0.8, label=f"{DENSE_LIMIT}x dense")
        left.set_xscale("log", base=2)
        left.set_yscale("log")
        left.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        left.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        left.set_xlabel("tokens per step")
        left.set_ylabel("fwd+bwd time / dense SwiGLU (torch)")
        left.set_title(f"{first_experts} experts")
        left.legend(fontsize=7)
    if sweep_experts:
        right = axes[0][panels - 1]
        for name, series in sorted(by_experts.items()):
            xs = sorted(series)
            right.plot(xs, [series[x] / series[xs[0]] for x in xs], "-o", label=name)
        right.axhline(EXPERTS_LIMIT, color="grey", linestyle=":", linewidth=0.8, label=f"{EXPERTS_LIMIT}x")
        right.set_xscale("log", base=2)
        right.set_xlabel("experts (top-k and ffn fixed: same active FLOPs)")
        right.set_ylabel("(time / same-process dense) / its value at the fewest experts")
        right.legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, Path(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a bench_layer --json file")
    parser.add_argument("png", type=Path, help="where the plot goes")
    args = parser.parse_args(argv)
    run = json.loads(args.run.read_text())
    plot_sweeps(run["points"], args.png, sweep_title(run["points"][0]["settings"], run["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
