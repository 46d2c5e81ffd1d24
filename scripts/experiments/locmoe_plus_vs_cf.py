"""LocMoE+ against capacity-factor baselines: tokens per expert, expert buffers, drops and
validation loss (the paper: tokens processed per expert -40% to -60% without hurting
convergence).

Trains each arm of configs/experiments/locmoe_plus_vs_cf.yaml (a shipped router config plus
the spec's overrides) once per seed and reads its metrics.jsonl: tokens each expert processed
(mean over experts and MoE layers), the buffer slots each expert computed (expert FLOPs / the
FLOPs of one row / experts, the work actually done with capacity dispatch), the dropped
fraction and experts per token over the last half of the steps, and the validation loss
every ``train.eval_every`` steps. Each is the mean ± sd over seeds; the change against the
first arm (the baseline) is given in percent, and the validation loss also as the difference
to the baseline's at the same seed. Writes docs/results/locmoe_plus_vs_cf.json, _table.md and .png;
every (arm, seed) result is kept in the JSON (a later call adds its seeds to the earlier ones).

    PYTHONPATH=. .venv/bin/python scripts/experiments/locmoe_plus_vs_cf.py
    PYTHONPATH=. .venv/bin/python scripts/experiments/locmoe_plus_vs_cf.py --seeds 2   # one more seed
    ... --report-only                                                   # redraw from the JSON
    ... --seeds 0 --set train.steps=4 --set train.eval_every=2 --set train.warmup_steps=1 --name dry   # a dry run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.experiments.lm_runs import add_spec_arguments, as_overrides, read_spec, train  # noqa: E402
from scripts.experiments.run_metrics import summarise  # noqa: E402
from scripts.reporting.figures import pyplot  # noqa: E402
from scripts.reporting.provenance import ROOT, command_line, machine  # noqa: E402
from scripts.reporting.results_files import load_payload, merge_runs, write_results  # noqa: E402
from scripts.reporting.stats import paired_difference, stats  # noqa: E402
from scripts.reporting.tables import fmt_mean_sd, markdown_table  # noqa: E402

NAME = "locmoe_plus_vs_cf"
SPEC = ROOT / "configs" / "experiments" / f"{NAME}.yaml"


def slots_per_expert(records: List[Dict[str, Any]], num_experts: int, flops_per_row: float,
                     tail: float = 0.5) -> Optional[float]:
    """Mean over the last ``tail`` of the train records of the rows each expert computed per
    MoE layer: layers.expert_flops [L] / (flops_per_row * num_experts), averaged over layers;
    None for a run without MoE layers."""
    train_records = [r for r in records if r["kind"] == "train" and "layers.expert_flops" in r]
    if not train_records:
        return None
    kept = train_records[int(len(train_records) * (1 - tail)):] or train_records
    return float(np.mean([np.mean(r["layers.expert_flops"]) for r in kept])) / (flops_per_row * num_experts)


def run_arm(spec: Dict[str, Any], arm: Dict[str, Any], seed: int, extra, run_dir: Path) -> Dict[str, Any]:
    from models.moe_layer import MoELayer
    from training.config import load_config
    config = ROOT / "configs" / f"{arm['config']}.yaml"
    overrides = as_overrides(spec["overrides"]) + as_overrides(arm.get("set")) + [f"seed={seed}"] + list(extra)
    moe = load_config(config, overrides).moe
    records = train(config, overrides, run_dir, spec["backend"])
    result = summarise(records)
    result["slots_per_expert"] = slots_per_expert(records, moe.num_experts, MoELayer(moe).experts.flops_per_row)
    result["val_curve"] = [[r["step"], r["val_loss"]] for r in records if r["kind"] == "val"]
    return result


def arm_stats(runs: Dict[str, Dict[str, Any]], key: str) -> Dict[str, Any]:
    """``stats`` of ``key`` over an arm's seeds ({seed: result})."""
    return stats([run.get(key) for run in runs.values()])


def change(value, reference) -> str:
    if value is None or reference in (None, 0):
        return "n/a"
    return f"{100.0 * (value / reference - 1.0):+.0f}%"


def table(payload: Dict[str, Any]) -> str:
    arms = payload["results"]
    base = next(iter(arms))
    reference = {key: arm_stats(arms[base], key)["mean"] for key in ("tokens_per_expert", "slots_per_expert")}
    rows = []
    for name, runs in arms.items():
        s = {key: arm_stats(runs, key) for key in ("tokens_per_expert", "slots_per_expert", "dropped_fraction",
                                                   "experts_per_token", "val_loss", "tokens_per_s")}
        rows.append([f"`{name}`", fmt_mean_sd(s["tokens_per_expert"], 1),
                     change(s["tokens_per_expert"]["mean"], reference["tokens_per_expert"]),
                     fmt_mean_sd(s["slots_per_expert"], 1), change(s["slots_per_expert"]["mean"],
                                                                   reference["slots_per_expert"]),
                     fmt_mean_sd(s["dropped_fraction"]), fmt_mean_sd(s["experts_per_token"], 2),
                     fmt_mean_sd(s["val_loss"]), fmt_mean_sd(paired_difference(runs, arms[base])), fmt_mean_sd(s["tokens_per_s"], 0), str(s["val_loss"]["n"])])
    return markdown_table(["arm", "tokens/expert", f"vs {base}", "slots/expert", f"vs {base}", "dropped",
                           "experts/token", "val loss", f"Δ val loss vs {base}, same seed", "tokens/s", "seeds"], rows)


def figure(payload: Dict[str, Any]):
    """Validation loss minus the baseline's per step, and tokens processed and slots computed
    per expert (mean ± sd over seeds)."""
    arms = payload["results"]
    fig, (curve, bars) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    base = next(iter(arms))
    for name, runs in arms.items():  # each seed's curve minus the baseline's at that seed
        seeds = [seed for seed in runs if seed in arms[base]]
        curves = np.array([runs[seed]["val_curve"] for seed in seeds])  # [seeds, evals, (step, loss)]
        delta = curves[..., 1] - np.array([arms[base][seed]["val_curve"] for seed in seeds])[..., 1]
        mean, sd = delta.mean(0), delta.std(0, ddof=1) if len(seeds) > 1 else 0.0 * delta[0]
        curve.plot(curves[0, 1:, 0], mean[1:], marker="o", label=name)
        curve.fill_between(curves[0, 1:, 0], (mean - sd)[1:], (mean + sd)[1:], alpha=0.15)
    curve.set_xlabel("step")
    curve.set_ylabel(f"val loss - {base}'s, same seed (mean ± sd)")
    curve.legend(fontsize=8)
    curve.grid(alpha=0.3)
    names = list(arms)
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "tokens_per_expert", "tokens processed"), (0.2, "slots_per_expert", "slots computed")):
        s = [arm_stats(arms[n], key) for n in names]
        bars.bar(x + offset, [np.nan if v["mean"] is None else v["mean"] for v in s], 0.4,
                 yerr=[v["sd"] or 0.0 for v in s], label=label)
    bars.set_xticks(x, names, rotation=15, fontsize=8)
    bars.set_ylabel("per expert per MoE layer and step")
    bars.legend(fontsize=8)
    bars.grid(axis="y", alpha=0.3)
    fig.suptitle(f"LocMoE+ vs capacity factor ({payload['budget']})", fontsize=10)
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_spec_arguments(parser, NAME)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    spec = read_spec(SPEC)
    results: Dict[str, Dict[str, Any]] = {}
    for seed in [] if args.report_only else args.seeds or spec["seeds"]:
        for name, arm in spec["arms"].items():
            started = time.perf_counter()
            results.setdefault(name, {})[str(seed)] = run_arm(spec, arm, seed, args.extra,
                                                              args.out / f"{name}_seed{seed}")
            print(f"{name} seed {seed}: { {k: v for k, v in results[name][str(seed)].items() if k != 'val_curve'} } "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    o = {**spec["overrides"], **dict(e.split("=", 1) for e in args.extra)}
    payload = load_payload(args.name)  # read after training: another call may have added to it meanwhile
    if results:
        merge_runs(payload["results"], results)
        payload["runs"].append({**machine(), "command": command_line(argv)})
    payload.update(spec=str(SPEC.relative_to(ROOT)), backend=spec["backend"],
                   budget=f"{spec['backend']}, {o['train.steps']} steps x {o['train.batch_size']} x "
                          f"{o['data.seq_len']} tokens, d_model {o['model.d_model']}")
    write_results(args.name, payload, table(payload), figure(payload), calls=payload["runs"])
    print(table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
