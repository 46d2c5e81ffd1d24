"""Small real-text data settings for fast data-pipeline tests (a few thousand characters per source)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from training.config import DataConfig

CODE_RECORDS = ["def add(a, b):\n    return a + b\n", "for i in range(3):\n    print(i)\n",
                "while True:\n    break\n"]
NOTE_RECORDS = ["Remember to buy bread and milk.", "Meeting moved to Thursday at noon."]
REPEAT = 20  # each record is its text repeated, ~3000 characters in all


def write_user_jsonl(folder: Path) -> Path:
    """notes.jsonl: code records tagged ``domain: code`` interleaved with untagged notes
    (which take the file stem, ``notes``, as their domain)."""
    path = Path(folder) / "notes.jsonl"
    rows: List[dict] = []
    for i, code in enumerate(CODE_RECORDS):
        rows.append({"text": code * REPEAT, "domain": "code"})
        if i < len(NOTE_RECORDS):
            rows.append({"text": NOTE_RECORDS[i] * REPEAT})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def small_data(cache_dir: Path, **overrides) -> DataConfig:
    """Shakespeare and the Bible, 6000 characters each, BPE 320, windows of 33 tokens."""
    settings = dict(corpora=["shakespeare", "bible"], files=[], tokenizer="bpe", vocab_size=320, seq_len=32,
                    val_fraction=0.1, cache_dir=str(cache_dir), max_chars_per_corpus=6000)
    return DataConfig(**{**settings, **overrides})
