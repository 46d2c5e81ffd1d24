"""Shared parts of the README's Results experiments (routers side by side, LocMoE+ vs a
capacity factor, the Kool toy): train a config in a subprocess with ``--set`` overrides,
read the metrics log it writes, reduce it to a few numbers, and write JSON, a markdown
table and the machine it ran on under ``docs/results/``.

The reductions are pure functions of the ``metrics.jsonl`` records (tests/common).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"


def read_spec(path: Path) -> Dict[str, Any]:
    """An experiment's YAML spec (configs/experiments/*.yaml) as a mapping."""
    sys.path.insert(0, str(ROOT))
    from training.yaml_io import read_yaml
    spec = read_yaml(Path(path))
    if not isinstance(spec, dict):
        raise SystemExit(f"{path}: expected a mapping")
    return spec


def as_overrides(settings: Optional[Mapping[str, Any]]) -> List[str]:
    """{'train.steps': 100, 'moe.router_options.seed': 0} -> ['train.steps=100', ...]
    (lists and mappings written as JSON, which YAML reads back)."""
    return [f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
            for key, value in (settings or {}).items()]


def train(config: Path, overrides: Sequence[str], run_dir: Path, backend: str) -> List[Dict[str, Any]]:
    """Train ``config`` with ``overrides`` into ``run_dir`` (replaced) on ``backend``; the
    metrics.jsonl records. A failed run raises with the tail of its output."""
    import shutil
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config), "--backend", backend,
               "--no-progress", "--set", f"run_dir={run_dir}", *[arg for o in overrides for arg in ("--set", o)]]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"{config.name} on {backend} exited {done.returncode}:\n{tail}")
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_ratio(tokens_per_expert) -> float:
    """max / mean of the tokens each expert processed, averaged over layers: 1 is perfectly
    balanced, E means one expert took everything. ``tokens_per_expert``: [L, E] or [E]."""
    load = np.atleast_2d(np.asarray(tokens_per_expert, np.float64))
    mean = load.mean(-1)
    return float(np.mean(np.where(mean > 0, load.max(-1) / np.where(mean > 0, mean, 1.0), np.nan)))


def summarise(records: Iterable[Dict[str, Any]], tail: float = 0.5) -> Dict[str, Optional[float]]:
    """One run's numbers from its metrics records: the last validation loss, and over the
    last ``tail`` of the train records the mean dropped fraction, mean max/mean expert load,
    mean tokens processed per expert (mean over layers and experts), mean true experts per
    token, and the median tokens/s. A key the run did not log (a dense model) is None."""
    records = list(records)
    val = [r for r in records if r["kind"] == "val"]
    train_records = [r for r in records if r["kind"] == "train"]
    kept = train_records[int(len(train_records) * (1 - tail)):] or train_records

    def mean_of(key, reduce=float):
        values = [reduce(r[key]) for r in kept if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    rates = [r["tokens_per_s"] for r in kept if r.get("tokens_per_s") is not None]
    return {"val_loss": val[-1]["val_loss"] if val else None,
            "first_val_loss": val[0]["val_loss"] if val else None,
            "dropped_fraction": mean_of("dropped_fraction"),
            "load_max_over_mean": mean_of("tokens_per_expert", load_ratio),
            "tokens_per_expert": mean_of("tokens_per_expert", lambda t: float(np.mean(t))),
            "experts_per_token": mean_of("mean_true_experts_per_token"),
            "tokens_per_s": float(np.median(rates)) if rates else None,
            "elapsed_s": train_records[-1]["elapsed_s"] if train_records else None}


def mean_sd(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (0 for one value) of the values that are not None."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(kept)), "sd": float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0,
            "n": len(kept)}


def paired_difference(runs: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, Any]],
                      key: str = "val_loss") -> Dict[str, Optional[float]]:
    """mean_sd over the seeds both ran of runs[seed][key] - reference[seed][key] ({seed: result};
    a failed run, one with an "error", is left out): what the seed moves in both cancels."""
    ok = {seed: run for seed, run in reference.items() if "error" not in run}
    return mean_sd([run[key] - ok[seed][key] for seed, run in runs.items() if "error" not in run and seed in ok])


def fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_mean_sd(stats: Mapping[str, Optional[float]], digits: int = 3) -> str:
    if stats["mean"] is None:
        return "n/a"
    return fmt(stats["mean"], digits) + (f" ± {stats['sd']:.{digits}f}" if stats["n"] > 1 else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub markdown table; ``align`` one letter per column (l / r), default left then right."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def machine() -> Dict[str, Any]:
    """Where and when: UTC date, host CPU, cores, load average at the call."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu": model, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def provenance(run: Mapping[str, Any]) -> str:
    """One markdown line: the command, then date, machine and load average of a ``machine()``
    record that also holds ``command``."""
    return (f"`{run.get('command', '')}`: {run.get('date_utc', '?')} UTC, {run.get('cores', '?')}-core "
            f"{run.get('cpu', '?')}, load average at the end {run.get('load_average', '?')}")


def load_payload(name: str) -> Dict[str, Any]:
    """docs/results/<name>.json as an earlier call wrote it, or {"results": {}, "runs": []}: a
    later call adds its seeds to it instead of running the earlier ones again."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {"results": {}, "runs": []}


def merge_runs(into: Dict[str, Dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> None:
    """Add {arm: {seed: result}} to ``into`` in place: an (arm, seed) already there is replaced,
    every other one kept."""
    for arm, runs in new.items():
        into.setdefault(arm, {}).update(runs)


def write_results(name: str, payload: Dict[str, Any], table: str, runs: Sequence[Mapping[str, Any]]) -> Path:
    """docs/results/<name>.json and <name>.md (the table under one ``provenance`` line per
    entry of ``runs``); returns the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    header = "".join(f"- {provenance(run)}\n" for run in runs)
    (RESULTS / f"{name}.md").write_text(header + "\n" + table + "\n")
    return path


def command_line() -> str:
    """How this script was started, as a command to paste from the repository root."""
    script = Path(sys.argv[0]).resolve().relative_to(ROOT)
    return " ".join(["PYTHONPATH=. .venv/bin/python", str(script), *sys.argv[1:]])


def save_figure(fig, path: Path) -> None:
    """Lay out ``fig``, write it to ``path`` (PNG, 110 dpi) and close it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
