"""Paper claim 1 (Switch Transformer, Fedus et al.): at equal active FLOPs a Switch (top-1) MoE
reaches the dense model's quality in fewer steps and less time (Switch-Base vs T5-Base: about
7x faster). Trains configs/experiments/dense_baseline.yaml and switch_top1.yaml with each seed
(interleaved: dense, switch, dense, ...), then per seed takes the dense run's final validation
loss as the target and finds the step and the training seconds (validation excluded) at which
the Switch run's validation curve first reaches it (linear between evaluations). Speed-up =
dense steps (seconds) / Switch steps (seconds) to the target. Writes
<out>/switch_vs_dense.json, switch_vs_dense_table.md and switch_vs_dense.png. ``--constant-lr``
holds the learning rate after warmup (train.min_lr = train.lr) instead of the configs' cosine
decay, whose final annealing lets any run reach its best loss only near its last step; it
writes switch_vs_dense_constant_lr.*.

    python scripts/experiments/switch_vs_dense.py                         # the runs in docs/results/index.md
    python scripts/experiments/switch_vs_dense.py --constant-lr
    python scripts/experiments/switch_vs_dense.py --seeds 4 --train-seeds 3   # seed 3 only, 0-2 read back
    python scripts/experiments/switch_vs_dense.py --seeds 1 --steps 10 --out /tmp/dry   # a dry run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.experiments.lm_runs import add_seed_arguments, seeds_to_train, step_overrides, tokens_per_step, train  # noqa: E402
from scripts.experiments.run_metrics import RunCurves, reach, read_run, seconds_at  # noqa: E402
from scripts.reporting.figures import pyplot  # noqa: E402
from scripts.reporting.provenance import command_line, machine  # noqa: E402
from scripts.reporting.results_files import call_history, run_info, write_results  # noqa: E402
from scripts.reporting.stats import stats  # noqa: E402
from scripts.reporting.tables import fmt_mean_sd, markdown_table  # noqa: E402
from training.config import load_config  # noqa: E402

CONFIGS = {"dense": ROOT / "configs/experiments/dense_baseline.yaml",
           "switch": ROOT / "configs/experiments/switch_top1.yaml"}
NAME = "switch_vs_dense"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seed_arguments(parser, default=3)
    parser.add_argument("--steps", type=int, help="override train.steps (a dry run)")
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--runs", type=Path, help="run directories (default runs/experiments/<results name>)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results", help="where the results go")
    parser.add_argument("--constant-lr", action="store_true", help="no decay after warmup (train.min_lr = train.lr)")
    parser.add_argument("--report-only", action="store_true",
                        help="read existing runs, train nothing (keeps the earlier JSON's date, load and command)")
    return parser.parse_args(argv)


def overrides(steps: Optional[int], constant_lr: bool) -> List[str]:
    out = []
    if constant_lr:
        lrs = {load_config(path).train.lr for path in CONFIGS.values()}
        if len(lrs) != 1:
            raise SystemExit(f"--constant-lr: the configs' train.lr differ ({sorted(lrs)})")
        out.append(f"train.min_lr={lrs.pop()}")
    return out + step_overrides(steps)


def compare(dense: RunCurves, switch: RunCurves) -> Dict[str, Optional[float]]:
    """One seed: the Switch run's steps and training seconds to the dense final loss, and the
    speed-ups against the dense run's full length (None where the target is not reached):
    in steps, in measured training seconds, and in steps times each run's median step time
    (robust to a burst of load from other processes during a run)."""
    target = dense.final_loss
    steps = reach(switch.val_steps, switch.val_loss, target)
    dense_steps, dense_seconds = dense.val_steps[-1], dense.train_seconds[-1]
    seconds = None if steps is None else seconds_at(switch, steps)
    return {"target_val_loss": target, "switch_steps_to_target": steps, "switch_seconds_to_target": seconds,
            "dense_steps": dense_steps, "dense_seconds": dense_seconds,
            "speedup_steps": None if steps is None else dense_steps / steps,
            "speedup_seconds": None if seconds is None else dense_seconds / seconds,
            "speedup_median_time": None if steps is None else
            dense_steps / steps * switch.median_tokens_per_s() / dense.median_tokens_per_s()}


def report(runs: Dict[str, List[RunCurves]], step_seconds: Dict[str, List[float]], seeds: List[int], command: str,
           backend: str, schedule: str):
    per_seed = [compare(d, s) for d, s in zip(runs["dense"], runs["switch"])]
    reached = [p for p in per_seed if p["switch_steps_to_target"] is not None]
    summary = {name: {"final_val_loss": stats([c.final_loss for c in curves]),
                      "train_seconds": stats([c.train_seconds[-1] for c in curves]),
                      "tokens_per_s": stats([c.median_tokens_per_s() for c in curves])} for name, curves in runs.items()}
    summary["switch"]["dropped_fraction"] = stats([c.train_mean("dropped_fraction") for c in runs["switch"]])
    summary["reached"] = f"{len(reached)}/{len(per_seed)}"
    for key in ("switch_steps_to_target", "switch_seconds_to_target", "speedup_steps", "speedup_seconds",
                "speedup_median_time"):
        summary[key] = stats([p[key] for p in reached]) if reached else None
    payload = {"claim": "Switch-Base reaches T5-Base quality about 7x faster (Fedus et al. 2021)",
               "command": command, "backend": backend, "seeds": seeds, "lr_schedule": schedule, "machine": machine(),
               "configs": {k: str(v.relative_to(ROOT)) for k, v in CONFIGS.items()}, "summary": summary,
               "per_seed": per_seed,
               "curves": {name: [{"val_steps": c.val_steps, "val_loss": c.val_loss, "train_seconds": c.train_seconds}
                                 for c in curves] for name, curves in runs.items()}}
    return payload, table(summary), figure(runs, step_seconds, per_seed, schedule)


def table(summary: dict) -> str:
    d, s = summary["dense"], summary["switch"]
    if summary["speedup_steps"] is None:
        to_target = ["not reached"] * 5
    else:
        to_target = [f"{summary['switch_steps_to_target']['mean']:.0f} "
                     f"({summary['switch_steps_to_target']['min']:.0f}-{summary['switch_steps_to_target']['max']:.0f})",
                     f"{summary['switch_seconds_to_target']['mean']:.0f}",
                     fmt_mean_sd(summary["speedup_steps"], 2) + "x", fmt_mean_sd(summary["speedup_median_time"], 2) + "x",
                     fmt_mean_sd(summary["speedup_seconds"], 2) + "x"]
    rows = [["dense (FFN 352)", fmt_mean_sd(d["final_val_loss"]), f"{d['train_seconds']['mean']:.0f}",
             f"{d['tokens_per_s']['mean']:.0f}", "-", "-", "-", "-", "-"],
            ["Switch top-1 (8 x 352, cf 1.25)", fmt_mean_sd(s["final_val_loss"]), f"{s['train_seconds']['mean']:.0f}",
             f"{s['tokens_per_s']['mean']:.0f}", *to_target]]
    header = ["model", "final val loss", "train s (all steps)", "tokens/s", "steps to dense final loss (min-max)",
              "train s to it", "speed-up (steps)", "speed-up (time: steps x median step time)",
              "speed-up (time: measured seconds)"]
    note = (f"\nSeeds reaching the dense final loss: {summary['reached']}; Switch dropped fraction "
            f"{fmt_mean_sd(s['dropped_fraction'], 4)}. Mean ± sample std over seeds; speed-ups per seed (dense seed i's "
            f"final loss as seed i's target), then averaged.\n")
    return markdown_table(header, rows) + "\n" + note


def figure(runs: Dict[str, List[RunCurves]], step_seconds: Dict[str, List[float]], per_seed: List[dict], schedule: str):
    """Validation loss against step and against steps x the run's median step time."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    colors = {"dense": "tab:blue", "switch": "tab:orange"}
    for name, curves in runs.items():
        for i, c in enumerate(curves):
            label = name if i == 0 else None
            axes[0].plot(c.val_steps, c.val_loss, color=colors[name], alpha=0.8, label=label)
            axes[1].plot([s * step_seconds[name][i] for s in c.val_steps], c.val_loss, color=colors[name], alpha=0.8,
                         label=label)
    for i, p in enumerate(per_seed):
        for ax in axes:
            ax.axhline(p["target_val_loss"], color="grey", lw=0.6, ls="--")
        if p["switch_steps_to_target"] is not None:
            axes[0].plot([p["switch_steps_to_target"]], [p["target_val_loss"]], "kx")
            axes[1].plot([p["switch_steps_to_target"] * step_seconds["switch"][i]], [p["target_val_loss"]], "kx")
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("seconds: step x the run's median step time")
    top = max(c.val_loss[len(c.val_loss) // 4] for curves in runs.values() for c in curves)
    for ax in axes:
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_ylim(top=top + 0.1)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"Switch top-1 vs dense at equal active FLOPs, {schedule} LR (dashed: each dense seed's final loss; "
                 f"x: Switch reaches it)", fontsize=10)
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = list(range(args.seeds))
    trained = seeds_to_train(seeds, args.train_seeds, args.report_only)
    name = NAME + ("_constant_lr" if args.constant_lr else "")
    schedule = "constant" if args.constant_lr else "cosine"
    runs_dir = args.runs or ROOT / "runs/experiments" / name
    dirs = {model: [runs_dir / f"{model}_seed{seed}" for seed in seeds] for model in CONFIGS}
    for seed in trained:
        for model, config in CONFIGS.items():
            train(config, [f"seed={seed}", *overrides(args.steps, args.constant_lr)], dirs[model][seed], args.backend)
    runs = {model: [read_run(d) for d in paths] for model, paths in dirs.items()}
    step_seconds = {model: [tokens_per_step(d) / c.median_tokens_per_s() for d, c in zip(dirs[model], runs[model])]
                    for model in CONFIGS}
    payload, text, fig = report(runs, step_seconds, seeds, command_line(argv), args.backend, schedule)
    payload["runs"] = call_history(args.out / f"{name}.json", seeds, trained,
                                   {"machine": payload["machine"], "command": payload["command"]})
    if args.report_only:
        payload.update(run_info(args.out / f"{name}.json"))
    paths = write_results(name, payload, text, fig, out_dir=args.out)
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
