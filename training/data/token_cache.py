"""Tokenised sources cached as numpy arrays, keyed by tokenizer and text digest."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import numpy as np

from training.data.documents import Document
from training.data.tokenizer import TextTokenizer


@dataclass
class TokenStream:
    """One source as a token stream: ``tokens`` [N] and ``domains`` [N] (index into
    ``domain_names``, the domain of the document each token belongs to)."""

    label: str
    tokens: np.ndarray
    domains: np.ndarray
    domain_names: List[str]


def text_digest(documents: Sequence[Document]) -> str:
    """sha256 over the documents' domains and texts (the cache key of what they tokenise to)."""
    h = hashlib.sha256()
    for doc in documents:
        h.update(doc.domain.encode("utf-8") + b"\0" + doc.text.encode("utf-8") + b"\0")
    return h.hexdigest()


def _tokenise(tokenizer: TextTokenizer, label: str, documents: Sequence[Document]) -> TokenStream:
    names: List[str] = []
    for doc in documents:
        if doc.domain not in names:
            names.append(doc.domain)
    pieces = tokenizer.encode_documents([doc.text for doc in documents])
    token_dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    tokens = np.concatenate(pieces).astype(token_dtype) if pieces else np.zeros(0, token_dtype)
    domains = np.concatenate([np.full(len(p), names.index(doc.domain), np.uint16)
                              for p, doc in zip(pieces, documents)]) if pieces else np.zeros(0, np.uint16)
    return TokenStream(label, tokens, domains, names)


def _load(path: Path, label: str, vocab_size: int) -> TokenStream:
    """The stream saved at ``path``; ValueError when it does not hold one that fits."""
    with np.load(path, allow_pickle=False) as saved:
        stream = TokenStream(label, saved["tokens"], saved["domains"], [str(n) for n in saved["domain_names"]])
    tokens, domains = stream.tokens, stream.domains
    if tokens.ndim != 1 or tokens.shape != domains.shape or not len(tokens) or not stream.domain_names:
        raise ValueError(f"tokens {tokens.shape} and domains {domains.shape} do not match")
    if tokens.max() >= vocab_size or domains.max() >= len(stream.domain_names):
        raise ValueError(f"ids up to {tokens.max()} for {vocab_size} tokens, domains up to {domains.max()} "
                         f"for {len(stream.domain_names)} names")
    return stream


def cached_stream(tokenizer: TextTokenizer, label: str, documents: Sequence[Document], digest: str,
                  folder: Path, log: Callable[[str], None] = lambda line: None) -> Tuple[TokenStream, bool]:
    """The source's stream from ``folder`` if cached, else tokenised now and saved there
    (atomically); a damaged cache file is reported through ``log`` and replaced. Returns
    (stream, whether it came from the cache)."""
    folder = Path(folder) / tokenizer.name
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)[-60:]}-{digest[:16]}.npz"
    if path.is_file():
        try:
            return _load(path, label, tokenizer.vocab_size), True
        except Exception as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            log(f"data: token cache {path} is damaged ({reason}): tokenising {label} again")
    stream = _tokenise(tokenizer, label, documents)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, tokens=stream.tokens, domains=stream.domains,
                     domain_names=np.array(stream.domain_names, dtype=str))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return stream, False
