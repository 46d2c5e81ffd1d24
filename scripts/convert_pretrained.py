"""Pretrained checkpoints in HF format, converted with the library's own code:

    python scripts/convert_pretrained.py export RUN_DIR OUT            # a run's newest checkpoint -> HF
    python scripts/convert_pretrained.py upcycle SOURCE OUT --experts 8 --top-k 2 [--seed 0]

``export`` writes config.json + model.safetensors that transformers' ``from_pretrained``
loads (Llama for a dense run, Mixtral for a top-k MoE in every block, Qwen2-MoE for a top-k
MoE with a gated shared expert; other routers are refused by key). ``upcycle`` turns a
dense HF Llama (folder or .gguf) into an HF Mixtral whose experts copy the dense FFN (``training/upcycle.py``; logits equal the dense model's at
step 0). AdaMoE conversion (``training.upcycle.to_adamoe``) has no HF architecture to write:
use it in Python. Exit codes: 0 done, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from core.errors import ConfigError  # noqa: E402


def export_run(run_dir: Path, out: Path) -> Path:
    from training.checkpoint import checkpoint_dir, newest_loadable
    from training.config import transformer_config
    from training.convert import run_config
    from training.hf_checkpoint import save_hf_checkpoint
    run = run_config(run_dir)
    _, checkpoint = newest_loadable(checkpoint_dir(run_dir), lambda line: print(line, file=sys.stderr))
    vocab = checkpoint.model["model.embed_tokens.weight"].shape[0]
    return save_hf_checkpoint(transformer_config(run, vocab), checkpoint.model, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="a run directory's newest checkpoint -> HF Llama/Mixtral/Qwen2-MoE")
    export.add_argument("run_dir", type=Path)
    export.add_argument("out", type=Path)
    upcycle = commands.add_parser("upcycle", help="a dense HF Llama -> an HF Mixtral of FFN copies")
    upcycle.add_argument("source", type=Path, help="HF folder or .gguf file")
    upcycle.add_argument("out", type=Path)
    upcycle.add_argument("--experts", type=int, default=8)
    upcycle.add_argument("--top-k", type=int, default=2)
    upcycle.add_argument("--seed", type=int, default=0, help="router initialisation")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            path = export_run(args.run_dir, args.out)
        else:
            from training.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
            from training.upcycle import upcycle as upcycle_model
            config, params = load_hf_checkpoint(args.source)
            path = save_hf_checkpoint(*upcycle_model(config, params, args.experts, args.top_k, seed=args.seed), args.out)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path / 'config.json'} and {path / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
