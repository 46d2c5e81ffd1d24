"""Sample text from a run directory's newest checkpoint or an HF checkpoint (folder or .gguf)
on either backend, with a KV cache.

    python scripts/generate.py SOURCE --backend torch --prompt "Once upon a time" \\
        --max-new-tokens 64 --temperature 0.8 --top-k 50 --top-p 0.95 --seed 0

Prints the text, then one line: new tokens, seconds, tokens/s and, for MoE models, the mean
number of true experts per generated token (AdaMoE's inference saving: below top_k when
tokens choose null experts). Routers that cannot decode (expert choice) are refused in one
line. Tokenizer: ``--tokenizer tokenizer.json``, else the checkpoint's own (HF folder:
tokenizer.json; GGUF: its embedded one via transformers; run directory: the run's).
Exit codes: 0 done, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from models.errors import ConfigError  # noqa: E402
from models.transformer import Transformer  # noqa: E402


class Tokens:
    """encode/decode over a ``tokenizers.Tokenizer`` or a transformers tokenizer."""

    def __init__(self, encode, decode, vocab_size: int, eos_id) -> None:
        self.encode, self.decode, self.vocab_size, self.eos_id = encode, decode, vocab_size, eos_id


def from_tokenizers(path: Path) -> Tokens:
    from tokenizers import Tokenizer
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:
        raise ConfigError(f"--tokenizer {path}: not a tokenizers JSON file ({str(error).splitlines()[0]})") from None
    return Tokens(lambda text: tokenizer.encode(text).ids, tokenizer.decode, tokenizer.get_vocab_size(),
                  tokenizer.token_to_id("<|endoftext|>"))


def load_source(source: Path, tokenizer_path):
    """(model config, params, Tokens or None) from a run directory, HF folder or .gguf file."""
    if (source / "config.yaml").is_file():
        from training.checkpoint import checkpoint_dir, newest_loadable
        from training.convert import run_config
        from training.data.pipeline import build_data
        from training.trainer import transformer_config
        run = run_config(source)
        _, checkpoint = newest_loadable(checkpoint_dir(source), lambda line: print(line, file=sys.stderr))
        tokens = None
        if tokenizer_path is None:
            text = build_data(run.data, run.seed).tokenizer
            tokens = Tokens(text.encode, text.decode, text.vocab_size, text.eos_id)
        vocab = tokens.vocab_size if tokens else from_tokenizers(tokenizer_path).vocab_size
        return transformer_config(run, vocab), checkpoint.model, tokens
    if not (source / "config.json").is_file() and source.suffix != ".gguf":
        raise ConfigError(f"{source}: not a run directory (config.yaml), an HF checkpoint folder (config.json) "
                          "or a .gguf file")
    from training.hf_checkpoint import load_hf_checkpoint
    config, params = load_hf_checkpoint(source)
    if tokenizer_path is None and source.suffix == ".gguf":
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        return config, params, Tokens(hf.encode, hf.decode, len(hf), hf.eos_token_id)
    if tokenizer_path is None and (source / "tokenizer.json").is_file():
        return config, params, from_tokenizers(source / "tokenizer.json")
    return config, params, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="run directory, HF checkpoint folder or .gguf file")
    parser.add_argument("--backend", default="torch", choices=("torch", "mindspore"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", default="", help="text (needs a tokenizer)")
    parser.add_argument("--prompt-ids", default="", help="comma-separated token ids instead of --prompt")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json to use instead of the checkpoint's")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0: no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        config, params, tokens = load_source(args.source, args.tokenizer)
        if args.tokenizer is not None:
            tokens = from_tokenizers(args.tokenizer)
        if tokens is not None and tokens.vocab_size > config.vocab_size:
            raise ConfigError(f"tokenizer has {tokens.vocab_size} tokens but the model's vocab_size is "
                              f"{config.vocab_size}: they do not belong together")
        if args.prompt_ids:
            prompt = [int(i) for i in args.prompt_ids.split(",")]
        elif tokens is None:
            raise ConfigError(f"{args.source}: no tokenizer found; pass --tokenizer or --prompt-ids")
        else:
            prompt = tokens.encode(args.prompt) or [tokens.eos_id]
        from backends.runtime import Runtime
        from training.generation import Decoder
        model = Transformer(config)
        runtime = Runtime(args.backend, args.device, graph_mode=False)
        decoder = Decoder(model, runtime.module(model, params))
        result = decoder.generate([prompt], args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                                  args.seed, tokens.eos_id if tokens else None)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    new = result.tokens[0, len(prompt):]
    print(tokens.decode(result.tokens[0].tolist()) if tokens else ",".join(str(int(t)) for t in result.tokens[0]))
    load = result.mean_true_experts_per_token
    print(f"{result.new_tokens} new tokens in {result.seconds:.2f}s: {result.tokens_per_s:.1f} tokens/s on "
          f"{args.backend}" + ("" if load is None else f"; mean true experts per generated token {load:.2f}")
          + f" (seed {args.seed}, last ids {new[-5:].tolist()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
