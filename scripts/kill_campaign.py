"""Kill scripts/train.py with SIGKILL at random moments and check that nothing is lost.

    python scripts/kill_campaign.py --backend torch --kills 20 [--json out.json]

A small MoE LM (training/tiny_run.py) first trains uninterrupted: the reference.
Each trial then starts the same run in a fresh directory and kills it once: alternately at a
random moment of its training (uniform over the reference's training time) and the moment a
temporary file of a randomly chosen checkpoint appears (mid-write). After the kill, every checkpoint file the
run directory lists must load, and ``train.py --resume`` (or a fresh start when no
checkpoint was written yet) must finish the run; its final weights must equal the
reference's: bitwise on torch, within ``--rtol`` on MindSpore (its CPU kernels may round
the last bit differently between compiled graphs). Prints one line per trial and
``survived: K/N``; exit 0 when all survived, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from training.checkpoint import checkpoint_dir, latest_checkpoint, list_checkpoints, load_checkpoint  # noqa: E402
from training.tiny_run import tiny_run_config, write_corpus  # noqa: E402
from training.yaml_io import write_yaml_atomic  # noqa: E402

DEFAULT_RTOL = {"torch": 0.0, "mindspore": 1e-5}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--kills", type=int, default=20, help="trials, one SIGKILL each (default 20)")
    parser.add_argument("--steps", type=int, default=24, help="training steps of the run (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--rtol", type=float, help="weight tolerance (default: 0 on torch, 1e-5 on MindSpore)")
    parser.add_argument("--workdir", type=Path, help="where runs go (default: a new temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the trials and totals here")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.steps < 4:
        parser.error("--kills must be >= 1 and --steps >= 4")
    return args


class Campaign:
    """The runs of one campaign under ``workdir``: the config per run directory, the
    reference weights, and one trial per kill."""

    def __init__(self, backend: str, steps: int, workdir: Path, rtol: float) -> None:
        self.backend, self.steps, self.workdir, self.rtol = backend, steps, Path(workdir), rtol
        self.corpus = write_corpus(self.workdir / "corpus.txt", sentences=600)
        self.reference: Dict[str, np.ndarray] = {}
        self.train_seconds = 0.0

    def config(self, run_dir: Path) -> Path:
        raw = tiny_run_config(run_dir, self.corpus, self.backend,
                              train={"steps": self.steps, "warmup_steps": 2, "checkpoint_every": 2,
                                     "keep_checkpoints": 2})
        path = self.workdir / f"{run_dir.name}.yaml"
        write_yaml_atomic(raw, path)
        return path

    def start(self, run_dir: Path) -> subprocess.Popen:
        """train.py on ``run_dir``: resumed when it holds a checkpoint, else started afresh."""
        if latest_checkpoint(checkpoint_dir(run_dir)) is not None:
            args = ["--resume", str(run_dir)]
        else:
            args = ["--config", str(self.config(run_dir))]
        log = open(self.workdir / f"{run_dir.name}.log", "a")
        return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args, "--no-progress"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def run_reference(self) -> None:
        run_dir = self.workdir / "reference"
        process = self.start(run_dir)
        training = wait_for(lambda: (run_dir / "metrics.jsonl").is_file(), process)
        began = time.perf_counter()
        if process.wait() != 0 or not training:
            raise RuntimeError(f"the reference run failed: see {self.workdir / 'reference.log'}")
        self.train_seconds = time.perf_counter() - began
        self.reference = self.final_weights(run_dir)

    def final_weights(self, run_dir: Path) -> Dict[str, np.ndarray]:
        checkpoint = load_checkpoint(latest_checkpoint(checkpoint_dir(run_dir)))
        if checkpoint.step != self.steps:
            raise RuntimeError(f"{run_dir}: ended at step {checkpoint.step}, not {self.steps}")
        return checkpoint.model

    def trial(self, index: int, mode: str, rng: random.Random) -> Dict[str, object]:
        """Start, kill once (retrying a moment the run outlived), resume to the end, compare."""
        run_dir = self.workdir / f"trial_{index:02d}"
        for _ in range(5):
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that outlived its moment starts over
            process = self.start(run_dir)
            killed_at = self.kill(process, run_dir, mode, rng)
            if killed_at is not None:
                break
        else:
            return {"trial": index, "mode": mode, "killed": False, "survived": False, "note": "never caught running"}
        result: Dict[str, object] = {"trial": index, "mode": mode, "killed": True, **killed_at}
        try:
            for path in list_checkpoints(checkpoint_dir(run_dir)):
                load_checkpoint(path)  # no listed checkpoint may be half-written
            resumed = self.start(run_dir)
            if resumed.wait() != 0:
                raise RuntimeError(f"resume exited {resumed.returncode}: see {run_dir.name}.log")
            weights = self.final_weights(run_dir)
            worst = max(float(np.max(np.abs(weights[k].astype(np.float64) - v) / (np.abs(v) + 1e-12)))
                        for k, v in self.reference.items())
            same = all(np.array_equal(weights[k], v) for k, v in self.reference.items())
            result.update(max_rel_diff=worst, bitwise=same, survived=same if self.rtol == 0 else worst <= self.rtol)
        except Exception as error:
            result.update(survived=False, note=str(error).splitlines()[0])
        return result

    def kill(self, process: subprocess.Popen, run_dir: Path, mode: str,
             rng: random.Random) -> Optional[Dict[str, object]]:
        """SIGKILL ``process`` at the moment ``mode`` asks for; None when it ended first."""
        folder = checkpoint_dir(run_dir)
        if not wait_for(lambda: (run_dir / "metrics.jsonl").is_file(), process):
            return None
        if mode == "random":
            time.sleep(rng.uniform(0, self.train_seconds))
        else:  # the write of a random checkpoint: wait for the one before it, then for the temporary file
            before = 2 * rng.randrange(self.steps // 2)
            if before and not wait_for(lambda: newest_step(folder) >= before, process):
                return None
            if not wait_for(lambda: folder.is_dir() and any(n.startswith(".step_") for n in os.listdir(folder)),
                            process, pause=0.0):
                return None
        if process.poll() is not None:
            return None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        newest = latest_checkpoint(folder)
        return {"mid_write": any(n.startswith(".step_") for n in os.listdir(folder)) if folder.is_dir() else False,
                "newest_before_resume": newest.name if newest else None}


def newest_step(folder: Path) -> int:
    newest = latest_checkpoint(folder)
    return -1 if newest is None else int(newest.stem.split("_")[1])


def wait_for(condition, process: subprocess.Popen, pause: float = 0.005) -> bool:
    """Poll ``condition`` until it holds (True) or ``process`` ends (False)."""
    while not condition():
        if process.poll() is not None:
            return condition()
        time.sleep(pause)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    rtol = DEFAULT_RTOL[args.backend] if args.rtol is None else args.rtol
    if args.workdir is None:
        import tempfile
        args.workdir = Path(tempfile.mkdtemp(prefix="kill_campaign_"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(args.backend, args.steps, args.workdir, rtol)
    campaign.run_reference()
    print(f"reference: {args.steps} steps on {args.backend}, {campaign.train_seconds:.1f}s of training; "
          f"runs under {args.workdir}", flush=True)
    rng = random.Random(args.seed)
    trials: List[Dict[str, object]] = []
    for index in range(args.kills):
        trial = campaign.trial(index, ("random", "checkpoint_write")[index % 2], rng)
        trials.append(trial)
        print(f"trial {index}: {trial['mode']}, mid-write {trial.get('mid_write')}, newest kept "
              f"{trial.get('newest_before_resume')}, max rel diff {trial.get('max_rel_diff', float('nan')):.1e}: "
              f"{'survived' if trial['survived'] else 'LOST ' + str(trial.get('note', ''))}", flush=True)
    survived = sum(bool(t["survived"]) for t in trials)
    print(f"survived: {survived}/{len(trials)} ({args.backend}, tolerance {rtol:g}, "
          f"{sum(bool(t.get('mid_write')) for t in trials)} killed mid-write, "
          f"{sum(not t['killed'] for t in trials)} never caught running)")
    if args.json:
        args.json.write_text(json.dumps({"backend": args.backend, "rtol": rtol, "steps": args.steps,
                                         "survived": survived, "total": len(trials), "trials": trials}, indent=1))
    return 0 if survived == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
