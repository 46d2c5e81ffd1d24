"""From the ``data`` config section to batches: text -> tokenizer -> cached token streams -> windows.

    data = build_data(config.data, seed=config.seed, log=print)
    batches = data.train_batches(config.train.batch_size)   # tokens [B, S+1], domain_ids [B, S]
    tokens, domain_ids = next(batches)
    state = batches.state_dict()                            # goes into checkpoints
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from training.data.batches import Batch, BatchIterator, validation_batches
from training.data.corpora import CORPORA
from training.data.documents import Document, limit_chars, read_user_file
from training.data.token_cache import TokenStream, cached_stream, text_digest
from training.data.tokenizer import TextTokenizer, cached_bpe, gpt2
from training.data.windows import split_windows


@dataclass
class Source:
    """A corpus or user file: ``label`` is the corpus name or the file path as given."""

    label: str
    documents: List[Document]


@dataclass
class TokenData:
    """Every source's tokens in one stream, with the windows split into train and validation.
    ``domain_names[i]`` is the name of domain id i; ``summary`` has sizes and timings."""

    tokenizer: TextTokenizer
    domain_names: List[str]
    tokens: np.ndarray
    domains: np.ndarray
    train_starts: np.ndarray
    val_starts: np.ndarray
    seq_len: int
    seed: int
    dataset: str
    summary: Dict[str, object] = field(default_factory=dict)

    def train_batches(self, batch_size: int) -> BatchIterator:
        """Endless seeded training batches, resumable through state_dict()/load_state_dict()."""
        return BatchIterator(self.tokens, self.domains, self.train_starts, self.seq_len, batch_size,
                             self.seed, self.dataset)

    def val_batches(self, batch_size: int, num_batches: int) -> List[Batch]:
        """The same validation batches every call."""
        return validation_batches(self.tokens, self.domains, self.val_starts, self.seq_len, batch_size, num_batches)


def load_sources(corpora: List[str], files: List[str], max_chars: int) -> List[Source]:
    """Documents of each named corpus, then of each user file, cut to ``max_chars`` each."""
    sources = []
    for name in corpora:
        if name not in CORPORA:
            raise ConfigError(f"data.corpora: unknown corpus {name!r}; valid corpora: {', '.join(CORPORA)}")
        sources.append(Source(name, limit_chars(CORPORA[name](), max_chars)))
    for name in files:
        sources.append(Source(name, limit_chars(read_user_file(name), max_chars)))
    for source in sources:
        if not source.documents:
            raise ConfigError(f"data: {source.label} has no text")
    return sources


def _tokenizer(data, sources: List[Source], digests: List[str],
               log: Callable[[str], None]) -> Tuple[TextTokenizer, bool]:
    """(tokenizer, whether it came from a file rather than training now)."""
    if data.tokenizer == "gpt2":
        tokenizer = gpt2()
        log(f"data: GPT-2 tokenizer ({tokenizer.vocab_size} tokens)")
        return tokenizer, True
    key = hashlib.sha256(json.dumps([data.vocab_size, [[s.label, d] for s, d in zip(sources, digests)]])
                         .encode("utf-8")).hexdigest()[:16]
    path = Path(data.cache_dir) / "tokenizers" / f"bpe{data.vocab_size}-{key}.json"
    start = time.perf_counter()
    tokenizer, trained = cached_bpe((doc.text for s in sources for doc in s.documents), data.vocab_size, path, log)
    log(f"data: BPE tokenizer ({tokenizer.vocab_size} tokens) {'trained' if trained else 'loaded from cache'} "
        f"in {time.perf_counter() - start:.1f}s")
    return tokenizer, not trained


def build_data(data, seed: int, log: Optional[Callable[[str], None]] = None) -> TokenData:
    """Load, tokenise (cached under ``data.cache_dir``) and split the text named by a
    ``DataConfig``; ``log`` gets one line per stage."""
    log = log or (lambda line: None)
    start = time.perf_counter()
    sources = load_sources(data.corpora, data.files, data.max_chars_per_corpus)
    digests = [text_digest(s.documents) for s in sources]
    load_s = time.perf_counter() - start
    log(f"data: read {len(sources)} source(s), {sum(len(d.text) for s in sources for d in s.documents):,} "
        f"characters in {load_s:.1f}s")
    start = time.perf_counter()
    tokenizer, tokenizer_cached = _tokenizer(data, sources, digests, log)
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    streams: List[TokenStream] = []
    cached: List[str] = []
    for source, digest in zip(sources, digests):
        stream, hit = cached_stream(tokenizer, source.label, source.documents, digest, Path(data.cache_dir) / "tokens",
                                    log)
        streams.append(stream)
        cached += [source.label] if hit else []
        log(f"data: {source.label}: {len(stream.tokens):,} tokens{' (cached)' if hit else ''}")
    encode_s = time.perf_counter() - start
    domain_names: List[str] = []
    for stream in streams:
        domain_names += [n for n in stream.domain_names if n not in domain_names]
    domains = np.concatenate([np.array([domain_names.index(n) for n in s.domain_names], np.int32)[s.domains]
                              for s in streams])
    tokens = np.concatenate([s.tokens for s in streams])
    train, val = split_windows([len(s.tokens) for s in streams], [s.label for s in streams],
                               data.seq_len, data.val_fraction, seed)
    dataset = hashlib.sha256(json.dumps([tokenizer.name, digests, data.seq_len, data.val_fraction, seed])
                             .encode("utf-8")).hexdigest()[:16]
    summary = {"tokens": {s.label: int(len(s.tokens)) for s in streams},
               "train_windows": int(len(train)), "val_windows": int(len(val)),
               "tokenizer_cached": tokenizer_cached, "cached_sources": cached,
               "read_s": round(load_s, 3), "tokenizer_s": round(tokenizer_s, 3), "encode_s": round(encode_s, 3)}
    log(f"data: {len(train):,} training and {len(val):,} validation windows of {data.seq_len + 1} tokens; "
        f"domains: {', '.join(domain_names)}")
    return TokenData(tokenizer, domain_names, tokens, domains, train, val, data.seq_len, seed, dataset, summary)
