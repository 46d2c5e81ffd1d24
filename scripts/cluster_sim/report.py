"""The simulated cluster's results: rows aggregated over seeds, a plain-text and a markdown
table, the step time / bandwidth plot, and the files a sweep writes."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from scripts.cluster_sim.options import ROUTERS
from scripts.cluster_sim.outcome import RunResult
from scripts.reporting.figures import pyplot, save_figure
from scripts.reporting.stats import stats
from scripts.reporting.tables import markdown_table


def aggregate(results: Sequence[RunResult]) -> List[dict]:
    """One row per (backend, router, all-to-all, Mbit): means over seeds (and the spread of
    step time and validation loss when there are several seeds)."""
    groups: Dict[tuple, List[RunResult]] = {}
    for r in results:
        groups.setdefault((r.backend, r.router, r.all_to_all, r.mbit), []).append(r)
    rows = []
    for (backend, router, a2a, mbit), runs in groups.items():
        step, loss = stats([r.step_s for r in runs]), stats([r.val_loss for r in runs])
        allreduce = stats([r.allreduce_bytes for r in runs])["mean"]
        rows.append({"backend": backend, "router": router, "all_to_all": a2a, "mbit": mbit, "seeds": len(runs),
                     "step_s": step["mean"], "step_s_sd": step["sd"],
                     "link_mb": stats([r.link_bytes for r in runs])["mean"] / 1e6,
                     "a2a_mb": stats([r.a2a_bytes for r in runs])["mean"] / 1e6,
                     "allreduce_mb": None if allreduce is None else allreduce / 1e6,
                     "kept_on_node": stats([r.kept_on_node for r in runs])["mean"],
                     "val_loss": loss["mean"], "val_loss_sd": loss["sd"]})
    return rows


COLUMNS = ("backend", "router", "all-to-all", "Mbit/s", "seeds", "step s", "link MB/step", "a2a MB/step",
           "link - a2a", "all-reduce est.", "kept on node", "val loss")


def table_cells(row: dict) -> List[str]:
    """A row of ``aggregate`` as the table's strings."""
    spread = row["seeds"] > 1
    return [row["backend"], row["router"], row["all_to_all"], str(row["mbit"]), str(row["seeds"]),
            f"{row['step_s']:.3f}" + (f" ± {row['step_s_sd']:.3f}" if spread else ""),
            f"{row['link_mb']:.2f}", f"{row['a2a_mb']:.2f}", f"{row['link_mb'] - row['a2a_mb']:.2f}",
            "n/a" if row["allreduce_mb"] is None else f"{row['allreduce_mb']:.2f}",
            "n/a" if row["kept_on_node"] is None else f"{row['kept_on_node']:.3f}",
            f"{row['val_loss']:.3f}" + (f" ± {row['val_loss_sd']:.3f}" if spread else "")]


def text_table(rows: Sequence[dict]) -> str:
    """Aligned plain-text table."""
    cells = [list(COLUMNS)] + [table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in cells)


def markdown(rows: Sequence[dict]) -> str:
    """The rows of ``aggregate`` as a GitHub markdown table."""
    return markdown_table(COLUMNS, [table_cells(row) for row in rows], align="lll" + "r" * (len(COLUMNS) - 3))


def figure(rows: Sequence[dict]):
    """Step time against link bandwidth, one line per router (solid flat, dashed hierarchical)."""
    backends = sorted({row["backend"] for row in rows})
    fig, axes = pyplot().subplots(1, len(backends), figsize=(6 * len(backends), 4.5), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for index, router in enumerate(ROUTERS):
            for a2a, style in (("flat", "-"), ("hierarchical", "--")):
                line = sorted((r["mbit"], r["step_s"]) for r in rows
                              if (r["backend"], r["router"], r["all_to_all"]) == (backend, router, a2a))
                if line:
                    ax.plot(*zip(*line), style, marker="o", color=f"C{index}", label=f"{router} ({a2a})")
        ax.set(xscale="log", xlabel="inter-node link (Mbit/s, tbf)", ylabel="step time (s)",
               title=f"{backend}: 2 nodes x 2 ranks, EP=4")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def report(results: Sequence[RunResult], partial: bool, json_path: Optional[Path] = None,
           markdown_path: Optional[Path] = None, plot_path: Optional[Path] = None) -> None:
    """The table on stdout and the files asked for (the runs so far when the sweep stopped)."""
    rows = aggregate(results)
    if partial:
        print(f"partial: {len(results)} run(s) finished before the sweep stopped")
    print(text_table(rows))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"runs": [asdict(r) for r in results], "table": rows}, indent=2))
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown(rows) + "\n")
    if plot_path:
        save_figure(figure(rows), plot_path)
