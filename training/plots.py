"""PNG plots of a run from its metrics.jsonl (matplotlib, no display needed):

- ``loss_curves.png``: training LM loss and validation loss against step;
- ``expert_load.png``: per MoE layer, each expert's share of the layer's processed
  assignments over time (a heatmap: step across, expert down);
- ``true_experts.png``: mean true experts per token against step, per MoE layer and mean.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.metrics_log import read_records  # noqa: E402


def _series(records: List[dict], kind: str, key: str):
    rows = [(r["step"], r[key]) for r in records if r["kind"] == kind and r.get(key) is not None]
    return [s for s, _ in rows], [v for _, v in rows]


def plot_run(run_dir: Path) -> Dict[str, Path]:
    """Write the plots that the logged metrics allow; returns {name: path}."""
    run_dir = Path(run_dir)
    records = list(read_records(run_dir / "metrics.jsonl"))
    written: Dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, key, label in (("train", "lm_loss", "train (LM)"), ("val", "val_loss", "validation")):
        steps, values = _series(records, kind, key)
        if steps:
            ax.plot(steps, values, marker="o" if kind == "val" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    written["loss_curves"] = _save(fig, run_dir / "loss_curves.png")

    steps, loads = _series(records, "train", "tokens_per_expert")
    if steps and np.asarray(loads[0]).ndim == 2:
        load = np.asarray(loads, dtype=np.float64)  # [T, L, E]
        share = load / np.maximum(load.sum(-1, keepdims=True), 1e-9)
        layers = share.shape[1]
        half = (steps[-1] - steps[0]) / (2 * (len(steps) - 1)) if len(steps) > 1 else 0.5  # column centred on its step
        fig, axes = plt.subplots(layers, 1, figsize=(8, 1.2 + 1.6 * layers), squeeze=False)
        for i in range(layers):
            ax = axes[i, 0]
            image = ax.imshow(share[:, i, :].T, aspect="auto", cmap="viridis", interpolation="nearest",
                              extent=(steps[0] - half, steps[-1] + half, share.shape[2] - 0.5, -0.5))
            ax.set_ylabel(f"MoE layer {i}\nexpert")
            fig.colorbar(image, ax=ax, label="load share")
        axes[-1, 0].set_xlabel("step")
        fig.suptitle("Expert load (share of processed assignments)")
        written["expert_load"] = _save(fig, run_dir / "expert_load.png")

    steps, per_layer = _series(records, "train", "layers.mean_true_experts_per_token")
    if steps:
        values = np.asarray(per_layer, dtype=np.float64).reshape(len(steps), -1)
        fig, ax = plt.subplots(figsize=(7, 4))
        for i in range(values.shape[1]):
            ax.plot(steps, values[:, i], alpha=0.6, label=f"MoE layer {i}")
        ax.plot(steps, values.mean(1), color="black", linewidth=2, label="mean")
        ax.set_xlabel("step")
        ax.set_ylabel("true experts per token")
        ax.set_title("Mean true experts per token")
        ax.legend()
        ax.grid(alpha=0.3)
        written["true_experts"] = _save(fig, run_dir / "true_experts.png")
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
