"""Sample text from a run directory's newest checkpoint or an HF checkpoint (folder or .gguf)
on either backend, with a KV cache.

    python scripts/generate.py SOURCE --backend torch --prompt "Once upon a time" \\
        --max-new-tokens 64 --temperature 0.8 --top-k 50 --top-p 0.95 --seed 0

Repeat ``--prompt`` (or ``--prompt-ids``) to sample a batch of prompts of any lengths.
Prints each text (a blank line between), then one line: new tokens, seconds, tokens/s (the
prefill and the time per decode step apart) and, for MoE models, the mean number of true experts per generated token (AdaMoE's inference
saving: below top_k when tokens choose null experts). Routers that cannot decode (expert
choice) are refused in one line. Tokenizer: ``--tokenizer tokenizer.json``, else the
checkpoint's own (HF folder: tokenizer.json; GGUF: its embedded one via transformers; run
directory: the run's). A tokenizer that does not belong to the model is refused in one line:
more tokens than the model's vocab_size, or (HF folder) a bos/eos/pad token whose id differs
from config.json's ``bos_token_id``/``eos_token_id``/``pad_token_id`` (the tokenizer's
special tokens are read from tokenizer_config.json beside its tokenizer.json).
Exit codes: 0 done, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from core.errors import ConfigError  # noqa: E402
from models.transformer import Transformer  # noqa: E402

SPECIAL = ("bos", "eos", "pad")


class Tokens:
    """encode/decode over a ``tokenizers.Tokenizer`` or a transformers tokenizer; ``special``:
    the ids of its bos/eos/pad tokens, where it names them ({"eos": (token, id), ...})."""

    def __init__(self, encode, decode, vocab_size: int, special: dict) -> None:
        self.encode, self.decode, self.vocab_size, self.special = encode, decode, vocab_size, special
        self.eos_id = special["eos"][1] if "eos" in special else None


def special_tokens(path: Path, token_to_id) -> dict:
    """The bos/eos/pad tokens that ``tokenizer_config.json`` beside ``path`` names, with their ids."""
    config_path = path.parent / "tokenizer_config.json"
    named = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    special = {}
    for kind in SPECIAL:
        token = named.get(kind + "_token")
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and token_to_id(token) is not None:
            special[kind] = (token, token_to_id(token))
    if "eos" not in special and token_to_id("<|endoftext|>") is not None:
        special["eos"] = ("<|endoftext|>", token_to_id("<|endoftext|>"))
    return special


def from_tokenizers(path: Path) -> Tokens:
    from tokenizers import Tokenizer
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:
        raise ConfigError(f"--tokenizer {path}: not a tokenizers JSON file ({str(error).splitlines()[0]})") from None
    return Tokens(lambda text: tokenizer.encode(text).ids, tokenizer.decode, tokenizer.get_vocab_size(),
                  special_tokens(path, tokenizer.token_to_id))


def check_tokenizer(tokens: Tokens, vocab_size: int, source: Path) -> None:
    """The tokenizer against the model: its size, and (HF folder) config.json's special token ids."""
    if tokens.vocab_size > vocab_size:
        raise ConfigError(f"tokenizer has {tokens.vocab_size} tokens but the model's vocab_size is "
                          f"{vocab_size}: they do not belong together")
    hf = json.loads((source / "config.json").read_text(encoding="utf-8")) if (source / "config.json").is_file() else {}
    for kind, (token, token_id) in tokens.special.items():
        expected = hf.get(kind + "_token_id")
        if isinstance(expected, int) and expected != token_id or isinstance(expected, list) and token_id not in expected:
            raise ConfigError(f"tokenizer's {kind} token {token!r} has id {token_id} but {source / 'config.json'} "
                              f"says {kind}_token_id={expected}: they do not belong together")


def prompt_ids(text: str) -> list:
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise ConfigError(f"--prompt-ids {text!r}: expected comma-separated integers") from None


def load_source(source: Path, tokenizer_path, drop_mtp: bool = False):
    """(model config, params, Tokens or None) from a run directory, HF folder or .gguf file
    (``drop_mtp``: ``training.hf_checkpoint.load_hf_checkpoint``'s)."""
    if (source / "config.yaml").is_file():
        from training.checkpoint import checkpoint_dir, newest_loadable
        from training.config import transformer_config
        from training.convert import run_config
        from training.data.pipeline import build_data
        run = run_config(source)
        _, checkpoint = newest_loadable(checkpoint_dir(source), lambda line: print(line, file=sys.stderr))
        tokens = None
        if tokenizer_path is None:
            text = build_data(run.data, run.seed).tokenizer
            tokens = Tokens(text.encode, text.decode, text.vocab_size,
                            {} if text.eos_id is None else {"eos": ("eos", text.eos_id)})
        vocab = tokens.vocab_size if tokens else from_tokenizers(tokenizer_path).vocab_size
        return transformer_config(run, vocab), checkpoint.model, tokens
    if not (source / "config.json").is_file() and source.suffix != ".gguf":
        raise ConfigError(f"{source}: not a run directory (config.yaml), an HF checkpoint folder (config.json) "
                          "or a .gguf file")
    from training.hf_checkpoint import load_hf_checkpoint
    config, params = load_hf_checkpoint(source, drop_mtp)
    if tokenizer_path is None and source.suffix == ".gguf":
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        special = {kind: (getattr(hf, kind + "_token"), getattr(hf, kind + "_token_id")) for kind in SPECIAL
                   if getattr(hf, kind + "_token_id") is not None}
        return config, params, Tokens(hf.encode, hf.decode, len(hf), special)
    if tokenizer_path is None and (source / "tokenizer.json").is_file():
        return config, params, from_tokenizers(source / "tokenizer.json")
    return config, params, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="run directory, HF checkpoint folder or .gguf file")
    parser.add_argument("--backend", default="torch", choices=("torch", "mindspore"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", action="append", default=[], help="text (needs a tokenizer); repeat for a batch")
    parser.add_argument("--prompt-ids", action="append", default=[],
                        help="comma-separated token ids instead of --prompt; repeat for a batch")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json to use instead of the checkpoint's")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0: no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--execution", default="auto", choices=("auto", "compiled", "eager"),
                        help="the one-token decode step: auto compiles it on MindSpore (once per batch size and "
                             "cache length: seconds to a minute, see docs/guide/pretrained.md) and runs it eagerly on torch")
    parser.add_argument("--drop-mtp", action="store_true",
                        help="leave out an HF checkpoint's multi-token-prediction layer (GLM-4.5, DeepSeek-V3)")
    args = parser.parse_args(argv)
    try:
        config, params, tokens = load_source(args.source, args.tokenizer, args.drop_mtp)
        if args.tokenizer is not None:
            tokens = from_tokenizers(args.tokenizer)
        if tokens is not None:
            check_tokenizer(tokens, config.vocab_size, args.source)
        if args.prompt_ids:
            prompts = [prompt_ids(ids) for ids in args.prompt_ids]
        elif tokens is None:
            raise ConfigError(f"{args.source}: no tokenizer found; pass --tokenizer or --prompt-ids")
        else:
            prompts = [tokens.encode(text) or [tokens.eos_id] for text in args.prompt or [""]]
        from backends.runtime import Runtime
        from training.generation import Decoder
        model = Transformer(config)
        runtime = Runtime(args.backend, args.device, graph_mode=False)
        decoder = Decoder(model, runtime.module(model, params), args.execution)
        result = decoder.generate(prompts, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                                  args.seed, tokens.eos_id if tokens else None)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in result.rows:
        print(tokens.decode(row.tolist()) if tokens else ",".join(str(int(t)) for t in row))
        if len(result.rows) > 1:
            print()
    load = result.mean_true_experts_per_token
    print(f"{result.new_tokens} new tokens in {result.seconds:.2f}s: {result.tokens_per_s:.1f} tokens/s on "
          f"{args.backend} (prefill {1e3 * result.prefill_seconds:.0f} ms, then {result.ms_per_step:.1f} ms per step)" + ("" if load is None else f"; mean true experts per generated token {load:.2f}")
          + f" (seed {args.seed}, {len(result.rows)} prompt{'s' if len(result.rows) > 1 else ''})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
