"""Train an MoE language model from one YAML config on MindSpore or PyTorch.

    python scripts/train.py --config configs/quickstart.yaml [--backend torch|mindspore]
                            [--set section.key=value ...] [--resume RUN_DIR]

``--resume RUN_DIR`` continues from the newest readable checkpoint in RUN_DIR with the
config saved there (``--set`` and ``--backend`` still apply; ``--config`` is then not
needed, and refused when it differs from the saved one). A run that already reached
train.steps resumes to nothing and exits 0.
Multi-process runs: start this script with scripts/run_cpu.sh, run_cuda.sh or
run_ascend.sh (torchrun / msrun); the config's ``parallel`` section sets the expert-parallel
size and the collectives' timeout.
Exit codes: 0 done, 2 bad config or input, or a module missing (one line on stderr), 3
stopped: NaN/Inf steps, or a file of the run could not be written (one line on stderr), 4 a
multi-process run lost a rank (a collective failed or timed out) or its launcher (one line
naming this rank), 5 out of memory on a rank of a multi-process run, 1 any other error of
such a rank (its traceback, then one line with its type and message: ``launch.failures``),
130 stopped by Ctrl-C, SIGINT or SIGTERM (one line). A run directory has one writer: a
second job on it (fresh or --resume) is refused in one line naming the job that holds
RUN_DIR/run.lock (exit 2).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only on the terminal

from core.errors import ConfigError  # noqa: E402
from launch.launcher_watch import exit_if_launcher_gone, is_msrun_scheduler, watch_launcher  # noqa: E402
from launch.process_groups import close_process_groups  # noqa: E402
from training.config import config_to_dict, load_config  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML run config (configs/*.yaml)")
    parser.add_argument("--backend", choices=("torch", "mindspore"), help="overrides the config's backend")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-backend", action="store_true",
                        help="check the config (and the world $MOE_LAUNCH_WORLD a launcher is about to start), "
                             "print its backend and exit (used by the launch scripts)")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend={args.backend}")
    if args.resume is not None:
        from training.convert import run_config  # imports the checkpoint format's safetensors
        config = run_config(args.resume, overrides)
        if args.config is not None:
            _check_same(load_config(args.config, overrides + [f"run_dir={args.resume}"]), config, args)
        return config
    if args.config is None:
        raise ConfigError("--config: required (or --resume RUN_DIR)")
    return load_config(args.config, overrides)


def _check_same(given, saved, args: argparse.Namespace) -> None:
    """ConfigError naming the first setting where --config differs from the run's saved config."""
    a, b = config_to_dict(given), config_to_dict(saved)
    for section in a:
        pairs = a[section].items() if isinstance(a[section], dict) else [(None, a[section])]
        for key, value in pairs:
            other = b[section] if key is None else b[section].get(key)
            if value != other:
                name = section if key is None else f"{section}.{key}"
                raise ConfigError(f"--config {args.config}: {name}={value!r} differs from {other!r} in "
                                  f"{args.resume / 'config.yaml'}; --resume continues the saved config "
                                  f"(drop --config, or change a setting with --set)")


def main(argv=None) -> int:
    args = parse_args(argv)
    watch_launcher()  # under torchrun / msrun: exit when the launcher dies
    config = None
    try:
        config = resolve_config(args)
        if args.print_backend:
            check_launch(config)
            print(config.backend)
            return 0
        from training.trainer import Trainer, TrainingStopped
        trainer = Trainer(config, resume=args.resume is not None, progress=not args.no_progress)
        try:
            summary = trainer.run()
            close_process_groups(trainer.dist.run)
        finally:
            if trainer.run_lock is not None:
                trainer.run_lock.release()  # ended, not killed: no record left to take over
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # a Python without the setup (e.g. not .venv/bin/python)
        print(f"error: {sys.executable} has no module {error.name!r}: bash scripts/setup_env.sh installs "
              f"what the run needs into .venv; run .venv/bin/python scripts/train.py", file=sys.stderr)
        return 2
    except (TrainingStopped, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGINT, SIGTERM, or a launcher passing one on (docs/guide/distributed.md: Stopping a job)
        rank = "" if launched_rank() is None else f"rank {launched_rank()}: "
        print(f"error: {rank}stopped by {stop.args[0] if stop.args else 'SIGINT'}; every complete checkpoint is "
              f"kept: continue with --resume {config.run_dir if config is not None else 'RUN_DIR'}", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as error:
        if launched_rank() is None:
            raise
        exit_if_launcher_gone()  # a peer that lost the launcher ended first: say so, not "a collective failed"
        from launch.failures import OTHER, describe_failure
        code, line = describe_failure(error, launched_rank(), config.parallel.timeout_s)
        if code == OTHER:
            traceback.print_exc()
        print(line, file=sys.stderr)
        return code
    print(done_line(summary, config.run_dir))
    return 0


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def check_launch(config) -> None:
    """The checks a launch script can make before it starts any process: no other job holds
    the run directory (on node 0 only, $MOE_LAUNCH_NODE_RANK: another node may start after
    this job's rank 0 took the lock), and the world it is about to start ($MOE_LAUNCH_WORLD)
    fits the config."""
    if os.environ.get("MOE_LAUNCH_NODE_RANK", "0") == "0":
        from training.run_lock import check_run_dir_free
        check_run_dir_free(Path(config.run_dir))
    world = int(os.environ.get("MOE_LAUNCH_WORLD", "0"))
    if world:
        from core.layout import ParallelLayout
        from launch.process_groups import check_world
        check_world(config.backend, config.parallel.expert_parallel, config.parallel.world_size, world)
        ParallelLayout(world, 0, config.parallel.expert_parallel).batch_rows(config.train.batch_size)


def launched_rank():
    """This process's rank under torchrun or msrun, None outside a launcher."""
    value = os.environ.get("RANK", os.environ.get("RANK_ID"))
    return None if value is None else int(value)


def done_line(summary: dict, run_dir: str) -> str:
    """The closing line: steps, time, speed of this call (when it trained) and validation trend."""
    val = [v for v in summary["val_loss"] if v is not None]
    trend = f"; val_loss {val[0]:.4f} -> {val[-1]:.4f}" if val else ""
    speed = f", {summary['tokens_per_s']:.0f} tokens/s" if summary["tokens_per_s"] is not None else ""
    return (f"done: {summary['steps']} steps in {summary['elapsed_s']:.0f}s{speed}{trend}; "
            f"run directory {run_dir}")


if __name__ == "__main__":
    if not is_msrun_scheduler():  # (which spends its life in C++: the default action ends it)
        signal.signal(signal.SIGTERM, _stop)  # a launcher's or cluster scheduler's stop: one line, like Ctrl-C
    sys.exit(main())
