"""The steps of the device check, in the order they run, each with its command on the GPU
and in the CPU rehearsal (``--dry-run``: the same programs, small sizes, device cpu), its
share of the budget, and how its output becomes a verdict (framework-free).

The rehearsal runs in scripts/test.sh, so it is sized to cost seconds: the tests step runs
the tests named cuda (on the CPU the wrapper's stand-in tests pass and the GPU cases skip)
and one CPU case of test_torch_devices (both files' CPU cases run in the torch backend pass
of scripts/test.sh anyway); the benchmarks time one step at d 32 (the layer benchmark one
point); the quickstart stops after its first step in float32 (its step-0 validation is
compared with the reference: same data, same initial weights); the compile uses aot_eager.

Every step writes a result file (``{out}``: JSON, or JUnit XML for the tests); ``judge``
turns it into ``(status, summary, details)`` with status ``pass`` or ``fail``.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

Verdict = Tuple[str, str, Any]
# the layer benchmark's sizes on the GPU (numpy makes the 64-expert weights in seconds)
LAYER = {"d_model": 1024, "ffn": 704}
DEVICE_TESTS = ["tests/backend/test_grouped_matmul_kernels.py", "tests/backend/test_torch_devices.py"]
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--junitxml", "{out}"] + DEVICE_TESTS
TINY = ["--d-model", "32", "--repeats", "1"]  # the rehearsal's benchmark sizes (with --tokens 64, ffn 32)


@dataclass(frozen=True)
class Step:
    """``device`` / ``dry``: the command's arguments after the python executable, with
    ``{out}`` for the result file; ``cap_s``: its time limit on the GPU (the rehearsal's
    ``dry_cap_s``); a step that is not ``required`` is reported, and its failure does not
    fail the check."""

    name: str
    title: str
    device: List[str]
    dry: List[str]
    judge: Callable[[Path, bool], Verdict]
    cap_s: int
    dry_cap_s: int
    required: bool = True
    suffix: str = ".json"


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def judge_own(path: Path, dry: bool) -> Verdict:
    """A program of this package that judged itself (``status``, ``summary``)."""
    result = read_json(path)
    return result["status"], result["summary"], result


def judge_tests(path: Path, dry: bool) -> Verdict:
    """pytest's JUnit XML: no failure or error; on the GPU no skip either (every selected
    test is a CUDA test or its CPU twin)."""
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    summary = f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    bad = counts["failures"] or counts["errors"] or (not dry and counts["skipped"]) or not counts["tests"]
    if failed:
        summary += f" ({', '.join(failed[:3])})"
    elif bad and counts["skipped"]:
        summary += " (on the GPU every selected test must run)"
    return ("fail" if bad else "pass"), summary, {**counts, "failed": failed}


def judge_layer(path: Path, dry: bool) -> Verdict:
    """bench_layer's JSON: ours and the dense FFN timed at every point; the peers' rows are
    reported (a peer that fails is its own result, not ours)."""
    run = read_json(path)
    parts, problems, points = [], [], []
    for point in run["points"]:
        s = point["settings"]
        rows = {row["name"]: row for row in point["rows"]}
        ours = rows.get("ours torch dropless", {})
        dense = next((row for name, row in rows.items() if name.startswith("dense")), {})
        hf = rows.get("hf-mixtral grouped_mm", {})
        where = f"{s['tokens'] // 1024}k tok/{s['num_experts']}E" if s["tokens"] >= 1024 else \
            f"{s['tokens']} tok/{s['num_experts']}E"
        if "median_ms" not in ours or "median_ms" not in dense:
            problems.append(f"{where}: {ours.get('error') or dense.get('error') or 'not timed'}")
            continue
        hf_text = (f", HF grouped_mm takes {hf['median_ms'] / ours['median_ms']:.2f}x ours" if "median_ms" in hf
                   else f", HF grouped_mm: {hf.get('error', 'not run')[:80]}")
        parts.append(f"{where}: ours {ours['median_ms']:.2f} ms = {ours['vs_dense']:.2f}x dense{hf_text}")
        points.append({"tokens": s["tokens"], "experts": s["num_experts"], "ours_ms": ours["median_ms"],
                       "dense_ms": dense["median_ms"], "ours_x_dense": ours["vs_dense"],
                       "hf_grouped_mm_ms": hf.get("median_ms"), "hf_rel_diff": hf.get("rel_diff"),
                       "hf_error": hf.get("error")})
    return ("fail" if problems else "pass"), "; ".join(problems or parts), {"points": points, "run": run}


def judge_gemm(path: Path, dry: bool) -> Verdict:
    """gpu_grouped_gemm's JSON: on the GPU F.grouped_matmul must have picked grouped_mm."""
    points = read_json(path)["points"]
    wrong = [p for p in points if not dry and p["kernel"] != "cuda"]
    parts = []
    for p in points:
        rows = {row["case"]: row for row in p["rows"]}
        parts.append(f"E={p['experts']} ({p['kernel']}): fwd+bwd {rows['grouped fwd+bwd']['tflops']:.3g} vs dense "
                     f"{rows['dense fwd+bwd']['tflops']:.3g} TFLOP/s ({p['grouped_over_dense_fwd_bwd']:.2f}x)")
    summary = "; ".join(parts)
    if wrong:
        summary = f"kernel {wrong[0]['kernel']} instead of cuda (grouped_mm): {summary}"
    return ("fail" if wrong else "pass"), summary, points


def steps(python: str) -> List[Step]:
    """Every step; ``python`` is the interpreter the commands run with."""
    py = [python]
    return [
        Step("environment", "torch, numpy, GPU and grouped_mm",
             py + ["-m", "scripts.device_check.environment", "--device", "cuda", "--json", "{out}"],
             py + ["-m", "scripts.device_check.environment", "--device", "cpu", "--json", "{out}"],
             judge_own, 60, 60),
        Step("tests", "grouped-matmul parity and device tests (pytest)",
             py + PYTEST + ["-k", "cuda or test_torch_devices"],
             py + PYTEST + ["-k", "cuda or test_moe_layer_in_bfloat16"],
             judge_tests, 150, 60, suffix=".xml"),
        Step("collectives", "NCCL: our all-reduce, all-gather, all-to-all",
             py + ["-m", "scripts.device_check.collectives", "--device", "cuda", "--json", "{out}"],
             py + ["-m", "scripts.device_check.collectives", "--device", "cpu", "--json", "{out}"],
             judge_own, 60, 60),
        Step("grouped_gemm", "grouped GEMM vs one dense bf16 GEMM",
             py + ["-m", "scripts.bench.gpu_grouped_gemm", "--experts", "8,64", "--json", "{out}"],
             py + ["-m", "scripts.bench.gpu_grouped_gemm", "--device", "cpu", "--tokens", "64", "--ffn", "32",
                   "--experts", "8,64", "--json", "{out}"] + TINY,
             judge_gemm, 90, 60),
        Step("layer_bench", "MoE layer bf16: ours vs dense FFN vs HF grouped_mm",
             py + ["scripts/bench_layer.py", "--device", "cuda", "--dtype", "bfloat16", "--backends", "torch",
                   "--dispatch", "dropless", "--peers", "hf-grouped_mm", "--peers-every-point",
                   "--tokens", "4096,16384", "--experts", "8,64", "--d-model", str(LAYER["d_model"]),
                   "--ffn-hidden", str(LAYER["ffn"]), "--warmup", "3", "--repeats", "10", "--json", "{out}"],
             py + ["scripts/bench_layer.py", "--device", "cpu", "--dtype", "bfloat16", "--backends", "torch",
                   "--dispatch", "dropless", "--peers", "hf-grouped_mm", "--peers-every-point", "--tokens", "64",
                   "--experts", "8", "--ffn-hidden", "32", "--warmup", "1", "--json", "{out}"] + TINY,
             judge_layer, 150, 90),
        Step("quickstart", "200-step quickstart, bf16 + fp32 masters, vs CPU fp32 curve",
             py + ["-m", "scripts.device_check.quickstart", "--device", "cuda", "--dtype", "bfloat16",
                   "--json", "{out}"],
             py + ["-m", "scripts.device_check.quickstart", "--device", "cpu", "--dtype", "float32", "--until", "1",
                   "--json", "{out}"],
             judge_own, 210, 90),
        Step("compile", "torch.compile of the layer (reported, not required)",
             py + ["-m", "scripts.device_check.compile_layer", "--device", "cuda", "--dtype", "bfloat16",
                   "--d-model", str(LAYER["d_model"]), "--ffn", str(LAYER["ffn"]), "--json", "{out}"],
             py + ["-m", "scripts.device_check.compile_layer", "--device", "cpu", "--dtype", "bfloat16", "--tokens",
                   "64", "--ffn", "32", "--backend", "aot_eager", "--json", "{out}"] + TINY,
             judge_own, 150, 60, required=False),
    ]
