"""Run the device check's steps (steps.py) one after another in their own processes, within
one time budget, and write the verdicts: a table on the terminal and in device_check.md,
everything in device_check.json, every step's output in device_check.log (all in --out).
Exit 0 when every required step passed, 1 when one did not, 2 on bad arguments.

    python3 -m scripts.device_check.run --out DIR [--dry-run] [--budget-s 480] [--only a,b]

scripts/device_check.sh is the one command (it picks the python and installs carried wheels).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.device_check.steps import Step, steps  # noqa: E402
from scripts.reporting.tables import markdown_table  # noqa: E402

MIN_STEP_S = 20  # a step given less than this is not started
# the rehearsal runs in scripts/test.sh beside MindSpore's tests: one thread per step, one core
ONE_CORE = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}


def stream(process: subprocess.Popen, sinks: List[TextIO], lines: List[str]) -> None:
    """Copy the process's output to every sink as it comes, keeping the last lines."""
    for line in process.stdout:
        for sink in sinks:
            sink.write(line)
            sink.flush()
        lines.append(line.rstrip())
        del lines[:-20]


def run_step(step: Step, dry: bool, limit_s: float, work: Path, log: TextIO, env: Dict[str, str]) -> Dict[str, Any]:
    """One step in its own process group (killed whole at ``limit_s``); its verdict."""
    out = work / f"{step.name}{step.suffix}"
    argv = [part.replace("{out}", str(out)) for part in (step.dry if dry else step.device)]
    header = f"=== {step.name}: {' '.join(argv)} (limit {limit_s:.0f} s)\n"
    for sink in (sys.stdout, log):
        sink.write(header)
        sink.flush()
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines: List[str] = []
    reader = threading.Thread(target=stream, args=(process, [sys.stdout, log], lines), daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the step and what it started (the benchmark's workers)
        process.wait()
        code = None
    reader.join(timeout=10)
    seconds = round(time.perf_counter() - started, 1)
    if code is None:
        return {"status": "fail", "seconds": seconds, "summary": f"timed out after {limit_s:.0f} s", "details": None}
    if not out.is_file():
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        return {"status": "fail", "seconds": seconds, "summary": f"exit {code}, no result: {last[:200]}",
                "details": None}
    try:
        status, summary, details = step.judge(out, dry)
    except (ValueError, KeyError, TypeError, SyntaxError) as error:  # a result it cannot read (XML: SyntaxError)
        return {"status": "fail", "seconds": seconds, "summary": f"unreadable result {out.name}: {error}",
                "details": None}
    return {"status": status, "seconds": seconds, "summary": summary, "details": details}


def label(result: Dict[str, Any], required: bool) -> str:
    if result["status"] == "pass":
        return "pass"
    if result["status"] == "not run":
        return "not run"
    return "FAIL" if required else "failed (not required)"


def table(results: List[Dict[str, Any]]) -> str:
    rows = [[r["name"], r["title"], label(r, r["required"]), f"{r['seconds']:.0f}", r["summary"]] for r in results]
    return markdown_table(["step", "what", "result", "s", "summary"], rows, align="lllrl")


def passed(results: List[Dict[str, Any]]) -> bool:
    return all(r["status"] == "pass" for r in results if r["required"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for device_check.{json,md,log}")
    parser.add_argument("--dry-run", action="store_true", help="the CPU rehearsal: small sizes, device cpu")
    parser.add_argument("--budget-s", type=float, default=480.0, help="all steps together (default 480)")
    parser.add_argument("--only", help="comma list of steps to run (default: all)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the steps run with")
    args = parser.parse_args(argv)
    chosen = steps(args.python)
    names = [step.name for step in chosen]
    if args.only:
        unknown = [name for name in args.only.split(",") if name not in names]
        if unknown:
            parser.error(f"--only {unknown[0]!r}: steps are {', '.join(names)}")
        chosen = [step for step in chosen if step.name in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "MOE_TEST_BACKEND": "torch", **(ONE_CORE if args.dry_run else {})}
    started, deadline = time.time(), time.perf_counter() + args.budget_s
    results = []
    with tempfile.TemporaryDirectory(prefix="device_check_") as work, open(args.out / "device_check.log", "w") as log:
        for step in chosen:
            limit = min(step.dry_cap_s if args.dry_run else step.cap_s, deadline - time.perf_counter())
            if limit < MIN_STEP_S:
                result = {"status": "not run", "seconds": 0.0, "details": None,
                          "summary": f"budget spent ({max(limit, 0):.0f} s of {args.budget_s:.0f} left)"}
            else:
                result = run_step(step, args.dry_run, limit, Path(work), log, env)
            results.append({"name": step.name, "title": step.title, "required": step.required, **result})
        text = table(results)
        log.write(text + "\n")
    ok = passed(results)
    mode = "dry run (CPU)" if args.dry_run else "device"
    closing = (f"device check ({mode}): {'PASSED' if ok else 'FAILED'} in {time.time() - started:.0f} s "
               f"of a {args.budget_s:.0f} s budget")
    print(f"\n{text}\n{closing}")
    (args.out / "device_check.md").write_text(f"{text}\n\n{closing}\n")
    report = {"mode": mode, "ok": ok, "python": args.python, "budget_s": args.budget_s,
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
              "elapsed_s": round(time.time() - started, 1), "steps": results}
    (args.out / "device_check.json").write_text(json.dumps(report, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
