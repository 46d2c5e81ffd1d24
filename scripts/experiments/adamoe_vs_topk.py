"""Paper claim 2 (AdaMoE, Zeng et al. 2024): null experts let tokens use fewer true experts,
about -15% expert FLOPs at equal or better quality (their Mixtral fine-tune: load 2.0 -> 1.67).
Here in pretraining from scratch: trains configs/experiments/adamoe_topk2.yaml (top-2) and
adamoe_null.yaml (top-4 over 8 true + m null experts) for each null count m and seed
(interleaved per seed), then reports per variant the final validation loss, the mean true
experts per token and the expert FLOPs per token (both from the train records: over the whole
run, the training cost, and over its last quarter, the routing the model settled on) and the
FLOPs and loss differences against top-2. Writes <out>/adamoe_vs_topk.json,
adamoe_vs_topk_table.md and adamoe_vs_topk.png.

    python scripts/experiments/adamoe_vs_topk.py                          # the run in docs/results/index.md
    python scripts/experiments/adamoe_vs_topk.py --train-seeds 2          # seed 2 only, seeds 0-1 read back
    python scripts/experiments/adamoe_vs_topk.py --seeds 1 --nulls 8 --steps 10 --out /tmp/dry   # a dry run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.experiments.lm_runs import add_seed_arguments, seeds_to_train, step_overrides, tokens_per_step, train  # noqa: E402
from scripts.experiments.run_metrics import RunCurves, read_run  # noqa: E402
from scripts.reporting.figures import pyplot  # noqa: E402
from scripts.reporting.provenance import command_line, machine  # noqa: E402
from scripts.reporting.results_files import call_history, run_info, write_results  # noqa: E402
from scripts.reporting.stats import stats  # noqa: E402
from scripts.reporting.tables import fmt_mean_sd, markdown_table  # noqa: E402

TOPK = ROOT / "configs/experiments/adamoe_topk2.yaml"
ADAMOE = ROOT / "configs/experiments/adamoe_null.yaml"
NAME = "adamoe_vs_topk"
LAST = 0.75  # "settled" metrics: train records after this fraction of the steps


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seed_arguments(parser, default=3)
    parser.add_argument("--nulls", type=int, nargs="+", default=[4, 8, 16], help="null expert counts m (default 4 8 16)")
    parser.add_argument("--steps", type=int, help="override train.steps (a dry run)")
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/experiments" / NAME, help="run directories")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results", help="where the results go")
    parser.add_argument("--report-only", action="store_true",
                        help="read existing runs, train nothing (keeps the earlier JSON's date, load and command)")
    return parser.parse_args(argv)


def variants(nulls: List[int]) -> Dict[str, Tuple[Path, List[str]]]:
    """label -> (config, overrides); top-2 first (the baseline)."""
    out = {"top-2": (TOPK, [])}
    out.update({f"AdaMoE m={m}": (ADAMOE, [f"moe.num_null_experts={m}"]) for m in nulls})
    return out


def run_metrics(curves: RunCurves, tokens: int) -> Dict[str, float]:
    """One run's numbers: final validation loss, true experts per token and expert FLOPs per
    token (forward, summed over the MoE layers) over the whole run and its last quarter."""
    return {"final_val_loss": curves.final_loss,
            "true_experts_run": curves.train_mean("mean_true_experts_per_token"),
            "true_experts_last": curves.train_mean("mean_true_experts_per_token", LAST),
            "expert_flops_per_token_run": curves.train_mean("expert_flops") / tokens,
            "expert_flops_per_token_last": curves.train_mean("expert_flops", LAST) / tokens,
            "tokens_per_s": curves.median_tokens_per_s()}


def relative(per_run: Dict[str, List[Dict[str, float]]]) -> Dict[str, Dict[str, dict]]:
    """Per variant, seed-paired differences against top-2: FLOPs change (%) and loss change."""
    base = per_run["top-2"]
    out = {}
    for label, runs in per_run.items():
        out[label] = {
            "flops_change_pct_run": stats([100 * (r["expert_flops_per_token_run"] / b["expert_flops_per_token_run"] - 1)
                                           for r, b in zip(runs, base)]),
            "flops_change_pct_last": stats([100 * (r["expert_flops_per_token_last"] / b["expert_flops_per_token_last"] - 1)
                                            for r, b in zip(runs, base)]),
            "val_loss_change": stats([r["final_val_loss"] - b["final_val_loss"] for r, b in zip(runs, base)])}
    return out


def table(summary: dict, vs_topk: dict) -> str:
    header = ["routing", "final val loss", "Δ loss vs top-2", "true experts/token (run)", "true experts/token (last 25%)",
              "expert FLOPs vs top-2 (run)", "expert FLOPs vs top-2 (last 25%)", "tokens/s"]
    rows = []
    for label, s in summary.items():
        r = vs_topk[label]
        rows.append([label, fmt_mean_sd(s["final_val_loss"]), fmt_mean_sd(r["val_loss_change"]),
                     fmt_mean_sd(s["true_experts_run"], 2), fmt_mean_sd(s["true_experts_last"], 2), f"{r['flops_change_pct_run']['mean']:+.1f}%",
                     f"{r['flops_change_pct_last']['mean']:+.1f}%", f"{s['tokens_per_s']['mean']:.0f}"])
    note = ("\nMean ± sample std over seeds; Δ loss and FLOPs changes are paired by seed. Expert FLOPs: forward FLOPs "
            "of the expert FFNs per token (2 layers), from the train metric `expert_flops`; true experts per token "
            "from `mean_true_experts_per_token` (mean over the MoE layers).\n")
    return markdown_table(header, rows) + "\n" + note


def figure(runs: Dict[str, List[RunCurves]], per_run: Dict[str, List[Dict[str, float]]]):
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    base = per_run["top-2"]
    for i, (label, rs) in enumerate(per_run.items()):
        color = f"C{i}"
        x = [100 * r["expert_flops_per_token_last"] / b["expert_flops_per_token_last"] for r, b in zip(rs, base)]
        y = [r["final_val_loss"] - b["final_val_loss"] for r, b in zip(rs, base)]
        axes[0].scatter(x, y, color=color, alpha=0.5, s=18)
        axes[0].scatter([sum(x) / len(x)], [sum(y) / len(y)], color=color, s=80, marker="D", label=label)
        for j, c in enumerate(runs[label]):
            steps = [t["step"] for t in c.train]
            axes[1].plot(steps, [t["mean_true_experts_per_token"] for t in c.train], color=color, alpha=0.8,
                         label=label if j == 0 else None)
    axes[0].set_xlabel("expert FLOPs per token, last 25% of training (% of top-2)")
    axes[0].set_ylabel("final validation loss - top-2's, same seed (nats)")
    axes[0].set_title("quality against expert FLOPs (dots: seeds, diamonds: means)")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("mean true experts per token")
    axes[1].set_title("routing load during training")
    axes[0].axhline(0.0, color="grey", lw=0.6, ls="--")
    for ax, where in zip(axes, ("best", "center right")):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc=where)
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = list(range(args.seeds))
    trained = seeds_to_train(seeds, args.train_seeds, args.report_only)
    cases = variants(args.nulls)
    dirs = {label: [args.runs / f"{label.replace(' ', '_').replace('=', '')}_seed{seed}" for seed in seeds]
            for label in cases}
    for seed in trained:
        for label, (config, extra) in cases.items():
            train(config, [f"seed={seed}", *extra, *step_overrides(args.steps)], dirs[label][seed], args.backend)
    runs = {label: [read_run(d) for d in paths] for label, paths in dirs.items()}
    per_run = {label: [run_metrics(c, tokens_per_step(d)) for c, d in zip(runs[label], dirs[label])] for label in cases}
    summary = {label: {key: stats([r[key] for r in rs]) for key in rs[0]} for label, rs in per_run.items()}
    vs_topk = relative(per_run)
    this_call = {"machine": machine(), "command": command_line(argv)}
    payload = {"claim": "AdaMoE: about -15% FLOPs at equal or better quality (Zeng et al. 2024, Mixtral fine-tune)",
               **this_call, "backend": args.backend, "seeds": seeds,
               "runs": call_history(args.out / f"{NAME}.json", seeds, trained, this_call),
               "configs": {"top-2": str(TOPK.relative_to(ROOT)), "adamoe": str(ADAMOE.relative_to(ROOT))},
               "null_experts": args.nulls, "summary": summary, "vs_top2": vs_topk, "per_run": per_run,
               "curves": {label: [{"val_steps": c.val_steps, "val_loss": c.val_loss} for c in cs]
                          for label, cs in runs.items()}}
    if args.report_only:
        payload.update(run_info(args.out / f"{NAME}.json"))
    text = table(summary, vs_topk)
    paths = write_results(NAME, payload, text, figure(runs, per_run), out_dir=args.out)
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
